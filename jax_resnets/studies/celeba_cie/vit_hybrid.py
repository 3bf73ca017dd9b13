"""ResNet + ViT hybrid (Dosovitskiy et al. 2021, "hybrid architecture"): ResNet-18 stages
produce a feature map, each spatial position becomes a token (1x1 projection), a class
token and learned position embeddings are added, and a small pre-LN transformer encoder
classifies from the class token.

Parameter paths: the ResNet part mirrors torchvision (`conv1`, `bn1`, `layer1`..`layerN`),
then `embedding` (1x1 conv), `cls`, `pos_embedding`, `encoder/block_i`, `encoder_norm`, `head`.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jax_resnets.models import resnet


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)); x + MLP(LN(x))."""
  heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, name="attention")(y, y)
    y = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp1")(y)
    return x + nn.Dense(x.shape[-1], dtype=self.dtype, name="mlp2")(nn.gelu(y))


def resnet_stages(module: nn.Module, x, train: bool, depth: int, width: int, stem: str, num_stages: int,
                  dtype, bn_axis_name=None):
  """Stem + the first `num_stages` ResNet stages, named as in resnet.ResNet (call inside @compact)."""
  conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype, kernel_init=resnet.conv_init)
  norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                           dtype=dtype, axis_name=bn_axis_name)
  x = x.astype(dtype)
  if stem == "imagenet":
    x = resnet.max_pool_3x3_s2(nn.relu(norm(name="bn1", parent=module)(
        conv(width, (7, 7), (2, 2), padding=resnet.pad(7), name="conv1", parent=module)(x))))
  else:
    x = nn.relu(norm(name="bn1", parent=module)(conv(width, (3, 3), padding=resnet.pad(3), name="conv1", parent=module)(x)))
  block = resnet.BasicBlock if depth < 50 else resnet.Bottleneck
  for i, n in enumerate(resnet.STAGE_SIZES[depth][:num_stages]):
    x = resnet.ResLayer(block, n, width * 2**i, 1 if i == 0 else 2, conv, norm, name=f"layer{i + 1}", parent=module)(x)
  return x


class ViTHybrid(nn.Module):
  """ResNet stages -> tokens -> transformer encoder with a class token -> head."""
  num_classes: int
  depth: int = 18
  width: int = 64
  stem: str = "imagenet"
  num_stages: int = 3
  dim: int = 64
  encoder_depth: int = 2
  heads: int = 4
  mlp_ratio: int = 2
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = resnet_stages(self, x, train, self.depth, self.width, self.stem, self.num_stages, self.dtype, self.bn_axis_name)
    x = nn.Conv(self.dim, (1, 1), dtype=self.dtype, name="embedding")(x)
    tokens = x.reshape(x.shape[0], -1, self.dim)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(tokens.dtype), tokens], 1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, tokens.shape[1], self.dim))
    tokens = tokens + pos.astype(tokens.dtype)
    for i in range(self.encoder_depth):
      tokens = EncoderBlock(self.heads, self.dim * self.mlp_ratio, self.dtype, name=f"encoder_block{i}")(tokens)
    features = nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(tokens[:, 0]).astype(jnp.float32)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(features).astype(jnp.float32)
    return logits, {"features": features}


def from_config(model_cfg, num_classes: int, bn_axis_name: str | None = None, dtype=jnp.float32) -> ViTHybrid:
  """`config.model` (name="vit_hybrid"; model.vit_dim/vit_depth/vit_heads/vit_stages) -> ViTHybrid."""
  return ViTHybrid(num_classes=num_classes, depth=model_cfg.depth, width=model_cfg.width, stem=model_cfg.stem,
                   dtype=dtype, num_stages=model_cfg.get("vit_stages", 3), dim=model_cfg.get("vit_dim", 64),
                   encoder_depth=model_cfg.get("vit_depth", 2), heads=model_cfg.get("vit_heads", 4),
                   bn_axis_name=bn_axis_name)
