"""A 2-D convolution written from scratch: im2col patches + one (grouped) matmul.

`HandmadeConv` has the `nn.Conv` call signature the ResNets use (features, kernel_size,
strides, padding, kernel_dilation, feature_group_count, use_bias, dtype, kernel_init) and
the same parameters (`kernel` in HWIO layout, `bias`), so `ResNet(conv=HandmadeConv)` runs
with the parameters of a standard ResNet, and `--config.model.conv=handmade` selects it.

The computation:
  1. pad the input (`lax.pad`, so negative explicit padding crops as in lax);
  2. gather the kh*kw shifted, strided (and dilated) views of the input: the patches
     [N, Ho, Wo, kh*kw, C];
  3. one matmul, batched over feature groups (a single einsum / dot_general):
     patches [N*Ho*Wo, kh*kw, G, C/G] x kernel [kh*kw, C/G, G, F/G] -> [N*Ho*Wo, G, F/G],
     reshaped to [N, Ho, Wo, F].
Output channel `f` belongs to group `f // (F/G)`, as in `lax.conv_general_dilated`.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jax_resnets.models.padding import Padding, explicit_padding

IntOrPair = int | Sequence[int]


def _pair(x: IntOrPair | None) -> tuple[int, int]:
  if x is None:
    return (1, 1)
  if isinstance(x, int):
    return (x, x)
  x = tuple(x)
  if len(x) != 2:
    raise ValueError(f"HandmadeConv is 2-D: expected 2 values, got {x!r}")
  return (int(x[0]), int(x[1]))


def im2col(x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
           dilation: tuple[int, int]) -> jax.Array:
  """Padded [N, H, W, C] -> patches [N, Ho, Wo, kh*kw, C], window offsets in (i, j) raster order."""
  n, h, w, c = x.shape
  (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
  ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
  if ho <= 0 or wo <= 0:
    raise ValueError(f"HandmadeConv: window {kernel_size} (dilation {dilation}) larger than the "
                     f"padded input {(h, w)}")
  views = [
      lax.slice(x, (0, i * dh, j * dw, 0), (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
                (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)
  ]
  return jnp.stack(views, axis=3)


def conv2d(x: jax.Array, kernel: jax.Array, strides: IntOrPair = 1, padding: Padding = "SAME",
           dilation: IntOrPair = 1, groups: int = 1, precision=None) -> jax.Array:
  """NHWC input, HWIO kernel ([kh, kw, C/groups, F]) -> NHWC output, via im2col + one matmul."""
  kh, kw, cg, f = kernel.shape
  c = x.shape[-1]
  if c != cg * groups or f % groups:
    raise ValueError(f"HandmadeConv: {c} input / {f} output channels do not split into {groups} groups "
                     f"of kernel {kernel.shape}")
  strides, dilation = _pair(strides), _pair(dilation)
  pads = explicit_padding(padding, x.shape[1:3], (kh, kw), strides, dilation)
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *[(lo, hi, 0) for lo, hi in pads], (0, 0, 0)])
  patches = im2col(x, (kh, kw), strides, dilation)  # [N, Ho, Wo, kh*kw, C]
  n, ho, wo = patches.shape[:3]
  # Rows: output pixels; contracted: window offset p and in-group channel c; batched: group g.
  patches = patches.reshape(n * ho * wo, kh * kw, groups, cg)  # channels are group-major
  k = kernel.reshape(kh * kw, cg, groups, f // groups)  # output channels are group-major
  y = jnp.einsum("mpgc,pcgf->mgf", patches, k, precision=precision)
  return y.reshape(n, ho, wo, f)


class HandmadeConv(nn.Module):
  """Drop-in for the `nn.Conv` uses in ResNet (2-D, NHWC), computed by `conv2d`.

  Attributes mirror `nn.Conv`: features, kernel_size, strides, padding ('SAME', 'VALID',
  an int, ints or (lo, hi) pairs per spatial dim), kernel_dilation, feature_group_count,
  use_bias, dtype (compute), param_dtype, precision, kernel_init, bias_init.
  """
  features: int
  kernel_size: IntOrPair
  strides: IntOrPair | None = 1
  padding: Padding = "SAME"
  kernel_dilation: IntOrPair | None = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel_size = _pair(self.kernel_size)
    batch_shape = inputs.shape[:-3]
    x = inputs.reshape(-1, *inputs.shape[-3:])
    groups = self.feature_group_count
    if x.shape[-1] % groups:
      raise ValueError(f"HandmadeConv: {x.shape[-1]} input channels not divisible by "
                       f"feature_group_count={groups}")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1] // groups, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, self.kernel_dilation, groups, self.precision)
    if bias is not None:
      y = y + bias
    return y.reshape(*batch_shape, *y.shape[1:])
