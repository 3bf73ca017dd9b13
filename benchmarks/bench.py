r"""Training / eval throughput of the project's own ResNet steps, optionally against PyTorch.

  python -m benchmarks.bench --model=resnet18 --stem=cifar --image=32 --batch=128 --vs-torch
  python -m benchmarks.bench --model=resnet18 --stem=imagenet --image=64 --batch=64 --vs-torch
  python -m benchmarks.bench --model=resnet18 --stem=cifar --image=32 --batch=32 --width=16 \
      --population=1,2,4,8

Times the compiled `DataParallel` train and eval steps (training/parallel.py + steps.py, one
device) on a fixed random batch and prints, per mode: img/s (median of the timed steps),
compile time (lower + compile), peak memory (process max RSS on CPU, device peak bytes
on an accelerator), model FLOPs per step from XLA's cost analysis (of the step with
model.conv=xla: it does not count the oneDNN custom calls) and the achieved FLOP/s.
`--vs-torch` builds the same network in plain PyTorch (bench_torch.py) in this process and
alternates JAX and torch timed steps, so machine load hits both alike; it prints the ratio.
With it, torch.compile(model) (inductor) is a third contender (torch_compile_train/_eval, its
compile time, JAX/torch.compile ratios; `--notorch_compile` leaves it out; without a C++ compiler
or when inductor fails, the reason is printed and it is skipped). `--mfu` adds model FLOP
utilisation against the device's peak (benchmarks/mfu.py; "unknown peak" on other devices).
`--population=K[,K...]` times `training/population.py` (K models vmapped over seeds) and
prints the cost per model relative to K=1.
"""
import functools
import re
import resource
import statistics
import sys
import time
from typing import Callable

import os

from jax_resnets import backend

# Read from argv before JAX starts: `--backend` decides the process settings (the CPU backend's XLA
# flags), `--mode=eval` times the flags an eval-only process (jax_resnets.evaluate) gets, and glibc
# malloc tuning (opt-in for training runs: JAX_RESNETS_MALLOC_TUNING=1) is on here unless
# `--nomalloc_tuning` (for both contenders: they share the process).
os.environ["JAX_RESNETS_MALLOC_TUNING"] = "0" if "--nomalloc_tuning" in sys.argv else "1"
_BACKEND_ARG = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--backend=")), "auto")
backend.configure_process(_BACKEND_ARG, eval_only="--mode=eval" in sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

from benchmarks import mfu
from jax_resnets.cpu.xla_flags import allocator
from jax_resnets.models import registry
from jax_resnets.studies.resnet34.timing import random_variables
from jax_resnets.training import parallel
from jax_resnets.training.state import TrainState

# Own FlagValues: jax_resnets.studies.resnet34.timing (imported for random_variables) defines --batch etc. globally.
FLAGS = flags.FlagValues()
_MODEL = flags.DEFINE_string("model", "resnet18", "resnet18|34|50|101|152.", flag_values=FLAGS)
_STEM = flags.DEFINE_enum("stem", "cifar", ["imagenet", "cifar"], "ResNet stem.", flag_values=FLAGS)
_IMAGE = flags.DEFINE_integer("image", 32, "Square input size.", flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size (per model).", flag_values=FLAGS)
_WIDTH = flags.DEFINE_integer("width", 64, "Channels of layer1.", flag_values=FLAGS)
_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes of the fc head.", flag_values=FLAGS)
_MODE = flags.DEFINE_enum("mode", "both", ["train", "eval", "both"], "Which steps to time.", flag_values=FLAGS)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params float32).", flag_values=FLAGS)
_BACKEND = flags.DEFINE_enum("backend", "auto", list(backend.NAMES), "config.backend of the JAX contender "
                             "(read from argv before JAX starts).", flag_values=FLAGS)
_VS_TORCH = flags.DEFINE_bool("vs_torch", False, "Also time PyTorch eager, interleaved; print the ratio.", flag_values=FLAGS)
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "With --vs_torch, torch.compile(model) (inductor) is a "
                                   "contender too; where it cannot run, the reason is printed and it is skipped.",
                                   flag_values=FLAGS)
_MFU = flags.DEFINE_bool("mfu", False, "Print model FLOP utilisation: XLA cost-analysis FLOPs / step time / the "
                         "device's peak (PEAK_TFLOPS by device_kind; 'unknown peak' elsewhere).", flag_values=FLAGS)
