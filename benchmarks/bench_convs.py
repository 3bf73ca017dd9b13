r"""Per-convolution times of a ResNet-18 train step: XLA's kernels against PyTorch's, op by op.

  python -m benchmarks.bench_convs --stem=cifar --image=32 --batch=128 [--torch_channels_last]

For every distinct conv of the network (shape, stride, how many the network has) it times the
forward, the input gradient and the kernel gradient as XLA compiles them on their own (jitted
conv and its `jax.vjp`) and as PyTorch runs them (`torch.conv2d`,
`aten.convolution_backward`), median of `--steps` calls, and prints the totals weighted by count.
`--conv=auto` (default) times the convs the training step uses (jax_resnets/cpu/fast_ops.AutoConv),
`--conv=xla` plain XLA. It answers "which part of the train step is slower than torch's, and by how much" without a
profiler (XLA:CPU's profiler does not attribute the conv thunks' time).
"""
import statistics
import sys
from typing import Callable

from jax_resnets.cpu import xla_flags

xla_flags.configure()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
from absl import flags
from jax import lax

from benchmarks import bench
from jax_resnets.models import resnet
from jax_resnets.cpu import fast_ops

# Own FlagValues: jax_resnets.studies.resnet34.timing defines --batch etc. in absl's global FLAGS.
FLAGS = flags.FlagValues()
_STEM = flags.DEFINE_enum("stem", "cifar", ["imagenet", "cifar"], "ResNet stem.", flag_values=FLAGS)
_IMAGE = flags.DEFINE_integer("image", 32, "Square input size.", flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.", flag_values=FLAGS)
_WIDTH = flags.DEFINE_integer("width", 64, "Channels of layer1.", flag_values=FLAGS)
_CHANNELS_LAST = flags.DEFINE_bool("torch_channels_last", False, "torch tensors in channels_last format.", flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 7, "Timed calls per op (median).", flag_values=FLAGS)
_CONV = flags.DEFINE_enum("conv", "auto", ["auto", "xla"], "auto: the training default "
                          "(models/fast_ops.py's AutoConv); xla: plain lax.conv_general_dilated.", flag_values=FLAGS)

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_shapes(stem: str, image: int, width: int) -> list[tuple]:
  """[(map size, C_in, C_out, k, stride, count)] of ResNet-18's convs (resnet.STAGE_SIZES)."""
  if stem == "cifar":
    shapes, size = [(image, 3, width, 3, 1, 1)], image
  else:  # 7x7/2 conv then the 3x3/2 max-pool
    shapes, size = [(image, 3, width, 7, 2, 1)], image // 4
  c = width
  for i, blocks in enumerate(resnet.STAGE_SIZES[18]):
    out, s = width * 2**i, 1 if i == 0 else 2
    if s == 2 or c != out:
      shapes += [(size, c, out, 3, s, 1), (size, c, out, 1, s, 1)]
      size //= s
      shapes.append((size, out, out, 3, 1, 2 * blocks - 1))
    else:
      shapes.append((size, out, out, 3, 1, 2 * blocks))
    c = out
  return shapes


def median_ms(fn: Callable, steps: int) -> float:
  """bench.py's warm-up and timing loop for one callable: median milliseconds per call."""
  bench.warm_up({"op": fn}, 2)
  return statistics.median(bench.interleaved_times({"op": fn}, steps)["op"]) * 1e3


def jax_ops(x, k, dy, stride: int, which: str) -> list[Callable]:
  """Zero-arg callables: forward, input gradient, kernel gradient (each its own XLA program)."""
  pad = (k.shape[0] - 1) // 2
  conv_general_dilated = fast_ops.auto_conv_general_dilated if which == "auto" else lax.conv_general_dilated

  def conv(x, k):
    return conv_general_dilated(x, k, (stride,) * 2, ((pad, pad),) * 2, dimension_numbers=_NHWC)
  fwd = jax.jit(conv)
  dx = jax.jit(lambda x, k, dy: jax.vjp(lambda v: conv(v, k), x)[1](dy)[0])
  dk = jax.jit(lambda x, k, dy: jax.vjp(lambda w: conv(x, w), k)[1](dy)[0])
  return [lambda: jax.block_until_ready(fwd(x, k)), lambda: jax.block_until_ready(dx(x, k, dy)),
          lambda: jax.block_until_ready(dk(x, k, dy))]


def torch_ops(x, k, dy, stride: int, channels_last: bool) -> list[Callable]:
  import torch  # pylint: disable=g-import-not-at-top
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  xt, dyt = (torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous(memory_format=fmt) for a in (x, dy))
  kt = torch.from_numpy(np.array(k)).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
  pad = (k.shape[0] - 1) // 2

  def backward(mask):
    return lambda: torch.ops.aten.convolution_backward(dyt, xt, kt, None, (stride,) * 2, (pad,) * 2, (1, 1),
                                                        False, (0, 0), 1, mask)
  return [lambda: torch.conv2d(xt, kt, None, stride, pad), backward((True, False, False)),
          backward((False, False, True))]


def main() -> None:
  from benchmarks import bench_torch  # pylint: disable=g-import-not-at-top,unused-import  # sets OMP_WAIT_POLICY
  rng = np.random.default_rng(0)
  totals = np.zeros(6)
  print(f"ResNet-18 stem={_STEM.value} image={_IMAGE.value} batch={_BATCH.value}: ms per call, "
        f"fwd / grad_x / grad_k, ours (conv={_CONV.value}) vs torch{' channels_last' if _CHANNELS_LAST.value else ''}")
  for size, cin, cout, kk, s, count in conv_shapes(_STEM.value, _IMAGE.value, _WIDTH.value):
    x = rng.normal(size=(_BATCH.value, size, size, cin)).astype(np.float32)
    dy = rng.normal(size=(_BATCH.value, -(-size // s), -(-size // s), cout)).astype(np.float32)
    k = rng.normal(size=(kk, kk, cin, cout)).astype(np.float32)
    ours = [median_ms(f, _STEPS.value) for f in jax_ops(jax.device_put(x), jax.device_put(k), jax.device_put(dy), s, _CONV.value)]
    theirs = [median_ms(f, _STEPS.value) for f in torch_ops(x, k, dy, s, _CHANNELS_LAST.value)]
    totals += count * np.array(ours + theirs)
    print(f"{size:3d}px {cin:4d}->{cout:<4d} {kk}x{kk}/{s} x{count}:  ours {ours[0]:6.1f} {ours[1]:6.1f} "
          f"{ours[2]:6.1f}   torch {theirs[0]:6.1f} {theirs[1]:6.1f} {theirs[2]:6.1f}", flush=True)
  print(f"total per step (x count): ours {totals[:3].round(0)} = {totals[:3].sum():.0f} ms   "
        f"torch {totals[3:].round(0)} = {totals[3:].sum():.0f} ms")


if __name__ == "__main__":
  FLAGS(sys.argv)
  main()
