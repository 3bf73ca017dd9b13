"""One core: the backend seam (stock XLA ops off the CPU backend), populations as jax.vmap of the core
step (same init per seed, same values as per-model steps, one batched conv per layer), and the CIE
study's levels resuming inside a level after kill -9."""
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_resnets import backend, config_lib
from jax_resnets.models import registry
from jax_resnets.training import optim, parallel, population, steps
from jax_resnets.training.state import create_train_state, init_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_STOCK = ("custom_vjp_call", "custom_vjp_call_jaxpr", "custom_vmap_call", "ffi_call", "custom_call")


def primitives(jaxpr) -> list[str]:
  """Every primitive name in a closed jaxpr, sub-jaxprs (jit, shard_map, scan, custom rules) included."""
  names = []
  for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
    names.append(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):  # (Closed)Jaxpr
          names += primitives(sub)
  return names


def tiny_model(backend_name: str):
  cfg = ml_collections.ConfigDict(dict(name="resnet", depth=18, stem="imagenet", width=4, dtype="float32"))
  return registry.build_model(cfg, 2, bn_axis_name=steps.AXIS, backend=backend_name)


def tx():
  cfg = config_lib.base_config().optim
  return optim.create_optimizer(cfg, optim.learning_rate_schedule(cfg, 10, 10))


def batch(k: int = 0, size: int = 4, image: int = 16, seed: int = 0):
  rng = np.random.default_rng(seed)
  shape = (k, size) if k else (size,)
  return {"image": rng.normal(size=(*shape, image, image, 3)).astype(np.float32),
          "label": rng.integers(0, 2, shape).astype(np.int32)}


def test_xla_backend_train_step_is_stock_flax():
  dp = parallel.DataParallel("shard_map", jax.devices()[:1]).compile_steps()
  state = dp.replicate(create_train_state(init_key(0), tiny_model("xla"), (16, 16, 3), tx()))
  names = primitives(jax.make_jaxpr(dp.train_step)(state, dp.shard(batch())))
  assert "conv_general_dilated" in names
  assert not set(names) & set(NOT_STOCK), sorted(set(names) & set(NOT_STOCK))


def test_cpu_backend_is_not_stock_where_it_applies():
  """The other side of the seam: the CPU backend's step does use its own ops (so the check above can fail)."""
  if backend.resolve_name("cpu") != "cpu" or not backend.resolve("auto").name == "cpu":
    pytest.skip("the oneDNN bridge is not built on this machine: auto is xla here")
  dp = parallel.DataParallel("shard_map", jax.devices()[:1]).compile_steps()
  state = dp.replicate(create_train_state(init_key(0), tiny_model("cpu"), (16, 16, 3), tx()))
  names = primitives(jax.make_jaxpr(dp.train_step)(state, dp.shard(batch())))
  assert set(names) & set(NOT_STOCK)


@pytest.mark.parametrize("platforms,expected", [("cuda", "xla"), ("tpu", "xla"), ("cpu", None)])
def test_auto_resolves_to_xla_off_the_cpu(monkeypatch, platforms, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  cpu_builds = __import__("jax_resnets.cpu", fromlist=["available"]).available()
  assert backend.resolve_name("auto") == (expected or ("cpu" if cpu_builds else "xla"))
  assert backend.resolve_name("xla") == "xla"
  with pytest.raises(ValueError, match="unknown backend"):
    backend.resolve_name("cudnn")


def test_population_under_xla_has_one_conv_per_layer():
  model = tiny_model("xla")
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  stacked = jax.tree.map(lambda x: jax.ShapeDtypeStruct((3, *x.shape), x.dtype), variables)
  count = lambda names: names.count("conv_general_dilated")
  single = count(primitives(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, jnp.zeros((4, 16, 16, 3)))))
  vmapped = jax.make_jaxpr(jax.vmap(lambda v, x: model.apply(v, x), in_axes=(0, None)))(
      stacked, jnp.zeros((4, 16, 16, 3)))
  assert single == 20 and count(primitives(vmapped)) == single  # ResNet-18: 17 convs + 3 downsamples.


def test_seed_k_starts_from_the_same_weights_alone_and_in_a_population():
  model = tiny_model("xla")
  alone = create_train_state(init_key(5), model, (16, 16, 3), tx())
  pop = population.init([3, 5], model, (16, 16, 3), tx())
  for a, b in zip(jax.tree.leaves((alone.params, alone.batch_stats, alone.rng)),
                  jax.tree.leaves((pop.params, pop.batch_stats, pop.rng))):
    np.testing.assert_array_equal(a, np.asarray(b)[1])


