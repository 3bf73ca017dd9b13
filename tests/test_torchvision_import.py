"""torchvision checkpoint import: logits and BN statistics equal torch's; clear failures."""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from jax_resnets.models import resnet
from jax_resnets.models import torchvision_import as tvi
import torch_resnet

WIDTH = 8


def torch_model(depth, num_classes=10, disabled_skips=(), seed=0):
  torch.manual_seed(seed)
  model = torch_resnet.ResNet(depth, num_classes, WIDTH, disabled_skips=disabled_skips)
  return torch_resnet.randomize_(model, seed)


def numpy_state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def abstract_variables(model) -> dict:
  """Shapes only: `match` fills every leaf, and a real init costs seconds per model."""
  return dict(jax.eval_shape(model.init, jax.random.key(1), jnp.zeros((1, 32, 32, 3))))


def flax_variables(depth, sd, num_classes=10, disabled_skips=()):
  model = resnet.ResNet(depth=depth, num_classes=num_classes, width=WIDTH, disabled_skips=disabled_skips)
  variables, report = tvi.match(tvi.torch_to_flax(sd), abstract_variables(model), disabled_skips)
  return model, variables, report


def images(seed=0, n=4, size=32):
  return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def flax_logits(model, variables, x, train=False):
  """NCHW numpy -> logits (and BN updates in train mode), jitted."""
  fn = jax.jit(lambda v, x: model.apply(v, x, train=train, mutable=["batch_stats"] if train else False))
  return fn(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))


