r"""Check the handmade conv against `lax.conv_general_dilated`: outputs and both gradients.

  python -m jax_resnets.studies.resnet34.check_conv                       # the study's shapes
  python -m jax_resnets.studies.resnet34.check_conv --width=16 --batch=4 --image_size=16
  python -m jax_resnets.studies.resnet34.check_conv --shape=32,32,64,3,128,2 --shape=8,8,256,1,512,2

The study replaces every convolution of ResNet-34 by an im2col + matmul written by hand
(handmade_conv.py); this command is the user-facing proof that it computes the same thing.
By default it checks each distinct conv of the CIFAR-stem ResNet-34 (3x3 stride 1 and 2,
the 1x1 stride-2 downsamples, at each stage's channel count and map size). Per shape, on
random inputs, it prints the max abs difference of the output, of d/d input and of
d/d kernel (the vector-Jacobian product with one random cotangent), both sides at
`Precision.HIGHEST`, and exits 1 if any exceeds `--tolerance` (default 1e-4).

Scales are those of a trained network, so an absolute tolerance means something: unit
normal inputs, He-normal kernels (std sqrt(2 / fan_in)), and a cotangent scaled by
1/sqrt(output pixels), which keeps outputs and both gradients O(1).
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from jax_resnets.studies.resnet34 import handmade_conv

TOLERANCE = 1e-4
QUANTITIES = ("output", "d_input", "d_kernel")


@dataclasses.dataclass(frozen=True)
class Shape:
  """One conv: NHWC input [batch, height, width, in_ch], k x k kernel, stride; torch's padding k//2."""
  batch: int
  height: int
  width: int
  in_ch: int
  kernel: int
  out_ch: int
  stride: int

  @property
  def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
    p = (self.kernel - 1) // 2
    return ((p, p), (p, p))

  def __str__(self) -> str:
    return (f"{self.batch}x{self.height}x{self.width}x{self.in_ch} {self.kernel}x{self.kernel}"
            f"->{self.out_ch} s{self.stride}")


def resnet34_shapes(width: int = 64, batch: int = 2, image_size: int = 32) -> list[Shape]:
  """The distinct convs of ResNet-34 with the CIFAR stem (no max pool: layer1 runs at full size)."""
  shapes, size = [Shape(batch, image_size, image_size, 3, 3, width, 1)], image_size  # stem conv1
  for stage, mult in enumerate((1, 2, 4, 8)):
    ch = width * mult
    if stage:  # First block: 3x3 stride 2 and the 1x1 stride-2 downsample, from the previous width.
      shapes += [Shape(batch, size, size, ch // 2, 3, ch, 2), Shape(batch, size, size, ch // 2, 1, ch, 2)]
      size = -(-size // 2)
    shapes.append(Shape(batch, size, size, ch, 3, ch, 1))
  return shapes


def _reference(x, kernel, shape: Shape):
  return lax.conv_general_dilated(x, kernel, (shape.stride,) * 2, shape.padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)


def _handmade(x, kernel, shape: Shape):
  # Looked up at call time (not bound at import) so a test can substitute a wrong conv.
  return handmade_conv.conv2d(x, kernel, shape.stride, shape.padding, precision=lax.Precision.HIGHEST)


def _value_and_grads(conv, shape: Shape, x, kernel, cotangent):
  y, vjp = jax.vjp(lambda a, b: conv(a, b, shape), x, kernel)
  return (y, *vjp(cotangent))


def _inputs(shape: Shape, seed: int):
  kx, kk, kc = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (shape.batch, shape.height, shape.width, shape.in_ch), jnp.float32)
  fan_in = shape.kernel * shape.kernel * shape.in_ch
  kernel = jax.random.normal(kk, (shape.kernel, shape.kernel, shape.in_ch, shape.out_ch)) * np.sqrt(2 / fan_in)
  out = jax.eval_shape(lambda a, b: _reference(a, b, shape), x, kernel).shape
  cotangent = jax.random.normal(kc, out) / np.sqrt(np.prod(out[:3]))
  return x, kernel, cotangent


def check(shape: Shape, seed: int = 0) -> dict[str, float]:
  """{quantity: max abs difference} between the handmade conv and lax, for one shape."""
  args = _inputs(shape, seed)
  want = jax.jit(lambda *a: _value_and_grads(_reference, shape, *a))(*args)
  got = jax.jit(lambda *a: _value_and_grads(_handmade, shape, *a))(*args)
  diffs = {}
  for name, g, w in zip(QUANTITIES, got, want):
    if g.shape != w.shape:  # A wrong conv may not even have the right shape: infinitely off.
      diffs[name] = float("inf")
    else:
      diffs[name] = float(jnp.max(jnp.abs(g - w)))
  return diffs


def run(shapes: list[Shape], tolerance: float = TOLERANCE, seed: int = 0) -> int:
  """Prints one table row per shape; returns the exit status (0: all within tolerance, 1: not)."""
  print(f"handmade conv vs lax.conv_general_dilated (Precision.HIGHEST, float32, "
        f"{jax.devices()[0].platform}); max abs difference, tolerance {tolerance:g}")
  print("| shape (NHWC, kernel->out, stride) | output | d/d input | d/d kernel | ok |")
  print("|---|---|---|---|---|")
  failed = 0
  for shape in shapes:
    diffs = check(shape, seed)
    ok = all(d <= tolerance for d in diffs.values())  # NaN compares False: fails.
    failed += not ok
    cells = " | ".join(f"{diffs[q]:.2e}" for q in QUANTITIES)
    print(f"| {shape} | {cells} | {'ok' if ok else 'FAIL'} |", flush=True)
  print(f"{len(shapes) - failed}/{len(shapes)} shapes within {tolerance:g}"
        + (f"; {failed} FAILED" if failed else ""))
  return 1 if failed else 0


def parse_shape(text: str, batch: int) -> Shape:
  """`H,W,C,K,F,S` (input height, width, channels, kernel side, out channels, stride) -> Shape."""
  try:
    h, w, c, k, f, s = (int(v) for v in text.split(","))
  except ValueError:
    raise app.UsageError(f"--shape={text!r}: expected 6 integers H,W,C,K,F,S, e.g. 32,32,64,3,128,2") from None
  return Shape(batch, h, w, c, k, f, s)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs (timing.py, imported with it in tests, has --width too)."""
  flags.DEFINE_multi_string("shape", [], "H,W,C,K,F,S: input height, width, channels, kernel side, output "
                            "channels, stride (repeatable); default: the CIFAR-stem ResNet-34's convs.")
  flags.DEFINE_integer("width", 64, "Default shapes: channels of layer1 (64 = ResNet-34).")
  flags.DEFINE_integer("image_size", 32, "Default shapes: input image side (CIFAR: 32).")
  flags.DEFINE_integer("batch", 2, "Batch size of every shape.")
  flags.DEFINE_float("tolerance", TOLERANCE, "Largest allowed max abs difference.")
  flags.DEFINE_integer("seed", 0, "Random inputs' seed.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  shapes = ([parse_shape(s, FLAGS.batch) for s in FLAGS.shape] if FLAGS.shape
            else resnet34_shapes(FLAGS.width, FLAGS.batch, FLAGS.image_size))
  sys.exit(run(shapes, FLAGS.tolerance, FLAGS.seed))


if __name__ == "__main__":
  define_flags()
  app.run(main)
