"""oneDNN convs through jax.ffi (models/onednn.py) compute lax.conv_general_dilated's values."""
import logging
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_resnets import backend, config_lib
from jax_resnets.models import registry
from jax_resnets.cpu import fast_ops
from jax_resnets.cpu import onednn
from jax_resnets.training import parallel, population

_DN = ("NHWC", "HWIO", "NHWC")
_LINUX_X86 = sys.platform == "linux" and platform.machine() == "x86_64"
needs_onednn = pytest.mark.skipif(not _LINUX_X86, reason="oneDNN wheels exist for Linux x86-64 only")


def _lax(strides, pads):
  return lambda x, k: jax.lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_DN,
                                                   precision="highest")


@needs_onednn
def test_built_and_registered():
  # requirements.txt installs oneDNN on Linux x86-64; there the handlers must build and load.
  assert onednn.why_not() is None


@needs_onednn
@pytest.mark.parametrize("x_shape,k_shape,strides,pads", [
    ((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 9, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1))),     # odd map, stride 2
    ((2, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 4), (1, 1, 4, 6), (2, 2), ((0, 0), (0, 0))),     # ResNet downsample
    ((2, 16, 16, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),   # ImageNet stem
    ((3, 5, 7, 4), (3, 3, 4, 5), (1, 2), ((0, 2), (1, 0)))])    # asymmetric everything
def test_values_and_both_gradients_match_lax(x_shape, k_shape, strides, pads):
  rng = np.random.default_rng(0)
  x, k = (rng.normal(size=s).astype(np.float32) for s in (x_shape, k_shape))
  ref, got = _lax(strides, pads), onednn.conv(strides, pads)
  y = jax.jit(got)(x, k)
  np.testing.assert_allclose(y, ref(x, k), rtol=1e-5, atol=1e-5)
  r = rng.normal(size=y.shape).astype(np.float32)
  grads = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * r), (0, 1)))(x, k)
  for g, want in zip(grads(got), grads(ref)):
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
  assert "OnednnConvForward" in jax.jit(got).lower(x, k).as_text()