_CHANNELS_LAST = flags.DEFINE_bool("torch_channels_last", False, "torch in channels_last memory format.", flag_values=FLAGS)
_POPULATION = flags.DEFINE_list("population", [], "K values: time population.py's vmapped step instead.", flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.", flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (per contender).", flag_values=FLAGS)
flags.DEFINE_bool("malloc_tuning", True, "glibc malloc keeps freed memory (xla_flags.tune_malloc; read "
                  "from argv before flags are parsed). Process-wide: JAX and torch alike.", flag_values=FLAGS)
_REWARM = flags.DEFINE_integer("rewarm", 1, "Untimed steps a contender runs at its turn in each round before "
                               "its timed step: on this VM the first step after any pause is ~25% slower "
                               "(docs/performance.md, benchmark method), so steady-state speed is timed.", flag_values=FLAGS)


def model_config() -> ml_collections.ConfigDict:
  from jax_resnets import config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config().model
  cfg.update(name="resnet", depth=int(_MODEL.value.removeprefix("resnet")), stem=_STEM.value,
             width=_WIDTH.value, dtype=_DTYPE.value)
  return cfg


def random_batch(batch: int, image: int, num_classes: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(batch, image, image, 3)).astype(np.float32),
          "label": rng.integers(0, num_classes, batch).astype(np.int32),
          "mask": np.ones(batch, np.float32)}


def train_state(model, image: int, tx) -> TrainState:
  """He-normal random variables from eval_shape (no compiled init: cheap for big models)."""
  init = functools.partial(model.init, train=False)
  abstract = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, image, image, 3)))
  variables = jax.device_put(random_variables(abstract))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
                    opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(0)), apply_fn=model.apply,
                    tx=tx)


