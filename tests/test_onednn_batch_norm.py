"""oneDNN batch norm (+ ReLU) through jax.ffi (models/onednn.py) and fast_ops.BatchNorm compute
flax's nn.BatchNorm (+ nn.relu): values, running statistics and gradients."""
import functools
import platform
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_resnets import config_lib
from jax_resnets.models import registry, resnet
from jax_resnets.cpu import fast_ops
from jax_resnets.cpu import onednn

_LINUX_X86 = sys.platform == "linux" and platform.machine() == "x86_64"
pytestmark = pytest.mark.skipif(not _LINUX_X86, reason="oneDNN wheels exist for Linux x86-64 only")
_EPS = 1e-5


def _reference(x, scale, shift, relu):
  y = nn.BatchNorm(use_running_average=False, epsilon=_EPS).apply(
      {"params": {"scale": scale, "bias": shift}, "batch_stats": {"mean": 0 * scale, "var": 0 * scale + 1}}, x,
      mutable=["batch_stats"])[0]
  return nn.relu(y) if relu else y


def _inputs(shape, seed=0, models=None):
  rng = np.random.default_rng(seed)
  lead = () if models is None else (models,)
  c = shape[-1]
  x = (rng.normal(size=lead + shape) * 2 + 3).astype(np.float32)  # mean 3, std 2: not centred
  scale, shift = (rng.normal(size=lead + (c,)).astype(np.float32) for _ in range(2))
  dy = rng.normal(size=lead + shape).astype(np.float32)
  return x, scale, shift, dy


def _loss(fn, relu):
  return lambda x, scale, shift, dy: jnp.vdot(fn(x, scale, shift, relu), dy)


def _ours(x, scale, shift, relu):
  return onednn.batch_norm(relu, _EPS)(x, scale, shift)[0]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(4, 6, 6, 16), (3, 5, 7, 3), (2, 4, 4, 20)])
def test_values_statistics_and_gradients_match_flax(shape, relu):
  x, scale, shift, dy = _inputs(shape)
  y, mean, var = jax.jit(onednn.batch_norm(relu, _EPS))(x, scale, shift)
  np.testing.assert_allclose(y, _reference(x, scale, shift, relu), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mean, x.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(var, x.var((0, 1, 2)), rtol=1e-4)  # biased, as flax's
  grads = lambda fn: jax.jit(jax.grad(_loss(fn, relu), (0, 1, 2)))(x, scale, shift, dy)
  for got, want in zip(grads(_ours), grads(_reference)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_vmap_is_one_call_for_all_models():
  # A population: one forward and one backward call run every model's batch norm (in parallel,
  # one core each), each equal to that model's own.
  x, scale, shift, dy = _inputs((4, 8, 8, 16), seed=1, models=3)
  grad = lambda fn: jax.jit(jax.vmap(jax.value_and_grad(_loss(fn, True), (0, 1, 2))))
  got, want = grad(_ours)(x, scale, shift, dy), grad(_reference)(x, scale, shift, dy)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
  hlo = grad(_ours).lower(x, scale, shift, dy).compile().as_text()
  assert [hlo.count(f'custom_call_target="OnednnBatchNorm{t}"') for t in ("Forward", "Backward")] == [1, 1]


def test_a_workspace_of_the_wrong_size_is_a_clear_error():
  x, scale, _, dy = _inputs((2, 4, 4, 16))
  f32 = lambda s: jax.ShapeDtypeStruct(s, jnp.float32)
  call = jax.ffi.ffi_call("OnednnBatchNormBackward", (f32(x.shape), f32((16,)), f32((16,))))
  with pytest.raises(Exception, match="the workspace has 3 bytes"):
    jax.block_until_ready(call(x, scale, scale, scale + 1, np.zeros(3, np.uint8), dy, act=np.int64(1),
                               eps=np.float32(_EPS)))


def _module_pair(**kwargs):
  """(the xla backend's norm, the cpu backend's): resnet.BatchNorm (flax's + torch's running variance) and
  fast_ops.BatchNorm."""
  return resnet.BatchNorm(momentum=0.9, epsilon=_EPS, **kwargs), fast_ops.BatchNorm(momentum=0.9, epsilon=_EPS, **kwargs)


@pytest.mark.parametrize("relu", [False, True])
def test_fast_batch_norm_module_equals_flax_in_training_and_eval(relu):
  x, _, _, dy = _inputs((4, 6, 6, 8), seed=2)
  ref, fast = _module_pair()
  variables = ref.init(jax.random.key(0), x, use_running_average=True)
  assert jax.tree.structure(variables) == jax.tree.structure(fast.init(jax.random.key(0), x, use_running_average=True))
  variables = jax.tree.map(lambda v: v + 0.5, variables)  # scale, bias and running stats not at init

  def run(module, act, params, train):
    out, upd = module.apply({**variables, "params": params}, x, use_running_average=not train,
                            mutable=["batch_stats"], **({"relu": relu} if act else {}))
    out = nn.relu(out) if relu and not act else out
    return jnp.vdot(out, dy), (out, upd)

  population = fast_ops.models_in_parallel()
  for train in (True, False):
    results = [jax.jit(population(jax.value_and_grad(functools.partial(run, m, a, train=train), has_aux=True)))(
        variables["params"]) for m, a in ((ref, False), (fast, True))]
    for got, want in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0])):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()) + 1e-6)
  hlo = lambda train, wrap: jax.jit(wrap(lambda p: run(fast, True, p, train))).lower(
      variables["params"]).compile().as_text()
  # oneDNN in a population's training step only; a single model's keeps XLA's fusions.
  assert "OnednnBatchNormForward" in hlo(True, population)
  assert "OnednnBatchNorm" not in hlo(False, population) and "OnednnBatchNorm" not in hlo(True, lambda f: f)


