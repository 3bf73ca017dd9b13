r"""Compilation timing: ResNet inference on CIFAR-sized batches, jitted vs eager.

  python -m jax_resnets.studies.resnet34.timing --depth=34 --batch=1,32 --repeats=3 [--conv=xla,handmade]

JAX's counterpart of the study's eager / TorchScript trace / script comparison:
  * eager: `jax.disable_jit()`, every primitive dispatched from Python one at a time
    (its first call also compiles each primitive once, cached afterwards);
  * jit:   the whole forward pass traced, lowered to StableHLO and compiled by XLA once.
Reported per mode: the one-off cost (trace + lower, compile, first call) and the median
wall time per batch over `--repeats` runs after `--warmup` runs, with images/s and the
speed-up over eager. `--conv=xla,handmade` adds the handmade im2col convolution.
"""
import statistics
import time
from typing import Callable

from jax_resnets import backend

backend.configure_process("auto")  # Before JAX starts: the CPU backend's XLA flags.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
from absl import app, flags

import flax.linen as nn

from jax_resnets.models import resnet
from jax_resnets.studies.resnet34 import handmade_conv

CONVS = {"xla": nn.Conv, "handmade": handmade_conv.HandmadeConv}


def random_variables(abstract, seed: int = 0):
  """He-normal kernels and near-identity BN as numpy, from `jax.eval_shape(model.init, ...)`.

  Cheaper than running or compiling `model.init` for a big model, and realistic in scale.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    noise = rng.normal(size=s.shape).astype(np.float32)
    if len(s.shape) > 1:
      return noise * np.float32(np.sqrt(2.0 / np.prod(s.shape[:-1])))
    near_one = jax.tree_util.keystr(path).endswith(("['var']", "['scale']"))
    return (1.0 + 0.1 * np.abs(noise)) if near_one else 0.1 * noise

  return jax.tree_util.tree_map_with_path(leaf, abstract)


def _median_seconds(fn: Callable, repeats: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _timed(fn: Callable):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


def measure(depth: int = 34, batch: int = 32, width: int = 64, image_size: int = 32, conv: str = "xla",
            repeats: int = 3, warmup: int = 1, seed: int = 0) -> list[dict]:
  """Times eager and jitted inference of one CIFAR-stem ResNet; returns one row per mode.

  Also checks that both modes give the same logits: `max_diff` = max |jit - eager| / max |eager|.
  """
  model = resnet.ResNet(depth, num_classes=10, stem="cifar", width=width, conv=CONVS[conv])
  x = np.random.default_rng(seed).normal(size=(batch, image_size, image_size, 3)).astype(np.float32)
  variables = jax.device_put(random_variables(jax.eval_shape(model.init, jax.random.key(0), x), seed))
  forward = lambda v, images: model.apply(v, images, train=False)[0]

  def eager():
    with jax.disable_jit():
      return forward(variables, x)

  eager_logits, eager_first = _timed(eager)
  eager_time = _median_seconds(eager, repeats, warmup)
  t0 = time.perf_counter()
  lowered = jax.jit(forward).lower(variables, x)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  jit_logits, jit_first = _timed(lambda: compiled(variables, x))
  jit_time = _median_seconds(lambda: compiled(variables, x), repeats, warmup)
  eager_logits = np.asarray(eager_logits)
  max_diff = float(np.max(np.abs(np.asarray(jit_logits) - eager_logits)) / np.max(np.abs(eager_logits)))
  common = dict(depth=depth, batch=batch, width=width, image_size=image_size, conv=conv, repeats=repeats,
                warmup=warmup, max_diff=max_diff)
  return [
      dict(common, mode="eager", trace_lower_s=0.0, compile_s=0.0, first_call_s=eager_first,
           median_s=eager_time, img_per_s=batch / eager_time, speedup=1.0),
      dict(common, mode="jit", trace_lower_s=t1 - t0, compile_s=t2 - t1, first_call_s=jit_first,
           median_s=jit_time, img_per_s=batch / jit_time, speedup=eager_time / jit_time),
  ]


def format_table(rows: list[dict]) -> str:
  """Markdown table, one line per (conv, mode)."""
  lines = ["| model | conv | mode | trace+lower (s) | compile (s) | first call (s) | median / batch (ms) "
           "| img/s | speed-up vs eager | logit diff (rel.) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| ResNet-{r['depth']} w{r['width']} b{r['batch']} {r['image_size']}px | {r['conv']} | {r['mode']} "
        f"| {r['trace_lower_s']:.2f} | {r['compile_s']:.2f} | {r['first_call_s']:.2f} "
        f"| {1e3 * r['median_s']:.1f} | {r['img_per_s']:.1f} | {r['speedup']:.2f}x | {r['max_diff']:.1e} |")
  return "\n".join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_integer("depth", 34, "ResNet depth (18, 34, 50, 101, 152).")
flags.DEFINE_list("batch", ["1", "32"], "Batch sizes to time (CIFAR-sized images: 32x32x3), comma-separated.")
flags.DEFINE_integer("width", 64, "Channels of layer1 (64 = the paper's ResNet).")
flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
flags.DEFINE_list("conv", ["xla"], "Convolutions to time: xla, handmade (comma-separated).")
flags.DEFINE_integer("repeats", 3, "Timed runs per mode (the median is reported).")
flags.DEFINE_integer("warmup", 1, "Untimed runs per mode before timing.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.depth not in resnet.STAGE_SIZES or any(c not in CONVS for c in FLAGS.conv):
    raise app.UsageError(f"--depth must be one of {tuple(resnet.STAGE_SIZES)} and --conv of "
                         f"{tuple(CONVS)}")
  rows = []
  for conv in FLAGS.conv:
    for batch in FLAGS.batch:
      rows += measure(FLAGS.depth, int(batch), FLAGS.width, FLAGS.image_size, conv, FLAGS.repeats, FLAGS.warmup)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()} "
        f"({len(jax.devices())} devices); inference (train=False), float32")
  print(format_table(rows))


if __name__ == "__main__":
  app.run(main)
