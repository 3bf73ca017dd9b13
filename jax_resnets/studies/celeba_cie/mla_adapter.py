"""Multi-head Latent Attention (MLA, DeepSeek-AI 2024, "DeepSeek-V2") as a parameter-efficient
adapter on a frozen ResNet backbone.

MLA compresses keys and values jointly into a low-rank latent per token,
  c_kv = W_DKV h  (kv_rank << heads * head_dim),  k = W_UK c_kv,  v = W_UV c_kv,
so only c_kv needs caching; queries are optionally compressed the same way
(c_q = W_DQ h, q = W_UQ c_q; q_rank = 0 projects directly). Image tokens have no
autoregressive cache, and the decoupled RoPE key of DeepSeek-V2 is omitted here (tokens get a
learned position embedding instead); the attention itself is standard scaled dot product.

The adapter: backbone feature map (frozen: run with `train=False`, so BN uses its running
statistics) -> tokens (`adapter/proj`) + learned class token and positions -> x + MLA(LN(x))
-> LN(class token) -> `head`. Only `adapter/*` and `head/*` are trainable (the config sets
`model.trainable = ('adapter', 'head')`); the backbone lives under `backbone/*`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_resnets.studies.celeba_cie import vit_hybrid


class MultiHeadLatentAttention(nn.Module):
  """Self-attention with low-rank joint KV compression (and optional low-rank queries)."""
  heads: int
  head_dim: int
  kv_rank: int
  q_rank: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    dense = lambda features, name: nn.DenseGeneral(features, use_bias=False, dtype=self.dtype, name=name)
    hd = (self.heads, self.head_dim)
    c_kv = nn.LayerNorm(dtype=self.dtype, name="kv_norm")(dense(self.kv_rank, "w_dkv")(h))  # [B, T, r]
    k, v = dense(hd, "w_uk")(c_kv), dense(hd, "w_uv")(c_kv)                                 # [B, T, H, D]
    if self.q_rank:
      q = dense(hd, "w_uq")(nn.LayerNorm(dtype=self.dtype, name="q_norm")(dense(self.q_rank, "w_dq")(h)))
    else:
      q = dense(hd, "w_q")(h)
    out = nn.dot_product_attention(q, k, v)                                                  # [B, T, H, D]
    return nn.DenseGeneral(h.shape[-1], axis=(-2, -1), dtype=self.dtype, name="w_o")(out)


class Backbone(nn.Module):
  """The first `num_stages` ResNet stages (torchvision names under `backbone/`)."""
  depth: int
  width: int
  stem: str
  num_stages: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    return vit_hybrid.resnet_stages(self, x, train, self.depth, self.width, self.stem, self.num_stages, self.dtype)


class Adapter(nn.Module):
  dim: int
  heads: int
  kv_rank: int
  q_rank: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fmap):
    x = nn.Dense(self.dim, dtype=self.dtype, name="proj")(fmap)
    tokens = x.reshape(x.shape[0], -1, self.dim)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(tokens.dtype), tokens], 1)
    tokens = tokens + self.param("pos_embedding", nn.initializers.normal(0.02), (1, tokens.shape[1], self.dim))
    y = nn.LayerNorm(dtype=self.dtype, name="norm1")(tokens)
    tokens = tokens + MultiHeadLatentAttention(self.heads, self.dim // self.heads, self.kv_rank, self.q_rank,
                                               self.dtype, name="mla")(y)
    return nn.LayerNorm(dtype=self.dtype, name="norm2")(tokens[:, 0])


class MLAAdapterNet(nn.Module):
  """Frozen ResNet backbone + trainable MLA adapter + linear head."""
  num_classes: int
  depth: int = 18
  width: int = 64
  stem: str = "imagenet"
  num_stages: int = 4
  dim: int = 64
  heads: int = 4
  kv_rank: int = 16
  q_rank: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # The backbone is frozen (running BN statistics); the adapter has no BN or dropout.
    fmap = Backbone(self.depth, self.width, self.stem, self.num_stages, self.dtype, name="backbone")(x, train=False)
    features = Adapter(self.dim, self.heads, self.kv_rank, self.q_rank, self.dtype,
                       name="adapter")(jax.lax.stop_gradient(fmap)).astype(jnp.float32)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(features).astype(jnp.float32)
    return logits, {"features": features}


def from_config(model_cfg, num_classes: int, bn_axis_name: str | None = None, dtype=jnp.float32) -> MLAAdapterNet:
  """`config.model` (name="mla_adapter"; model.mla_*) -> MLAAdapterNet (batch norm per device)."""
  del bn_axis_name
  return MLAAdapterNet(num_classes=num_classes, depth=model_cfg.depth, width=model_cfg.width, stem=model_cfg.stem,
                       dtype=dtype, num_stages=model_cfg.get("mla_stages", 4), dim=model_cfg.get("mla_dim", 64),
                       heads=model_cfg.get("mla_heads", 4), kv_rank=model_cfg.get("mla_kv_rank", 16),
                       q_rank=model_cfg.get("mla_q_rank", 0))
