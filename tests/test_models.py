"""ResNet family: torchvision parameter counts and names, stems, disabled skips, dtype."""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_resnets.models import resnet

TORCHVISION_COUNTS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def abstract_params(model, size=224):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]


@pytest.mark.parametrize("depth", sorted(TORCHVISION_COUNTS))
def test_parameter_count_equals_torchvision(depth):
  params = abstract_params(resnet.ResNet(depth=depth, num_classes=1000))
  assert sum(x.size for x in jax.tree.leaves(params)) == TORCHVISION_COUNTS[depth]


def test_parameter_names_follow_torchvision():
  params = abstract_params(resnet.ResNet(depth=50, num_classes=1000))
  names = {"/".join(k) for k in flax.traverse_util.flatten_dict(params)}
  for expected in ("conv1/kernel", "bn1/scale", "layer1/0/conv3/kernel", "layer2/0/downsample/0/kernel",
                   "layer2/0/downsample/1/bias", "layer4/2/bn3/scale", "fc/kernel", "fc/bias"):
    assert expected in names
  # Bottleneck v1.5: the stride sits on the 3x3 conv, so layer2's 1x1 conv1 keeps the input size.
  assert params["layer2"]["0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)


@pytest.mark.parametrize("stem,size,expected_hw", [("imagenet", 64, 2), ("cifar", 32, 4)])
def test_stems_downsample_as_expected(stem, size, expected_hw):
  model = resnet.ResNet(depth=18, num_classes=10, stem=stem, width=4)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)  # Shapes only: no op runs.
  _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=lambda m, _: m.name == "layer4"),
                            variables, x)
  fmap = state["intermediates"]["layer4"]["__call__"][0]
  assert fmap.shape == (2, expected_hw, expected_hw, 32)


def test_features_returned_separately_and_headless_model():
  x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=4)
  variables = model.init(jax.random.key(0), x)
  logits, out = model.apply(variables, x)
  assert logits.shape == (3, 10) and out["features"].shape == (3, 32)
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(logits, out["features"] @ fc["kernel"] + fc["bias"], rtol=1e-5, atol=1e-5)
  headless = resnet.ResNet(depth=18, num_classes=0, stem="cifar", width=4)
  none_logits, out2 = headless.apply(variables, x)
  assert none_logits is None
  np.testing.assert_array_equal(out2["features"], out["features"])


def test_disabled_skips_change_the_function():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  full = resnet.ResNet(depth=18, num_classes=5, stem="cifar", width=4)
  cut = resnet.ResNet(depth=18, num_classes=5, stem="cifar", width=4, disabled_skips=("layer3.0", "layer4.1"))
  variables = full.init(jax.random.key(0), x)
  cut_params = abstract_params(cut, 32)
  # The disabled projection shortcut is not created; everything else has the same shapes.
  assert "downsample" in variables["params"]["layer3"]["0"]
  assert "downsample" not in cut_params["layer3"]["0"]
  # Same weights, different function: the residual adds are gone.
  out_full, _ = full.apply(variables, x)
  out_cut, _ = cut.apply(variables, x)
  assert not np.allclose(out_full, out_cut, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=4, dtype=jnp.bfloat16)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  logits, _ = model.apply(variables, x)
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_block_names_cover_every_block():
  assert len(resnet.block_names(34)) == sum(resnet.STAGE_SIZES[34])
  assert resnet.block_names(18)[:3] == ["layer1.0", "layer1.1", "layer2.0"]
