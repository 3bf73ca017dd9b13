"""ResNet family (He et al. 2016) in flax.linen, laid out like torchvision.

Parameter paths mirror torchvision's state-dict keys with '/' for '.':
`conv1`, `bn1`, `layer1/0/conv1`, `layer2/0/downsample/0` (conv), `downsample/1` (bn), `fc`.
A weight converter therefore maps tensors one to one. Bottleneck blocks put the
stride on the 3x3 conv (torchvision's "v1.5").
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs; nn.Linear's default for
# `fc`: weight and bias uniform in +-1/sqrt(fan_in).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
fc_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def fc_bias_init(fan_in: int):
  bound = fan_in ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)

STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit symmetric padding of a kxk window, as torch's `padding=k//2`."""
  return ((k // 2, k // 2), (k // 2, k // 2))


class Downsample(nn.Module):
  """1x1 strided conv + BN on the shortcut (torchvision's `downsample.0/1`)."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, (1, 1), (self.strides, self.strides), padding="VALID", name="0")(x)
    return self.norm(name="1")(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34)."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  skip: bool = True
  norm_relu: Callable | None = None
  expansion = 1

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    y = norm_act(self.norm, self.act, "bn1", self.conv(self.features, (3, 3), s, padding=pad(3), name="conv1")(x),
                 self.norm_relu)
    return residual_tail(self, "bn2", self.conv(self.features, (3, 3), padding=pad(3), name="conv2")(y), x)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand x4 (ResNet-50/101/152)."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  skip: bool = True
  norm_relu: Callable | None = None
  expansion = 4

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    y = norm_act(self.norm, self.act, "bn1", self.conv(self.features, (1, 1), padding="VALID", name="conv1")(x),
                 self.norm_relu)
    y = norm_act(self.norm, self.act, "bn2", self.conv(self.features, (3, 3), s, padding=pad(3), name="conv2")(y),
                 self.norm_relu)
    return residual_tail(self, "bn3", self.conv(self.features * 4, (1, 1), padding="VALID", name="conv3")(y), x)


def norm_act(norm: ModuleDef, act: Callable, name: str, x: jax.Array, norm_relu: Callable | None = None):
  """act(norm(name=name)(x)); `norm_relu(module, x)`, where given, computes relu(module(x)) itself
  (a backend's fused op: `jax_resnets.backend.Backend.norm_relu`)."""
  module = norm(name=name)
  if norm_relu is not None and act is nn.relu:
    return norm_relu(module, x)
  return act(module(x))


def residual_tail(block: nn.Module, name: str, y: jax.Array, x: jax.Array) -> jax.Array:
  """A block's end: act(norm(y) + shortcut(x)), or act(norm(y)) where its skip is disabled."""
  if not block.skip:
    return norm_act(block.norm, block.act, name, y, block.norm_relu)
  return block.act(block.norm(name=name)(y) + shortcut(block, x))


def shortcut(block: nn.Module, x: jax.Array) -> jax.Array:
  """Identity, or the projection when the shape changes (created only if used)."""
  out = block.features * block.expansion
  if block.strides == 1 and x.shape[-1] == out:
    return x
  return Downsample(out, block.strides, block.conv, block.norm, name="downsample")(x)


class ResLayer(nn.Module):
  """One stage (`layerN`): blocks named "0", "1", ... as torchvision's Sequential."""
  block: ModuleDef
  num_blocks: int
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  disabled_skips: Sequence[int] = ()
  norm_relu: Callable | None = None

  @nn.compact
  def __call__(self, x):
    for j in range(self.num_blocks):
      x = self.block(self.features, self.strides if j == 0 else 1, self.conv, self.norm,
                     skip=j not in self.disabled_skips, norm_relu=self.norm_relu, name=str(j))(x)
    return x


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` whose running variance averages the unbiased batch variance (x n / (n - 1), n
  the values each channel's statistics are taken over, on all devices), as torch's BatchNorm2d does;
  flax averages the biased one, which differs most where maps are small (layer4: n = 8 at 32 px,
  tests/test_step_equivalence.py). Normalisation itself uses the biased variance in both."""

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if running or self.is_initializing() or mask is not None:
      return super().__call__(x, use_running_average, mask=mask)
    old = self.get_variable("batch_stats", "var")
    y = super().__call__(x, use_running_average, mask=mask)
    new = self.get_variable("batch_stats", "var")  # momentum * old + (1 - momentum) * biased batch variance
    n = x.size // new.size * (jax.lax.axis_size(self.axis_name) if self.axis_name else 1)
    self.put_variable("batch_stats", "var", new + (new - self.momentum * old) / max(n - 1, 1))
    return y


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """torchvision's MaxPool2d(3, stride=2, padding=1): pads with -inf."""
  return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


class ResNet(nn.Module):
  """ResNet-{18,34,50,101,152}.

  Returns `(logits, out)`: `out["features"]` is the pooled embedding, so studies can
  freeze, swap or stack heads. With `num_classes=0` there is no `fc` and logits is None.

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    num_classes: size of the `fc` head (0: none).
    stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no pool).
    width: channels of layer1 (64 in the paper); tiny widths keep tests fast.
    disabled_skips: block names such as "layer3.0" whose residual add is removed.
    dtype: compute dtype (params stay float32).
    bn_axis_name: mapped axis over which BN statistics are averaged (sync BN).
    conv, pool, batch_norm: the conv module class, the stem's 3x3/2 max-pool and the norm module
      class; stock flax by default, a backend's equal ones otherwise (`jax_resnets.backend`).
    norm_relu: None, or `fn(norm_module, x) -> relu(norm_module(x))` computed in one op.
  """
  depth: int = 18
  num_classes: int = 1000
  stem: str = "imagenet"
  width: int = 64
  disabled_skips: Sequence[str] = ()
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  conv: ModuleDef = nn.Conv
  pool: Callable = max_pool_3x3_s2
  batch_norm: ModuleDef = BatchNorm
  norm_relu: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
    norm = functools.partial(self.batch_norm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=pad(7), name="conv1")(x)
      x = self.pool(norm_act(norm, nn.relu, "bn1", x, self.norm_relu))
    elif self.stem == "cifar":
      x = norm_act(norm, nn.relu, "bn1", conv(self.width, (3, 3), padding=pad(3), name="conv1")(x), self.norm_relu)
    else:
      raise ValueError(f"model.stem must be 'imagenet' or 'cifar', got {self.stem!r}")
    block = BasicBlock if self.depth < 50 else Bottleneck
    for i, n in enumerate(STAGE_SIZES[self.depth]):
      name = f"layer{i + 1}"
      off = tuple(int(s.split(".")[1]) for s in self.disabled_skips if s.split(".")[0] == name)
      x = ResLayer(block, n, self.width * 2**i, 1 if i == 0 else 2, conv, norm, off, self.norm_relu, name=name)(x)
    features = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    logits = None
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=fc_kernel_init,
                        bias_init=fc_bias_init(features.shape[-1]), name="fc")(features).astype(jnp.float32)
    return logits, {"features": features}


def block_names(depth: int) -> list[str]:
  """All block names ("layer1.0", ...) of a depth, for validating `disabled_skips`."""
  return [f"layer{i + 1}.{j}" for i, n in enumerate(STAGE_SIZES[depth]) for j in range(n)]