def torch_logits(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("depth,fmt", [(18, "pth"), (50, "safetensors")])
def test_eval_logits_match_torch(depth, fmt, tmp_path):
  tmodel = torch_model(depth).eval()
  path = str(tmp_path / f"resnet{depth}.{fmt}")
  if fmt == "pth":
    torch.save(tmodel.state_dict(), path)
  else:
    save_file(numpy_state_dict(tmodel), path)
  model = resnet.ResNet(depth=depth, num_classes=10, width=WIDTH)
  template = abstract_variables(model)
  variables, report = tvi.match(tvi.load(path, depth), template)
  assert report["loaded"] == len(jax.tree.leaves(template)) and not report["head_reinitialised"]
  x = images()
  logits, _ = flax_logits(model, variables, x)
  expected = torch_logits(tmodel, x)
  assert np.abs(expected).max() > 0.1  # Not trivially zero.
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("depth", [18, 50])
def test_batch_stats_after_one_train_step_match_torch(depth):
  """torch momentum 0.1 == flax momentum 0.9, and the running variance averages the unbiased
  batch variance in both (resnet.BatchNorm). 64 px inputs: with 32 px, layer4's BN of a ResNet-50 averages only 4 values and flax's
  one-pass (fast) variance differs from torch's by ~3e-3 in the logits."""
  tmodel = torch_model(depth).train()
  sd_before = numpy_state_dict(tmodel)
  model, variables, _ = flax_variables(depth, sd_before)
  x = images(1, size=64)
  with torch.no_grad():
    expected_logits = tmodel(torch.from_numpy(x)).numpy()
  (logits, _), updates = flax_logits(model, variables, x, train=True)
  np.testing.assert_allclose(np.asarray(logits), expected_logits, atol=1e-4, rtol=1e-4)
  sd_after = numpy_state_dict(tmodel)
  got = tvi.to_torchvision({"batch_stats": updates["batch_stats"]})
  for name, value in got.items():
    np.testing.assert_allclose(value, sd_after[name], atol=1e-5, rtol=1e-5, err_msg=name)
    assert not np.allclose(value, sd_before[name]), name  # The statistics did move.


def test_disabled_skips_drop_their_downsample():
  skips = ("layer3.0", "layer4.1")
  tmodel = torch_model(18, disabled_skips=skips).eval()
  model, variables, report = flax_variables(18, numpy_state_dict(tmodel), disabled_skips=skips)
  assert report["skipped"] == ["layer3.0.downsample.0.weight", "layer3.0.downsample.1.bias",
                               "layer3.0.downsample.1.running_mean", "layer3.0.downsample.1.running_var",
                               "layer3.0.downsample.1.weight"]
  x = images(2)
  logits, _ = flax_logits(model, variables, x)
  np.testing.assert_allclose(np.asarray(logits), torch_logits(tmodel, x), atol=1e-4, rtol=1e-4)


def test_head_with_other_class_count_is_reinitialised():
  sd = numpy_state_dict(torch_model(18, num_classes=7))
  model = resnet.ResNet(depth=18, num_classes=10, width=WIDTH)
  template = abstract_variables(model)
  template["params"]["fc"] = {"kernel": jnp.ones((8 * WIDTH, 10)), "bias": jnp.zeros(10)}  # "fresh init"
  variables, report = tvi.match(tvi.torch_to_flax(sd), template)
  assert report["head_reinitialised"]
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], template["params"]["fc"]["kernel"])
  np.testing.assert_array_equal(variables["params"]["layer4"]["1"]["conv2"]["kernel"],
                                sd["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))


def test_mismatches_fail_naming_the_tensor():
  sd = numpy_state_dict(torch_model(18))
  wrong_width = resnet.ResNet(depth=18, num_classes=10, width=4)
  template = abstract_variables(wrong_width)
  with pytest.raises(tvi.WeightsError, match=r"'bn1.bias' has shape \(8,\) .* needs \(4,\)"):
    tvi.match(tvi.torch_to_flax(sd), template)
  template = abstract_variables(resnet.ResNet(depth=18, num_classes=10, width=WIDTH))
  bad = {**sd, "layer2.0.conv1.weight": np.zeros((16, 8, 1, 1), np.float32)}
  with pytest.raises(tvi.WeightsError, match=r"'layer2.0.conv1.weight' has shape \(16, 8, 1, 1\) .* \(16, 8, 3, 3\)"):
    tvi.match(tvi.torch_to_flax(bad), template)
  deeper = resnet.ResNet(depth=34, num_classes=10, width=WIDTH)
  template = abstract_variables(deeper)
  with pytest.raises(tvi.WeightsError, match=r"no tensor 'layer1.2.bn1.bias'"):
    tvi.match(tvi.torch_to_flax(sd), template)
  sd["layer1.0.extra.weight"] = np.zeros((3,), np.float32)
  template = abstract_variables(resnet.ResNet(depth=18, num_classes=10, width=WIDTH))
  with pytest.raises(tvi.WeightsError, match=r"unexpected tensor 'layer1.0.extra.weight'"):
    tvi.match(tvi.torch_to_flax(sd), template)


def test_missing_file_names_the_torchvision_file(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_RESNETS_WEIGHTS", str(tmp_path))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError) as e:
    tvi.load("resnet152-394f9c45.pth", depth=152)
  msg = str(e.value)
  assert "\n" not in msg and "resnet152-394f9c45.pth or resnet152-f82ba261.pth" in msg
  assert str(tmp_path) in msg and "JAX_RESNETS_WEIGHTS" in msg


def test_bare_name_is_found_in_weights_dir_and_cached_as_orbax(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_RESNETS_WEIGHTS", str(tmp_path))
  sd = numpy_state_dict(torch_model(18))
  save_file(sd, str(tmp_path / "r18.safetensors"))
  first = tvi.load("r18.safetensors", 18)
  assert os.path.isdir(tmp_path / "r18.safetensors.orbax")
  monkeypatch.setattr(tvi, "read_state_dict", lambda path: pytest.fail("cache not used"))
  second = tvi.load("r18.safetensors", 18)
  assert first.keys() == second.keys()
  for k in first:
    np.testing.assert_array_equal(first[k], second[k])
  back = tvi.to_torchvision(jax.tree.map(np.asarray, flax.traverse_util.unflatten_dict(second)))
  assert back.keys() == {k for k in sd if not k.endswith("num_batches_tracked")}
  for k, v in back.items():
    np.testing.assert_array_equal(v, sd[k])