def compile_fn(jitted, *args) -> tuple[Callable, float, float]:
  """(compiled, seconds to lower + compile, FLOPs per call from XLA's cost analysis)."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float((cost or {}).get("flops", float("nan")))


def _compiled_setup(model):
  """(DataParallel with compiled steps on one device, [state], batch) for `model`."""
  dp = parallel.DataParallel("shard_map", jax.devices()[:1]).compile_steps()
  state = [dp.replicate(train_state(model, _IMAGE.value, optax.sgd(0.01, momentum=0.9)))]
  return dp, state, dp.shard(random_batch(_BATCH.value, _IMAGE.value, _CLASSES.value))


def reference_flops(cfg: ml_collections.ConfigDict, modes: list[str]) -> dict[str, float]:
  """FLOPs per step from XLA's cost analysis of the same steps on the xla backend: the oneDNN
  convs (jax_resnets/cpu/onednn.py) are custom calls, which the cost analysis does not count."""
  model = registry.build_model(cfg, _CLASSES.value, backend="xla")
  dp, state, batch = _compiled_setup(model)
  return {m: compile_fn(getattr(dp, f"{m}_step"), state[0], batch)[2] for m in modes}


def jax_contenders(model, modes: list[str], flops: dict[str, float]) -> dict:
  """{'jax_train': (step, compile_s, flops), 'jax_eval': ...}: zero-arg callables, state carried."""
  dp, state, batch = _compiled_setup(model)
  out = {}
  if "eval" in modes:  # before train: the train step donates (invalidates) the state it is given
    evaluate, seconds, _ = compile_fn(dp.eval_step, state[0], batch)
    out["jax_eval"] = (lambda: jax.block_until_ready(evaluate(state[0], batch)), seconds, flops["eval"])
  if "train" in modes:
    train, seconds, _ = compile_fn(dp.train_step, state[0], batch)

    def train_step():
      state[0], metrics = train(state[0], batch)
      return jax.block_until_ready(metrics)
    out["jax_train"] = (train_step, seconds, flops["train"])
  return out


def torch_contenders(modes: list[str], compiled: bool = False) -> dict:
  """{'torch_train': ...} (eager) or {'torch_compile_train': ...} (torch.compile, compiled on first call)."""
  from benchmarks import bench_torch  # pylint: disable=g-import-not-at-top
  train, evaluate = bench_torch.steps(int(_MODEL.value.removeprefix("resnet")), _STEM.value, _WIDTH.value,
                                      _CLASSES.value, _BATCH.value, _IMAGE.value, _CHANNELS_LAST.value,
                                      _DTYPE.value, compile_model=compiled)
  prefix = "torch_compile" if compiled else "torch"
  fns = {f"{prefix}_train": train, f"{prefix}_eval": evaluate}
  return {k: (fns[k], float("nan"), float("nan")) for k in (f"{prefix}_{m}" for m in modes)}


def torch_compile_contenders(modes: list[str]) -> tuple[dict, dict]:
  """(contenders, first-call seconds = compile time), warmed up; ({}, {}) with the reason printed when
  torch.compile cannot run here (no C++ compiler for inductor's CPU code, or its compile fails)."""
  from benchmarks import bench_torch  # pylint: disable=g-import-not-at-top
  why = bench_torch.compile_unavailable()
  if why is None:
    try:
      contenders = torch_contenders(modes, compiled=True)
      return contenders, warm_up({k: v[0] for k, v in contenders.items()}, _WARMUP.value)
    except Exception as e:  # pylint: disable=broad-except  # inductor raises many types (BackendCompilerFailed...)
      why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
  print(f"torch.compile skipped: {why}")
  return {}, {}


def interleaved_times(fns: dict[str, Callable], steps: int, rewarm: int = 0) -> dict[str, list[float]]:
  """Seconds per call; round r runs every contender once, so load drift hits all alike.

  At its turn a contender first runs `rewarm` untimed steps (back to steady state).
  """
  times = {k: [] for k in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      for _ in range(rewarm):
        fn()
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return times


def warm_up(fns: dict[str, Callable], warmup: int) -> dict[str, float]:
  """Runs each `warmup` times; returns the first call's seconds (includes lazy work)."""
  first = {}
  for name, fn in fns.items():
    for i in range(max(warmup, 1)):
      t0 = time.perf_counter()
      fn()
      if i == 0:
        first[name] = time.perf_counter() - t0
  return first


def peak_memory_mb() -> float:
  """Device peak bytes on an accelerator, else this process's max RSS (Linux: KiB)."""
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), the host these numbers belong to."""
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x{len(names)}" if names else "unknown"
  except OSError:
    return "unknown"


def load_average() -> str:
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"


def mfu_text(flops_per_s: float) -> str:
  kind = jax.devices()[0].device_kind
  peak = mfu.peak_flops(kind, _DTYPE.value)
  if peak is None:
    return f"unknown peak ({kind})"
  return f"{100 * flops_per_s / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s ({kind}, {_DTYPE.value})"


def report(contenders: dict, times: dict, first: dict, batch: int, memory: dict) -> None:
  rates = {k: batch / statistics.median(v) for k, v in times.items()}
  for name, (_, compile_s, flops) in contenders.items():
    med = statistics.median(times[name])
    extra = ""
    if name.startswith("jax"):
      extra = (f"  compile {compile_s:.1f}s  first call {first[name]:.2f}s  peak mem {memory[name]:.0f} MiB"
               f"  {flops / 1e9:.1f} GFLOP/step  {flops / med / 1e9:.1f} GFLOP/s")
      if _MFU.value:
        extra += f"  MFU {mfu_text(flops / med)}"
    elif name.startswith("torch_compile"):
      extra = f"  compile (first call) {first[name]:.1f}s"
    spread = f"[{batch / max(times[name]):.1f}-{batch / min(times[name]):.1f}]"
    print(f"{name:12s} {rates[name]:8.1f} img/s {spread}{extra}")
  for mode in ("train", "eval"):
    if f"jax_{mode}" in rates and f"torch_{mode}" in rates:
      ratios = [t / j for j, t in zip(times[f"jax_{mode}"], times[f"torch_{mode}"])]
      print(f"ratio {mode}: JAX/torch = {rates[f'jax_{mode}'] / rates[f'torch_{mode}']:.2f}x "
            f"(per round: {', '.join(f'{r:.2f}' for r in ratios)})")
    if f"jax_{mode}" in rates and f"torch_compile_{mode}" in rates:
      print(f"ratio {mode}: JAX/torch.compile = {rates[f'jax_{mode}'] / rates[f'torch_compile_{mode}']:.2f}x")


def single_model() -> None:
  modes = ["train", "eval"] if _MODE.value == "both" else [_MODE.value]
  cfg = model_config()
  model = registry.build_model(cfg, _CLASSES.value, backend=_BACKEND.value)
  print(f"{_MODEL.value} stem={_STEM.value} image={_IMAGE.value} batch={_BATCH.value} width={_WIDTH.value} "
        f"dtype={_DTYPE.value} backend={backend.resolve_name(_BACKEND.value)} platform={jax.default_backend()} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  contenders = jax_contenders(model, modes, reference_flops(cfg, modes))
  first = warm_up({k: v[0] for k, v in contenders.items()}, _WARMUP.value)
  memory = {k: peak_memory_mb() for k in contenders}
  if _VS_TORCH.value:
    torch_side = torch_contenders(modes)
    warm_up({k: v[0] for k, v in torch_side.items()}, _WARMUP.value)
    contenders.update(torch_side)
    if _TORCH_COMPILE.value:
      compiled, compile_first = torch_compile_contenders(modes)
      contenders.update(compiled)
      first.update(compile_first)
  times = interleaved_times({k: v[0] for k, v in contenders.items()}, _STEPS.value, _REWARM.value)
  report(contenders, times, first, _BATCH.value, memory)
  print(f"load average: {load_average()}  cpu: {cpu_model()}  malloc: {allocator()}")


def population_contenders(model, ks: list[int], flops_per_model: float) -> dict:
  """{'K=k': (step, compile_s, flops)} for the core train step vmapped over K models (population.py)."""
  from jax_resnets.training import population  # pylint: disable=g-import-not-at-top
  out = {}
  for k in ks:
    dp = parallel.DataParallel("shard_map", jax.devices()[:1], num_models=k,
                               per_model=backend.resolve(_BACKEND.value).per_model).compile_steps()
    state = [dp.replicate(population.init(list(range(k)), model, (_IMAGE.value,) * 2 + (3,),
                                          optax.sgd(0.01, momentum=0.9)))]
    one = random_batch(_BATCH.value, _IMAGE.value, _CLASSES.value)
    batch = dp.shard({n: np.stack([one[n]] * k) for n in ("image", "label")})
    compiled, seconds, _ = compile_fn(dp.train_step, state[0], batch)

    def step(compiled=compiled, state=state, batch=batch):
      state[0], metrics = compiled(state[0], batch)
      return jax.block_until_ready(metrics)
    out[f"K={k}"] = (step, seconds, k * flops_per_model)
  return out


def population_bench() -> None:
  ks = [int(k) for k in _POPULATION.value]
  cfg = model_config()
  model = registry.build_model(cfg, _CLASSES.value, backend=_BACKEND.value)
  print(f"population: {_MODEL.value} stem={_STEM.value} image={_IMAGE.value} batch={_BATCH.value} "
        f"width={_WIDTH.value} dtype={_DTYPE.value}, K in {ks}")
  contenders = population_contenders(model, ks, reference_flops(cfg, ["train"])["train"])
  warm_up({k: v[0] for k, v in contenders.items()}, _WARMUP.value)
  times = interleaved_times({k: v[0] for k, v in contenders.items()}, _STEPS.value, _REWARM.value)
  base = statistics.median(times[f"K={ks[0]}"]) / ks[0]
  for k in ks:
    med = statistics.median(times[f"K={k}"])
    _, compile_s, flops = contenders[f"K={k}"]
    mfu = f"  MFU {mfu_text(flops / med)}" if _MFU.value else ""
    print(f"K={k:<3d} {med * 1e3:8.1f} ms/step  {k * _BATCH.value / med:8.1f} img/s (all models)  "
          f"cost per model {med / k / base:.2f}x K={ks[0]}  K runs' worth: {med / (k * base):.2f}  "
          f"compile {compile_s:.1f}s  {flops / med / 1e9:.1f} GFLOP/s{mfu}")
  print(f"load average: {load_average()}  cpu: {cpu_model()}  malloc: {allocator()}")


def main(argv):
  del argv
  if _POPULATION.value:
    population_bench()
  else:
    single_model()


def dashes_to_underscores(argv: list[str]) -> list[str]:
  """Accepts `--vs-torch` as well as absl's `--vs_torch`."""
  return [re.sub(r"^--([\w-]+)", lambda m: "--" + m.group(1).replace("-", "_"), a) for a in argv]


if __name__ == "__main__":
  main(FLAGS(dashes_to_underscores(sys.argv)))
