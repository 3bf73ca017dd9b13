"""HandmadeConv (im2col + one matmul) against lax.conv_general_dilated and nn.Conv."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jax_resnets import config_lib
from jax_resnets.models import registry, resnet
from jax_resnets.studies.resnet34 import handmade_conv

# (input NHWC, kernel hw, in-group channels -> features, strides, padding, dilation, groups)
CASES = [
    ((2, 9, 9, 3), (3, 3), 4, (1, 1), "SAME", (1, 1), 1),
    ((2, 9, 9, 3), (3, 3), 4, (2, 2), "SAME", (1, 1), 1),
    ((1, 8, 10, 4), (3, 3), 6, (2, 1), "SAME", (1, 1), 2),
    ((2, 8, 8, 4), (2, 2), 4, (2, 2), "SAME", (1, 1), 1),  # even kernel: asymmetric SAME pads
    ((2, 7, 9, 3), (3, 2), 5, (1, 2), "VALID", (1, 1), 1),
    ((1, 11, 11, 6), (3, 3), 6, (1, 1), "VALID", (2, 2), 3),
    ((2, 10, 10, 4), (3, 3), 8, (2, 2), ((1, 1), (1, 1)), (1, 1), 1),  # ResNet's pad(3)
    ((1, 12, 12, 3), (7, 7), 4, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),  # ImageNet stem
    ((2, 9, 9, 4), (3, 3), 4, (1, 1), ((2, 0), (1, 3)), (2, 1), 4),  # depthwise, asymmetric
    ((2, 8, 8, 4), (1, 1), 8, (2, 2), "VALID", (1, 1), 1),  # downsample
    ((1, 8, 8, 2), (3, 3), 3, (1, 1), ((-1, 2), (0, 1)), (1, 1), 1),  # negative pad crops
]


def _reference(x, kernel, strides, padding, dilation, groups):
  return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def _inputs(case, seed=0):
  shape, ksize, features, _, _, _, groups = case
  kx, kk = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape, jnp.float32)
  kernel = jax.random.normal(kk, (*ksize, shape[-1] // groups, features), jnp.float32)
  return x, kernel


def _value_and_grads(conv, x, kernel, probe):
  """conv(x, kernel) and the gradients of <conv(x, kernel), probe> w.r.t. x and kernel."""
  y, vjp = jax.vjp(conv, x, kernel)
  return (y, *vjp(probe))


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv2d_values_and_gradients_match_lax(case):
  _, _, _, strides, padding, dilation, groups = case
  x, kernel = _inputs(case)
  ref = functools.partial(_reference, strides=strides, padding=padding, dilation=dilation, groups=groups)
  ours = functools.partial(handmade_conv.conv2d, strides=strides, padding=padding, dilation=dilation,
                           groups=groups, precision=lax.Precision.HIGHEST)
  probe = jax.random.normal(jax.random.key(1), jax.eval_shape(ref, x, kernel).shape)
  want = jax.jit(functools.partial(_value_and_grads, ref))(x, kernel, probe)
  got = jax.jit(functools.partial(_value_and_grads, ours))(x, kernel, probe)
  for name, g, w in zip(("output", "d/d input", "d/d kernel"), got, want):
    assert g.shape == w.shape, name
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=name)
  assert np.abs(want[0]).max() > 0.1  # not trivially zero


@pytest.mark.parametrize("use_bias", [False, True])
def test_module_matches_nn_conv_with_same_params(use_bias):
  kwargs = dict(features=6, kernel_size=(3, 3), strides=2, padding="SAME", feature_group_count=2,
                use_bias=use_bias, bias_init=nn.initializers.normal(1.0))
  x = jax.random.normal(jax.random.key(2), (3, 9, 9, 4))
  params = nn.Conv(**kwargs).init(jax.random.key(3), x)
  ours_params = handmade_conv.HandmadeConv(**kwargs).init(jax.random.key(3), x)
  assert jax.tree.map(jnp.shape, ours_params) == jax.tree.map(jnp.shape, params)
  want = nn.Conv(**kwargs, precision=lax.Precision.HIGHEST).apply(params, x)
  got = handmade_conv.HandmadeConv(**kwargs, precision=lax.Precision.HIGHEST).apply(params, x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Unbatched input works as in nn.Conv.
  np.testing.assert_allclose(handmade_conv.HandmadeConv(**kwargs).apply(params, x[0]), got[0], atol=1e-5)


def test_bad_arguments_name_the_problem():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="feature_group_count"):
    handmade_conv.HandmadeConv(4, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="padding"):
    handmade_conv.conv2d(x, jnp.zeros((3, 3, 3, 2)), padding="CIRCULAR")
  with pytest.raises(ValueError, match="larger than"):
    handmade_conv.conv2d(x, jnp.zeros((5, 5, 3, 2)), padding="VALID")


def _random_variables(abstract, seed=0):
  """He-normal kernels, BN stats/affine near identity, as numpy (cheaper than compiling init)."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = jax.tree_util.keystr(path)
    noise = rng.normal(size=s.shape).astype(np.float32)
    if len(s.shape) > 1:
      return noise * np.float32(np.sqrt(2.0 / np.prod(s.shape[:-1])))
    return (1.0 + 0.1 * np.abs(noise)) if name.endswith(("['var']", "['scale']")) else 0.1 * noise

  return jax.tree_util.tree_map_with_path(leaf, abstract)


@pytest.mark.parametrize("depth,stem,size", [(18, "imagenet", 32)])
def test_resnet_with_handmade_convs_gives_same_logits(depth, stem, size):
  x = jax.random.normal(jax.random.key(4), (2, size, size, 3))
  standard = resnet.ResNet(depth, num_classes=5, stem=stem, width=4)
  handmade = resnet.ResNet(depth, num_classes=5, stem=stem, width=4, conv=handmade_conv.HandmadeConv)
  abstract = jax.eval_shape(standard.init, jax.random.key(5), x)
  assert jax.eval_shape(handmade.init, jax.random.key(5), x) == abstract  # same names, shapes, dtypes
  variables = _random_variables(abstract)
  with jax.default_matmul_precision("highest"):
    want, _ = jax.jit(standard.apply)(variables, x)
    got, _ = jax.jit(handmade.apply)(variables, x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert np.abs(want[0] - want[1]).max() > 1e-2  # the logits depend on the input


def test_config_selects_the_conv():
  config = config_lib.base_config()
  # "default": the backend's conv (config.backend picks how it runs); "handmade": the study's im2col.
  assert config.model.get("conv", "default") == "default"
  config.model.update(depth=18, stem="cifar", width=4)
  config_lib.validate(config)
  default = registry.build_model(config.model, num_classes=10)
  assert default.conv is not handmade_conv.HandmadeConv
  config.model.conv = "default"
  config_lib.validate(config)
  assert registry.build_model(config.model, num_classes=10).conv is default.conv
  config.model.conv = "handmade"
  config_lib.validate(config)
  model = registry.build_model(config.model, num_classes=10)
  assert model.conv is handmade_conv.HandmadeConv
  for bad in ("winograd", "auto", "xla"):  # "auto"/"xla" were conv values once; now config.backend's.
    config.model.conv = bad
    with pytest.raises(config_lib.ConfigError, match="model.conv"):
      config_lib.validate(config)
