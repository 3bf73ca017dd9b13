"""The CPU-fast paths (models/fast_ops.py) compute what the reference ops compute."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_resnets import config_lib
from jax_resnets.models import registry, resnet
from jax_resnets.cpu import fast_ops


def _grad(pool, x, r):
  return jax.grad(lambda v: jnp.sum(pool(v) * r))(x)


@pytest.mark.parametrize("shape,ties", [((2, 9, 7, 3), True), ((2, 8, 8, 4), False), ((1, 6, 5, 2), True)])
def test_max_pool_forward_bitwise_and_gradient(shape, ties):
  rng = np.random.default_rng(0)
  # Small integers make most windows tie: the gradient must go to the first maximum only.
  x = rng.integers(0, 3, shape).astype(np.float32) if ties else rng.normal(size=shape).astype(np.float32)
  ref = resnet.max_pool_3x3_s2(x)
  np.testing.assert_array_equal(fast_ops.max_pool_3x3_s2(x), ref)
  r = rng.normal(size=ref.shape).astype(np.float32)
  want, got = _grad(resnet.max_pool_3x3_s2, x, r), _grad(fast_ops.max_pool_3x3_s2, x, r)
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Each window's cotangent lands on exactly one input: total mass is preserved.
  np.testing.assert_allclose(got.sum(), r.sum(), rtol=1e-5)


def test_max_pool_ties_go_to_first_maximum():
  x = np.ones((1, 3, 3, 1), np.float32)  # one output pixel per 2x2 block; all equal
  g = np.asarray(_grad(fast_ops.max_pool_3x3_s2, x, np.ones((1, 2, 2, 1), np.float32)))[0, :, :, 0]
  # Output (0,0) sees rows/cols {-1,0,1}: first max is input (0,0); output (0,1) -> (0,1); etc.
  np.testing.assert_array_equal(g, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(g, _grad(resnet.max_pool_3x3_s2, x, np.ones((1, 2, 2, 1), np.float32))[0, :, :, 0])


@pytest.mark.parametrize("size,strides,expect", [(2, 1, True), (4, 2, True), (4, 1, False), (8, 2, False)])
def test_prefers_matmul_only_on_small_maps(size, strides, expect):
  dn = jax.lax.conv_dimension_numbers((1, size, size, 8), (3, 3, 8, 8), ("NHWC", "HWIO", "NHWC"))
  assert fast_ops.prefers_matmul((1, size, size, 8), (3, 3, 8, 8), (strides, strides), [(1, 1), (1, 1)],
                                 None, None, dn) is expect
  # 1x1 kernels always stay on XLA's conv.
  assert not fast_ops.prefers_matmul((1, size, size, 8), (1, 1, 8, 8), (1, 1), "VALID", None, None, dn)


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 2), 3, 1, ((1, 1), (1, 1))),   # ResNet-18's layer4 at 64 px: 4 of 9 taps per output
    ((1, 1), 3, 1, "SAME"),             # only the centre tap meets the map
    ((4, 4), 3, 2, ((1, 1), (1, 1))),   # layer4's strided conv
    ((3, 3), 5, 1, "SAME"),
    ((2, 3), 3, 1, "SAME"),
    ((7, 6), 3, 2, ((2, 0), (1, 2))),   # asymmetric padding, odd map
    ((5, 5), 2, 3, "VALID")])
def test_kn2row_conv_equals_lax_conv(shape, kernel, strides, padding):
  lhs, rhs = (2, *shape, 4), (kernel, kernel, 4, 5)
  x, k = (np.random.default_rng(4).normal(size=s).astype(np.float32) for s in (lhs, rhs))
  dn, s = ("NHWC", "HWIO", "NHWC"), (strides, strides)
  ref = lambda x, k: jax.lax.conv_general_dilated(x, k, s, padding, dimension_numbers=dn)
  fast = lambda x, k: fast_ops.kn2row_conv(x, k, s, padding)
  np.testing.assert_allclose(fast(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  assert "conv_general_dilated" not in str(jax.make_jaxpr(fast)(x, k))
  # Gradients equal, also vmapped over models (populations: one batched matmul per tap).
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  for got, want in zip(jax.vmap(jax.grad(loss(fast), argnums=(0, 1)))(np.stack([x, -x]), np.stack([k, 2 * k])),
                       jax.vmap(jax.grad(loss(ref), argnums=(0, 1)))(np.stack([x, -x]), np.stack([k, 2 * k]))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  small = fast_ops.prefers_matmul(lhs, rhs, s, padding, None, None, dn)
  assert (fast_ops.conv_plan(lhs, rhs, s, padding, use_onednn=True) == "kn2row") is small
  if small:  # what AutoConv computes there
    auto = lambda x, k: fast_ops.auto_conv_general_dilated(x, k, s, padding, dimension_numbers=dn)
    assert str(jax.make_jaxpr(auto)(x, k)) == str(jax.make_jaxpr(fast)(x, k))


def test_kn2row_conv_sums_bfloat16_taps_in_float32():
  """Like a conv, one rounding to bf16 at the end, not one per tap."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(4, 2, 2, 64)), jnp.bfloat16)
  k = jnp.asarray(rng.normal(size=(3, 3, 64, 32)), jnp.bfloat16)
  got = fast_ops.kn2row_conv(x, k, (1, 1), ((1, 1), (1, 1)))
  want = fast_ops.kn2row_conv(x.astype(jnp.float32), k.astype(jnp.float32), (1, 1), ((1, 1), (1, 1)))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))