def test_population_step_equals_each_models_own_step():
  model, shape = tiny_model("xla"), (16, 16, 3)
  pop_dp = parallel.DataParallel("shard_map", jax.devices()[:1], num_models=2).compile_steps()
  one_dp = parallel.DataParallel("shard_map", jax.devices()[:1]).compile_steps()
  pop_state, pop_batch = population.init([0, 1], model, shape, tx()), batch(k=2)
  pop_state, pop_metrics = pop_dp.train_step(pop_dp.replicate(pop_state), pop_dp.shard(pop_batch))
  for k in (0, 1):
    state = create_train_state(init_key(k), model, shape, tx())
    state, metrics = one_dp.train_step(one_dp.replicate(state), one_dp.shard({n: v[k] for n, v in pop_batch.items()}))
    np.testing.assert_allclose(np.asarray(pop_metrics["loss"])[k], metrics["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(pop_state.params)):
      np.testing.assert_allclose(np.asarray(b)[k], a, rtol=1e-4, atol=5e-5)  # a batched conv sums in another order


def test_population_on_4_devices_equals_1_device():
  model, shape = tiny_model("xla"), (16, 16, 3)
  out = []
  for n in (1, 4):
    dp = parallel.DataParallel("shard_map", jax.devices()[:n], num_models=2).compile_steps()
    state, _ = dp.train_step(dp.replicate(population.init([0, 1], model, shape, tx())), dp.shard(batch(k=2, size=8)))
    out.append(jax.device_get(state.params))
  for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def run_cie(workdir, *extra, wait=True):
  cmd = [sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py:cie", f"--workdir={workdir}",
         "--config.cie.sparsities=(0.9,)", "--config.cie.quantization=('float16',)", *extra]
  if wait:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_cie_level_killed_resumes_inside_the_level_and_writes_the_same_predictions(tmp_path):
  reference = run_cie(tmp_path / "reference")
  assert reference.returncode == 0, reference.stderr[-3000:]
  proc = run_cie(tmp_path / "killed", wait=False)
  level = tmp_path / "killed" / "levels" / "prune_0.9"
  while not (level / "checkpoints" / "8").is_dir():  # Orbax renames a finished checkpoint into place.
    assert proc.poll() is None, proc.stderr.read()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (level / "results.json").exists(), "the level finished before the kill"
  rerun = run_cie(tmp_path / "killed")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "Resumed from" in rerun.stderr and "prune_0.9" in rerun.stderr
  with open(tmp_path / "reference" / "predictions.csv") as a, open(tmp_path / "killed" / "predictions.csv") as b:
    assert a.read() == b.read()


def test_mla_adapter_without_a_backbone_is_one_line(tmp_path):
  out = run_cie(tmp_path, "--config.model.name=mla_adapter")
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "model.backbone_checkpoint" in lines[0] and "Traceback" not in out.stderr


def test_faces_honours_init_checkpoint_and_freeze(tmp_path):
  """The faces study trains through the core loop, so `init.checkpoint` and `freeze` apply there too:
  a torchvision-layout ResNet-18 initialises the backbone and only `fc` trains."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from jax_resnets import studies  # pylint: disable=g-import-not-at-top
  from jax_resnets.models import torchvision_import  # pylint: disable=g-import-not-at-top
  from jax_resnets.training import checkpointing  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("vggface2_faces", os.path.join(ROOT, "configs", "vggface2_faces.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("synthetic")
  config.dataset.update(image_size=32, synthetic_sizes={"train": 64, "dev": 16, "test": 16, "known": 16,
                                                        "unknown_dev": 16, "unknown_test": 16})
  config.model.update(name="resnet", depth=18, stem="imagenet", width=4)
  config.loss.center_weight = 0.0
  config.update(batch_size=16, num_epochs=1, num_devices=1, freeze="head_only")
  config.init.checkpoint = torchvision_import.write_random_checkpoint(str(tmp_path / "r18.safetensors"), 18, 4,
                                                                      num_classes=1000, seed=3)
  results = studies.run(config, str(tmp_path / "run"))
  saved, _ = checkpointing.read_latest(str(tmp_path / "run"))
  loaded = torchvision_import.load(config.init.checkpoint, 18)
  kernel = np.asarray(saved["params"]["layer1"]["0"]["conv1"]["kernel"])
  np.testing.assert_array_equal(kernel, np.asarray(loaded[("params", "layer1", "0", "conv1", "kernel")]))
  assert results["steps_run"] == 4 and results["final"]["dev/accuracy"] >= 0
