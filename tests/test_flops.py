"""Params & FLOPs from XLA cost analysis, checked against counts derived by hand."""
import jax
import ml_collections
import numpy as np

from jax_resnets.evaluation import flops
from jax_resnets.models import registry

CFG = dict(name="resnet", depth=18, stem="cifar", width=4, dtype="float32")
SIZE = 16  # cifar stem: layer1 16x16, layer2 8x8, layer3 4x4, layer4 2x2.


def taps(k: int, stride: int, out: int) -> int:
  """Kernel taps that land inside the (zero-padded by k // 2) input, summed over one axis."""
  n = out * stride
  return sum(1 for o in range(out) for j in range(k) if 0 <= o * stride - k // 2 + j < n)


def conv_and_dense_macs(params, size: int) -> int:
  """Multiply-adds of every conv (taps on padding excluded, as XLA counts) and the fc."""
  total = 0
  for path, v in jax.tree_util.tree_leaves_with_path(params):
    names = [p.key for p in path]
    if names[-1] != "kernel":
      continue
    if v.ndim == 2:
      total += int(np.prod(v.shape))
      continue
    stage = int(names[0][-1]) if names[0].startswith("layer") else 1
    out = size // 2 ** (stage - 1)
    stride = 2 if stage > 1 and names[1] == "0" and names[2] in ("conv1", "downsample") else 1
    total += taps(v.shape[0], stride, out) * taps(v.shape[1], stride, out) * v.shape[2] * v.shape[3]
  return total


def test_flops_match_hand_count_and_skip_variants():
  model = registry.build_model(ml_collections.ConfigDict(dict(CFG, disabled_skips=[])), 10)
  params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3), np.float32))["params"]
  macs = conv_and_dense_macs(params, SIZE)
  base = flops.analyze_config(dict(CFG, disabled_skips=[]), 10, SIZE)
  assert base["params"] == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert base["macs"] == base["flops"] / 2
  # Convs and matmuls are 2 FLOPs per multiply-add; BN/ReLU/adds/pooling add a little.
  assert 2 * macs <= base["flops"] <= 1.1 * 2 * macs, (base["flops"], 2 * macs)

  no_proj = flops.analyze_config(dict(CFG, disabled_skips=["layer3.0"]), 10, SIZE)
  downsample_macs = 4 * 4 * 8 * 16  # 1x1 stride-2 conv 8 -> 16 channels on a 4x4 output.
  assert base["params"] - no_proj["params"] == 8 * 16 + 2 * 16  # conv + BN scale/bias.
  assert base["flops"] - no_proj["flops"] >= 2 * downsample_macs

  no_identity = flops.analyze_config(dict(CFG, disabled_skips=["layer4.1"]), 10, SIZE)
  assert no_identity["params"] == base["params"]  # An identity skip has no parameters...
  assert 0 < base["flops"] - no_identity["flops"] < 2 * downsample_macs  # ...only the add.

  table = flops.variants_table(CFG, 10, SIZE, ["layer3.0", "layer4.1"])
  assert f"| disabled: layer3.0, layer4.1 | {base['params'] - 160:,} |" in table and "| -160 |" in table
