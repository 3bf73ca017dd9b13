"""PhiNet (Paissan et al. 2022, "PhiNets: a scalable backbone for low-power AI at the edge",
doi:10.1145/3510832) in flax.linen, following the micromind reference implementation.

Structure (NHWC): a separable stem conv (3x3 depthwise stride `first_conv_stride` on the
zero-padded image, 1x1 pointwise to 48*alpha, BN, act), block 1 (no expansion, 24*alpha),
then inverted-residual blocks 1..num_layers: 1x1 expand (x t(block)), 3x3 depthwise
(stride 2 at blocks 1, 3 and every block in `downsampling_layers`, which also double the
width), squeeze-excitation, 1x1 project, residual add when shapes allow. Widths pass
through `make_divisible(. , divisor)`. The expansion factor moves linearly from t_zero
(block 0) to t_zero * beta (last block). `act` is hard-swish (or ReLU6 with h_swish=False).

Differences from micromind, on purpose: no Dropout2d inside blocks (the core train step
does not thread dropout RNGs; micromind's rate is 0.05), and BN momentum 0.9 in flax's
convention (micromind passes the Keras-style 0.999 to torch, where it means "keep 0.1%
of the old running statistics").
Returns `(logits, {'features': pooled})` like `resnet.ResNet`; num_classes=0: no head.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Hard-coded in micromind's PhiNet.
FIRST_CONV_FILTERS, B1_FILTERS, B2_FILTERS = 48, 24, 48


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
  """Rounds channels to a multiple of `divisor`, never more than 10% down (MobileNet rule)."""
  min_value = divisor if min_value is None else min_value
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


def expansion_factor(t_zero: float, beta: float, block_id: int, num_layers: int) -> float:
  """t(i) = t_zero * beta * i / L + t_zero * (L - i) / L (the paper's shape factor)."""
  return t_zero * beta * block_id / num_layers + t_zero * (num_layers - block_id) / num_layers


def relu6(x: jax.Array) -> jax.Array:
  return jnp.clip(x, 0.0, 6.0)


class SqueezeExcite(nn.Module):
  """Global pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate (no biases)."""
  reduced: int
  act: Any

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.act(nn.Conv(self.reduced, (1, 1), use_bias=False, dtype=x.dtype, name="se_conv")(s))
    s = nn.Conv(x.shape[-1], (1, 1), use_bias=False, dtype=x.dtype, name="se_conv2")(s)
    return x * nn.sigmoid(s)


class PhiNetBlock(nn.Module):
  """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ skip)."""
  filters: int
  expansion: float
  strides: int
  has_se: bool
  expand: bool  # micromind: block_id > 0.
  divisor: int
  norm: Any
  act: Any
  dtype: Any = jnp.float32
  kernel_size: int = 3
  residual: bool = True

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    inputs, channels = x, x.shape[-1]
    if self.expand:
      channels = make_divisible(int(self.expansion * channels), self.divisor)
      x = self.act(self.norm(name="bn1")(conv(channels, (1, 1), name="expand")(x)))
    # micromind pads a strided depthwise conv by 1 on every side, whatever its kernel size.
    k, pad = self.kernel_size, (self.kernel_size // 2 if self.strides == 1 else 1)
    x = conv(channels, (k, k), (self.strides, self.strides), padding=((pad, pad), (pad, pad)),
             feature_group_count=channels, name="depthwise")(x)
    x = self.act(self.norm(name="bn_dw")(x))
    if self.has_se:
      x = SqueezeExcite(make_divisible(max(1, int(channels / 6)), self.divisor), self.act, name="se")(x)
    x = self.norm(name="bn2")(conv(self.filters, (1, 1), name="project")(x))
    if self.residual and self.strides == 1 and inputs.shape[-1] == self.filters:
      x = x + inputs
    return x


class PhiNet(nn.Module):
  """PhiNet backbone + optional linear head (micromind's `include_top`)."""
  num_classes: int = 100
  alpha: float = 3.0
  beta: float = 1.0
  t_zero: float = 5.0
  num_layers: int = 7
  downsampling_layers: Sequence[int] = (5, 7)
  divisor: int = 8
  first_conv_stride: int = 2
  squeeze_excite: bool = True
  h_swish: bool = True
  residuals: bool = True
  conv5_percent: float = 0.0  # Share of the last blocks that use 5x5 depthwise kernels.
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9

  def width(self, filters: int) -> int:
    return make_divisible(int(filters * self.alpha), self.divisor)

  def blocks(self) -> list[dict]:
    """Per block: filters, expansion, strides, SE, kernel size (blocks 1..num_layers)."""
    out, filters = [], B2_FILTERS
    for i in range(1, self.num_layers + 1):
      if i <= 3:
        f, s = (B1_FILTERS if i < 3 else B2_FILTERS), (2 if i in (1, 3) else 1)
      else:
        filters, s = (filters * 2, 2) if i in self.downsampling_layers else (filters, 1)
        f = filters
      k = 5 if i > 3 and i / self.num_layers > 1 - self.conv5_percent else 3
      out.append(dict(filters=self.width(f), expansion=expansion_factor(
          self.t_zero, self.beta, i, self.num_layers), strides=s, kernel_size=k))
    return out

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = nn.hard_swish if self.h_swish else relu6
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-3, dtype=self.dtype, axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    # micromind's correct_pad for an even input: one extra row/column at the bottom/right.
    ph, pw = 1 - x.shape[1] % 2, 1 - x.shape[2] % 2
    x = jnp.pad(x, ((0, 0), (1 - ph, 1), (1 - pw, 1), (0, 0)))
    s = self.first_conv_stride
    x = nn.Conv(x.shape[-1], (3, 3), (s, s), padding="VALID", feature_group_count=x.shape[-1],
                use_bias=False, dtype=self.dtype, name="stem_depthwise")(x)
    x = nn.Conv(self.width(FIRST_CONV_FILTERS), (1, 1), use_bias=False, dtype=self.dtype, name="stem_pointwise")(x)
    x = act(norm(name="stem_bn")(x))
    common = dict(divisor=self.divisor, norm=norm, act=act, dtype=self.dtype, residual=self.residuals)
    x = PhiNetBlock(self.width(B1_FILTERS), 1.0, 1, False, False, name="block0", **common)(x)
    for i, b in enumerate(self.blocks(), start=1):
      x = PhiNetBlock(b["filters"], b["expansion"], b["strides"], self.squeeze_excite, True,
                      kernel_size=b["kernel_size"], name=f"block{i}", **common)(x)
    features = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    logits = None
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(features).astype(jnp.float32)
    return logits, {"features": features}


def from_config(model_cfg, num_classes: int, bn_axis_name: str | None = None, dtype=jnp.float32) -> PhiNet:
  """`config.model` (name="phinet"; `model.phinet`: any subset of PhiNet's fields) -> PhiNet."""
  kwargs = dict(model_cfg.get("phinet") or {})
  if "downsampling_layers" in kwargs:
    kwargs["downsampling_layers"] = tuple(kwargs["downsampling_layers"])
  return PhiNet(num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name, **kwargs)