@needs_onednn
@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_vmap_is_one_call_for_all_models_with_equal_gradients(algorithm):
  # A population (jax.vmap over models) is one call per conv, which runs the models in parallel.
  if algorithm == "winograd" and not onednn.has_winograd():
    pytest.skip("this oneDNN / CPU has no Winograd convs (test_winograd_is_there_on_avx512 says when it must)")
  rng = np.random.default_rng(1)
  xs, ks = rng.normal(size=(3, 2, 8, 8, 16)).astype(np.float32), rng.normal(size=(3, 3, 3, 16, 16)).astype(np.float32)
  loss = lambda f: lambda x, k: jnp.sum(f(x, k) ** 2)
  pads = ((1, 1), (1, 1))
  got_fn, ref_fn = (jax.jit(jax.vmap(jax.value_and_grad(loss(f), (0, 1))))
                    for f in (onednn.conv((1, 1), pads, algorithm), _lax((1, 1), pads)))
  for got, want in zip(jax.tree.leaves(got_fn(xs, ks)), jax.tree.leaves(ref_fn(xs, ks))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
  hlo = got_fn.lower(xs, ks).compile().as_text()
  assert hlo.count('custom_call_target="OnednnConvBackwardWeights"') == 1 and "feature_group_count" not in hlo


@needs_onednn
def test_vmap_with_a_shared_operand_and_nested_vmap():
  # An operand that is not mapped (shared images, shared kernel) is broadcast without a copy.
  rng = np.random.default_rng(2)
  x, k = rng.normal(size=(2, 2, 8, 8, 4)).astype(np.float32), rng.normal(size=(3, 3, 3, 4, 5)).astype(np.float32)
  got, ref = onednn.conv((2, 2), ((1, 1), (1, 1))), _lax((2, 2), ((1, 1), (1, 1)))
  for axes, args in (((None, 0), (x[0], k)), ((0, None), (x, k[0]))):
    np.testing.assert_allclose(jax.jit(jax.vmap(got, axes))(*args), jax.vmap(ref, axes)(*args), rtol=1e-5, atol=1e-4)
  nested = lambda f: jax.vmap(jax.vmap(f, (0, None)), (None, 0))  # [models k, images x]
  np.testing.assert_allclose(jax.jit(nested(got))(x, k), nested(ref)(x, k), rtol=1e-5, atol=1e-4)


def test_conv_plan_by_map_size():
  big, small = (8, 16, 16, 64), (8, 4, 4, 64)
  k3 = (3, 3, 64, 64)
  assert fast_ops.conv_plan(big, k3, (1, 1), ((1, 1), (1, 1)), use_onednn=True) == "onednn"
  assert fast_ops.conv_plan(big, k3, (1, 1), ((1, 1), (1, 1)), use_onednn=False) == "xla"
  assert fast_ops.conv_plan(small, k3, (1, 1), ((1, 1), (1, 1)), use_onednn=True) == "xla"
  # Winograd (where the loaded oneDNN has it): 3x3 stride 1, >= 64 channels in 16s, maps >= 4 px,
  # >= 1024 output pixels in the batch.
  win, same = dict(use_onednn=True, winograd=True), ((1, 1), (1, 1))
  assert fast_ops.conv_plan(big, k3, (1, 1), same, **win) == "winograd"
  assert fast_ops.conv_plan((64, 4, 4, 64), k3, (1, 1), same, **win) == "winograd"
  assert fast_ops.conv_plan(small, k3, (1, 1), same, **win) == "xla"           # 128 pixels
  assert fast_ops.conv_plan((8, 16, 16, 32), (3, 3, 32, 32), (1, 1), same, **win) == "onednn"
  assert fast_ops.conv_plan(big, (3, 3, 64, 8), (1, 1), same, **win) == "onednn"
  assert fast_ops.conv_plan(big, k3, (2, 2), same, **win) == "onednn"
  assert fast_ops.conv_plan(big, (1, 1, 64, 64), (1, 1), ((0, 0), (0, 0)), **win) == "onednn"
  assert fast_ops.conv_plan((512, 3, 3, 64), k3, (1, 1), same, **win) == "xla"
  # Output maps <= 2x2: XLA's conv there is a pathological swapped-operand conv; one matmul per tap.
  assert fast_ops.conv_plan(small, k3, (2, 2), same, use_onednn=True) == "kn2row"
  assert fast_ops.conv_plan((8, 2, 2, 64), k3, (1, 1), same, use_onednn=True) == "kn2row"
  # A population (vmapped models, one core each): oneDNN at every map size but the kn2row ones.
  assert fast_ops.conv_plan(small, k3, (1, 1), same, use_onednn=True, population=True) == "onednn"
  assert fast_ops.conv_plan((8, 6, 6, 64), k3, (2, 2), same, use_onednn=True, population=True) == "onednn"
  assert fast_ops.conv_plan(small, k3, (2, 2), same, use_onednn=True, population=True) == "kn2row"


def _tiny_resnet(backend="cpu"):
  cfg = config_lib.base_config().model
  cfg.update(depth=18, stem="cifar", width=4)
  return registry.build_model(cfg, num_classes=3, backend=backend)


def _train_hlo(model, x):
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(logits[0] ** 2)
  return jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()


@needs_onednn
def test_resnet_train_step_uses_onednn_on_large_maps(monkeypatch):
  # Winograd's thresholds lowered so that the tiny net's layer3 (16 channels, 4 px) qualifies.
  monkeypatch.setattr(onednn, "WINOGRAD_MIN_CHANNELS", 16)
  monkeypatch.setattr(onednn, "WINOGRAD_MIN_PIXELS", 32)
  hlo = _train_hlo(_tiny_resnet(), np.zeros((2, 16, 16, 3), np.float32))
  # Width 4: CIFAR stem and layer1 at 16 px (4 channels), layer2 at 8 px (8): oneDNN direct;
  # layer3's three 3x3 stride-1 convs: Winograd; the rest XLA / matmuls.
  lines = hlo.splitlines()
  calls = lambda target, algorithm: sum(f'custom_call_target="OnednnConv{target}"' in line
                                        and f"algorithm = {algorithm} :" in line for line in lines)
  # stem, layer1 (4), layer2 (4 + its 1x1 downsample); the stem's input gradient is not needed.
  assert [calls(t, 0) for t in ("Forward", "BackwardData", "BackwardWeights")] == [10, 9, 10]
  want = 3 if onednn.has_winograd() else 0
  assert [calls(t, 1) for t in ("Forward", "BackwardData", "BackwardWeights")] == [want] * 3
  assert "convolution(" in hlo


def _cpu_flags() -> set[str]:
  try:
    with open("/proc/cpuinfo") as f:
      return set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
  except (OSError, StopIteration):
    return set()


@needs_onednn
def test_winograd_is_there_on_avx512():
  # requirements.txt pins oneDNN 3.1, whose Winograd convs need AVX-512 (3.2 dropped them).
  assert onednn.has_winograd() == ("avx512f" in _cpu_flags())


@needs_onednn
@pytest.mark.parametrize("x_shape,k_shape", [
    ((2, 8, 8, 16), (3, 3, 16, 32)),
    ((3, 7, 5, 32), (3, 3, 32, 16)),    # odd maps: partial 4x4 tiles
    ((2, 4, 4, 64), (3, 3, 64, 64))])   # one tile
def test_winograd_values_and_both_gradients_match_lax(x_shape, k_shape):
  if not onednn.has_winograd():
    pytest.skip("this CPU has no AVX-512: oneDNN has no Winograd conv for it (checked above)")
  rng = np.random.default_rng(2)
  x, k = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=k_shape).astype(np.float32) / 10
  pads = ((1, 1), (1, 1))
  ref, got = _lax((1, 1), pads), onednn.conv((1, 1), pads, "winograd")
  y = jax.jit(got)(x, k)
  np.testing.assert_allclose(y, ref(x, k), rtol=1e-4, atol=2e-5 * float(np.abs(y).max()))
  r = rng.normal(size=y.shape).astype(np.float32)
  grads = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * r), (0, 1)))(x, k)
  for g, want in zip(grads(got), grads(ref)):
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=2e-5 * float(np.abs(want).max()))
  assert "algorithm = 1 :" in jax.jit(got).lower(x, k).as_text()