def test_fast_batch_norm_falls_back_to_flax_where_onednn_does_not_apply(monkeypatch):
  # bf16, BN synced over 2 devices (here a vmapped axis), not NHWC: flax's; synced over 1: oneDNN.
  x = np.random.default_rng(3).normal(size=(2, 4, 4, 8)).astype(np.float32)
  cases = [(dict(dtype=jnp.bfloat16), x, 0, False), (dict(axis_name="batch"), x, 2, False),
           (dict(axis_name="batch"), x, 1, True), ({}, x.reshape(2, 16, 8), 0, False)]
  for kwargs, inputs, devices, onednn_used in cases:
    ref, fast = _module_pair(**kwargs)
    variables = ref.init(jax.random.key(0), inputs, use_running_average=True)
    apply = lambda m, v, xs, **kw: m.apply(v, xs, use_running_average=False, mutable=["batch_stats"], **kw)
    fns = [functools.partial(apply, ref), fast_ops.models_in_parallel()(functools.partial(apply, fast, relu=False))]
    if devices:
      fns = [jax.vmap(f, (None, 0), axis_name="batch") for f in fns]
      inputs = np.stack([inputs * (d + 1) for d in range(devices)])
    assert ("OnednnBatchNorm" in str(jax.make_jaxpr(fns[1])(variables, inputs))) == onednn_used
    for got, want in zip(jax.tree.leaves(fns[1](variables, inputs)), jax.tree.leaves(fns[0](variables, inputs))):
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-4, atol=1e-4)
  monkeypatch.setattr(onednn, "why_not", lambda: "oneDNN not found (test)")
  _, fast = _module_pair()
  variables = fast.init(jax.random.key(0), x, use_running_average=True)
  jaxpr = jax.make_jaxpr(lambda v: fast.apply(v, x, use_running_average=False, relu=True, mutable=["batch_stats"]))
  assert "OnednnBatchNorm" not in str(jaxpr(variables))


def test_resnet_norm_fast_equals_reference_and_fuses_every_relu_after_a_norm():
  # A population's step for CIFAR ResNet-18 at width 4, 16 px: 20 batch norms, 9 followed by their
  # own ReLU (stem, bn1 of each block), 11 by an add (bn2 of each block, 3 downsamples).
  x = np.random.default_rng(4).normal(size=(4, 16, 16, 3)).astype(np.float32)
  models = {}
  for norm, backend in (("reference", "xla"), ("fast", "cpu")):
    cfg = config_lib.base_config().model
    cfg.update(depth=18, stem="cifar", width=4)
    models[norm] = registry.build_model(cfg, num_classes=3, backend=backend)
  variables = models["reference"].init(jax.random.key(0), x, train=False)

  def loss(model, params):
    (logits, _), upd = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(logits ** 2), upd

  population = fast_ops.models_in_parallel()
  results = {n: jax.jit(population(jax.value_and_grad(functools.partial(loss, m), has_aux=True)))(variables["params"])
             for n, m in models.items()}
  for got, want in zip(jax.tree.leaves(results["fast"]), jax.tree.leaves(results["reference"])):
    np.testing.assert_allclose(got, want, atol=2e-4 * float(np.abs(want).max()) + 1e-6)
  hlo = jax.jit(population(jax.grad(lambda q: loss(models["fast"], q)[0]))).lower(variables["params"]).compile().as_text()
  calls = lambda target, act: sum(f'custom_call_target="OnednnBatchNorm{target}"' in line and f"act = {act} :" in line
                                  for line in hlo.splitlines())
  assert [calls(t, a) for t in ("Forward", "Backward") for a in (0, 1)] == [11, 9, 11, 9]