@pytest.mark.parametrize("size,strides", [(2, 1), (4, 2), (8, 1)])
def test_auto_conv_matches_nn_conv(size, strides):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, size, size, 6)).astype(np.float32)
  conv = functools.partial(nn.Conv, 5, (3, 3), (strides, strides), padding=((1, 1), (1, 1)), use_bias=False)
  params = conv().init(jax.random.key(0), x)
  loss = lambda module: lambda p, v: jnp.sum(module.apply(p, v) ** 2)
  ref, fast = conv(), conv(conv_general_dilated=fast_ops.auto_conv_general_dilated)
  np.testing.assert_allclose(fast.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  got, want = jax.grad(loss(fast), argnums=(0, 1))(params, x), jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  assert fast_ops.AutoConv(5, (3, 3)).conv_general_dilated is fast_ops.auto_conv_general_dilated


def test_vmapped_auto_conv_loops_over_models_with_equal_gradients():
  """Population training vmaps over models: no grouped conv, same values as vmapped lax conv."""
  rng = np.random.default_rng(3)
  xs, ks = rng.normal(size=(3, 2, 6, 6, 4)).astype(np.float32), rng.normal(size=(3, 3, 3, 4, 5)).astype(np.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  loss = lambda conv: lambda k, x: jnp.sum(conv(x, k, (2, 2), ((1, 1), (1, 1)), None, None, dn) ** 2)
  ref_fn, fast_fn = (jax.vmap(jax.value_and_grad(loss(c), argnums=(0, 1)))
                     for c in (jax.lax.conv_general_dilated, fast_ops.auto_conv_general_dilated))
  for got, want in zip(jax.tree.leaves(fast_fn(ks, xs)), jax.tree.leaves(ref_fn(ks, xs))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert "feature_group_count=3" in str(jax.make_jaxpr(ref_fn)(ks, xs))
  assert "feature_group_count=3" not in str(jax.make_jaxpr(fast_fn)(ks, xs))


def _model(backend: str):
  cfg = config_lib.base_config().model
  cfg.update(depth=18, stem="imagenet", width=4)
  return registry.build_model(cfg, num_classes=3, backend=backend)


def test_fast_resnet_equals_reference_forward_and_gradients():
  """ImageNet stem at 32 px: the pool runs at 16x16 and layer3/layer4 at 2x2/1x1 (matmul path)."""
  x = np.random.default_rng(2).normal(size=(8, 32, 32, 3)).astype(np.float32)
  ref, fast = _model("xla"), _model("cpu")
  variables = ref.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(variables) == jax.tree.structure(fast.init(jax.random.key(0), x, train=False))

  def loss(model, params):
    (logits, _), upd = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(logits ** 2), (logits, upd)

  grad = lambda model: jax.jit(jax.value_and_grad(functools.partial(loss, model), has_aux=True))
  (lr, (logits_ref, upd_ref)), g_ref = grad(ref)(variables["params"])
  (lf, (logits_fast, upd_fast)), g_fast = grad(fast)(variables["params"])
  # The fast model really takes the other paths: matmul convs (more dot_generals than the fc's),
  # no select-and-scatter.
  jaxpr = lambda model: str(jax.make_jaxpr(lambda p: jax.grad(lambda q: loss(model, q)[0])(p))(variables["params"]))
  assert jaxpr(fast).count("dot_general") > jaxpr(ref).count("dot_general")
  assert "select_and_scatter_add" in jaxpr(ref) and "select_and_scatter_add" not in jaxpr(fast)
  # (Eval mode runs the same convs and pool; only BN's statistics differ, and they are not changed.)
  # Train-mode BN over 8 examples of a 1x1 map divides by a small batch std: compare relative
  # to each tensor's scale, not element-wise.
  for a, b in zip(jax.tree.leaves((logits_fast, lf, g_fast, upd_fast)),
                  jax.tree.leaves((logits_ref, lr, g_ref, upd_ref))):
    np.testing.assert_allclose(a, b, atol=2e-4 * float(np.abs(b).max()) + 1e-6)



def test_config_rejects_unknown_backend_and_conv():
  config = config_lib.base_config()
  config.backend = "cudnn"
  with pytest.raises(config_lib.ConfigError, match="backend"):
    config_lib.validate(config)
  config = config_lib.base_config()
  config.model.conv = "cudnn"
  with pytest.raises(config_lib.ConfigError, match="model.conv"):
    config_lib.validate(config)
