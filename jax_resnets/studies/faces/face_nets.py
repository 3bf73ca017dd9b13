"""Configurable face-embedding networks: ResNet, ConvNeXt or MobileNetV2 stages.

One `FaceNet` is described by per-stage lists (channels, depths, strides, dropout, SE flags)
and a block kind:

* `resnet_basic` / `resnet_bottleneck`: the blocks of `models.resnet` (He et al. 2016), reused.
* `convnext`: 7x7 depthwise conv, LayerNorm, inverted MLP (x`expansion`, GELU), layer scale
  (Liu et al. 2022); `depthwise=False` makes the 7x7 conv a full conv.
* `mobilenetv2`: inverted bottleneck 1x1 expand (x`expansion`) -> 3x3 depthwise -> 1x1 linear
  projection (Sandler et al. 2018), ReLU or ReLU6, optional squeeze-excitation (Hu et al. 2018).

Stem: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool. Between stages an optional transition conv
block (3x3 strided conv + BN + act; for ConvNeXt always LayerNorm + k=s strided conv) does the
down-sampling. Head: global average pooling -> Dense(`embedding_size`) = the embedding, then the
classifier on top: `linear` (Dense) or `cosine` (cosine between the L2-normalised embedding and
L2-normalised class weights: the input of ArcFace / CosFace). Convs and dense layers use
Kaiming-normal init. Returns `(logits, {"features": embedding})` like `ResNet`.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_resnets.models import resnet

ModuleDef = Any
conv_init = resnet.conv_init  # Kaiming normal, fan_out (torchvision's convs).
dense_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # Kaiming normal.
BLOCKS = ("resnet_basic", "resnet_bottleneck", "convnext", "mobilenetv2")
ACTIVATIONS = {"relu": nn.relu, "relu6": nn.relu6, "gelu": nn.gelu}
HEADS = ("linear", "cosine")


class SqueezeExcite(nn.Module):
  """Channel gating: GAP -> Dense(C*ratio) -> ReLU -> Dense(C) -> sigmoid -> scale."""
  ratio: float = 0.25
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Dense(max(1, int(c * self.ratio)), kernel_init=dense_init, dtype=self.dtype, name="reduce")(s))
    return x * nn.sigmoid(nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="expand")(s))


class ConvNeXtBlock(nn.Module):
  """dwconv7x7 -> LN -> Dense(4C) -> GELU -> Dense(C) -> layer scale gamma -> + x."""
  features: int
  expansion: int = 4
  depthwise: bool = True
  se: bool = False
  kernel_size: int = 7
  layer_scale_init: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, self.features
    y = nn.Conv(c, (k, k), padding=resnet.pad(k), feature_group_count=c if self.depthwise else 1,
                kernel_init=conv_init, dtype=self.dtype, name="dwconv")(x)
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(y)
    y = nn.gelu(nn.Dense(c * self.expansion, kernel_init=dense_init, dtype=self.dtype, name="pwconv1")(y))
    y = nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="pwconv2")(y)
    if self.se:
      y = SqueezeExcite(dtype=self.dtype, name="se")(y)
    gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (c,))
    return x + y * gamma


class InvertedResidual(nn.Module):
  """MobileNetV2: 1x1 expand -> 3x3 depthwise (strided) -> [SE] -> 1x1 linear project (+ x)."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu6
  expansion: int = 6
  depthwise: bool = True
  se: bool = False

  @nn.compact
  def __call__(self, x):
    hidden, s = x.shape[-1] * self.expansion, (self.strides, self.strides)
    y = x
    if self.expansion != 1:
      y = self.act(self.norm(name="bn1")(self.conv(hidden, (1, 1), padding="VALID", name="expand")(y)))
    y = self.conv(hidden, (3, 3), s, padding=resnet.pad(3), feature_group_count=hidden if self.depthwise else 1,
                  name="dwconv")(y)
    y = self.act(self.norm(name="bn2")(y))
    if self.se:
      y = SqueezeExcite(name="se")(y)
    y = self.norm(name="bn3")(self.conv(self.features, (1, 1), padding="VALID", name="project")(y))
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class Transition(nn.Module):
  """Between stages: 3x3/s conv + BN + act, or (ConvNeXt) LayerNorm + s x s / s conv."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  convnext: bool = False

  @nn.compact
  def __call__(self, x):
    s = self.strides
    if self.convnext:
      x = nn.LayerNorm(epsilon=1e-6, dtype=x.dtype, name="norm")(x)
      return self.conv(self.features, (s, s), (s, s), padding="VALID", use_bias=True, name="conv")(x)
    x = self.conv(self.features, (3, 3), (s, s), padding=resnet.pad(3), name="conv")(x)
    return self.act(self.norm(name="bn")(x))


class FaceNet(nn.Module):
  """Stem -> stages (per-stage channels/depth/stride/dropout/SE) -> GAP -> embedding -> classifier.

  Attributes:
    block: one of BLOCKS.
    channels, depths, strides: one entry per stage (bottleneck stages output 4 x channels).
    dropout: per-stage dropout rate applied to the stage output (needs rngs={"dropout": key}).
    se: per-stage squeeze-excitation flags. For the reused ResNet blocks SE gates the block
      output (after the residual add); ConvNeXt/MobileNetV2 gate before the residual add.
    expansion: ConvNeXt MLP ratio / MobileNetV2 expansion factor.
    depthwise: False replaces the depthwise conv by a full conv (ConvNeXt, MobileNetV2).
    activation: "relu" | "relu6" | "gelu" (ResNet/MobileNetV2 blocks, transitions).
    transition: add a transition conv block before every stage whose stride or width changes
      (then the stage's blocks run at stride 1); ConvNeXt always uses them.
    width: stem channels.
    embedding_size: Dense after pooling (0: the pooled features are the embedding).
    head: "linear" or "cosine" classifier; num_classes 0: no classifier (logits None).
  """
  block: str = "resnet_basic"
  channels: Sequence[int] = (64, 128, 256, 512)
  depths: Sequence[int] = (2, 2, 2, 2)
  strides: Sequence[int] = (1, 2, 2, 2)
  dropout: Sequence[float] = (0.0, 0.0, 0.0, 0.0)
  se: Sequence[bool] = (False, False, False, False)
  expansion: int = 4
  depthwise: bool = True
  activation: str = "relu"
  transition: bool = False
  width: int = 64
  embedding_size: int = 512
  num_classes: int = 0
  head: str = "linear"
  se_ratio: float = 0.25
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name)
    act = ACTIVATIONS[self.activation]
    x = conv(self.width, (7, 7), (2, 2), padding=resnet.pad(7), name="conv1")(x.astype(self.dtype))
    x = resnet.max_pool_3x3_s2(nn.relu(norm(name="bn1")(x)))
    for i, (c, n, s) in enumerate(zip(self.channels, self.depths, self.strides)):
      x = self.stage(x, i, c, n, s, conv, norm, act, train)
    embedding = jnp.mean(x, axis=(1, 2))
    if self.embedding_size:
      embedding = nn.Dense(self.embedding_size, kernel_init=dense_init, dtype=self.dtype, name="embedding")(embedding)
    embedding = embedding.astype(jnp.float32)
    return self.classify(embedding), {"features": embedding}

  def stage(self, x, i, c, n, s, conv, norm, act, train):
    """Optional transition, then `n` blocks, SE flags, and the stage's dropout."""
    convnext = self.block == "convnext"
    if (self.transition or convnext) and (s != 1 or x.shape[-1] != c):
      x = Transition(c, s, conv, norm, act, convnext, name=f"transition{i + 1}")(x)
      s = 1
    for j in range(n):
      x = self.make_block(c, s if j == 0 else 1, conv, norm, act, self.se[i], f"stage{i + 1}_{j}")(x)
      if self.se[i] and self.block.startswith("resnet"):
        x = SqueezeExcite(self.se_ratio, self.dtype, name=f"stage{i + 1}_{j}_se")(x)
    return nn.Dropout(self.dropout[i], deterministic=not train)(x) if self.dropout[i] else x

  def make_block(self, c, s, conv, norm, act, se, name):
    if self.block == "resnet_basic":
      return resnet.BasicBlock(c, s, conv, norm, act, name=name)
    if self.block == "resnet_bottleneck":
      return resnet.Bottleneck(c, s, conv, norm, act, name=name)
    if self.block == "convnext":
      return ConvNeXtBlock(c, self.expansion, self.depthwise, se, dtype=self.dtype, name=name)
    if self.block == "mobilenetv2":
      return InvertedResidual(c, s, conv, norm, act, self.expansion, self.depthwise, se, name=name)
    raise ValueError(f"model.block: unknown block {self.block!r} (known: {', '.join(BLOCKS)})")

  def classify(self, embedding: jax.Array) -> jax.Array | None:
    """Linear logits, or cosines between the normalised embedding and normalised class weights."""
    if not self.num_classes:
      return None
    if self.head == "linear":
      return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="fc")(embedding).astype(jnp.float32)
    if self.head != "cosine":
      raise ValueError(f"model.head: unknown head {self.head!r} (known: {', '.join(HEADS)})")
    w = self.param("fc", dense_init, (embedding.shape[-1], self.num_classes))
    return l2_normalize(embedding) @ l2_normalize(w, axis=0)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def from_config(model_cfg, num_classes: int, bn_axis_name: str | None = None, dtype=jnp.float32) -> FaceNet:
  """`config.model` (name="face_net") -> FaceNet; per-stage lists must have one entry per stage."""
  n = len(model_cfg.channels)
  per_stage = lambda key, default: tuple(model_cfg.get(key) or (default,) * n)
  fields = {"depths": per_stage("depths", 2), "strides": per_stage("strides", 2),
            "dropout": per_stage("dropout", 0.0), "se": tuple(bool(v) for v in per_stage("se", False))}
  for key, value in fields.items():
    if len(value) != n:
      raise ValueError(f"model.{key}: {len(value)} entries for {n} stages (model.channels={tuple(model_cfg.channels)})")
  return FaceNet(
      block=model_cfg.get("block", "resnet_basic"), channels=tuple(model_cfg.channels), **fields,
      expansion=model_cfg.get("expansion", 4), depthwise=model_cfg.get("depthwise", True),
      activation=model_cfg.get("activation", "relu"), transition=model_cfg.get("transition", False),
      width=model_cfg.width, embedding_size=model_cfg.get("embedding_size", 512), num_classes=num_classes,
      head=model_cfg.get("head", "linear"), se_ratio=model_cfg.get("se_ratio", 0.25), dtype=dtype,
      bn_axis_name=bn_axis_name)