def test_without_onednn_auto_falls_back_to_xla_and_says_why(monkeypatch, caplog):
  monkeypatch.setattr(onednn, "why_not", lambda: "oneDNN not found (test)")
  onednn._warn_once.cache_clear()
  with caplog.at_level(logging.WARNING):
    hlo = _train_hlo(_tiny_resnet(), np.zeros((2, 16, 16, 3), np.float32))
  assert "Onednn" not in hlo and "convolution(" in hlo
  assert "oneDNN not found (test); convolutions fall back to XLA's and batch norms to flax's" in caplog.text
  with pytest.raises(RuntimeError, match="oneDNN not found"):
    onednn.conv((3, 3), ((0, 0), (0, 0)))


def test_not_applicable_to_bfloat16_or_negative_padding():
  x, k = jnp.zeros((1, 8, 8, 4), jnp.bfloat16), jnp.zeros((3, 3, 4, 4), jnp.bfloat16)
  assert not onednn.applicable(x, k, ((1, 1), (1, 1)))
  assert not onednn.applicable(x.astype(jnp.float32), k.astype(jnp.float32), ((-1, 0), (0, 0)))


@needs_onednn
def test_build_is_cached_and_a_failing_compiler_is_one_clear_error(monkeypatch, tmp_path):
  found = onednn._find()
  monkeypatch.setenv("JAX_RESNETS_CACHE", str(tmp_path / "ok"))
  first = onednn._build(*found)
  assert first.exists() and onednn._build(*found) == first and first.parent == tmp_path / "ok"
  monkeypatch.setenv("JAX_RESNETS_CACHE", str(tmp_path / "bad"))
  monkeypatch.setenv("CXX", "false")
  with pytest.raises(RuntimeError, match="compiling onednn.cc failed"):
    onednn._build(*found)
  assert not list((tmp_path / "bad").glob("*.so"))


@needs_onednn
@pytest.mark.parametrize("num_models", [2, 4])
def test_population_step_equals_each_models_own_step(num_models):
  # The cpu backend's population step: the core step vmapped with its `per_model` wrapper, so every
  # conv and batch norm goes through oneDNN, the models in parallel. One step must equal each model's
  # step in a population of one.
  model, tx, shape = _tiny_resnet(), optax.sgd(0.1, momentum=0.9), (16, 16, 3)
  compiled = lambda k: parallel.DataParallel("shard_map", jax.devices()[:1], num_models=k,
                                             per_model=backend.resolve("cpu").per_model).compile_steps()
  rng = np.random.default_rng(3)
  batch = {"image": rng.normal(size=(num_models, 4, 16, 16, 3)).astype(np.float32),
           "label": rng.integers(0, 3, (num_models, 4)).astype(np.int32)}
  seeds = list(range(10, 10 + num_models))
  dp = compiled(num_models)
  state = dp.replicate(population.init(seeds, model, shape, tx))
  hlo = dp.train_step.lower(state, dp.shard(batch)).compile().as_text()
  assert hlo.count('custom_call_target="OnednnConvBackwardWeights"') > 10
  assert hlo.count('custom_call_target="OnednnBatchNormBackward"') == 20  # ResNet-18's batch norms
  together, metrics = dp.train_step(state, dp.shard(batch))
  one = compiled(1)
  for k, seed in enumerate(seeds):
    alone, alone_metrics = one.train_step(one.replicate(population.init([seed], model, shape, tx)),
                                          one.shard(jax.tree.map(lambda b: b[k:k + 1], batch)))
    np.testing.assert_allclose(metrics["loss"][k], alone_metrics["loss"][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(together.params)):
      np.testing.assert_allclose(np.asarray(b)[k], np.asarray(a)[0], rtol=1e-4, atol=1e-5)
