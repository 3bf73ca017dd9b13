"""`config.model` -> flax module. One place that knows every architecture name."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jax_resnets.models import face_nets, fast_ops, handmade_conv, mla_adapter, phinet, resnet, vit_hybrid

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# model.conv: "xla" = nn.Conv (lax.conv_general_dilated); "handmade" = im2col + one matmul.
# "auto": nn.Conv's values; per conv oneDNN on CPU maps of 5+ pixels, one matmul per kernel tap on
# maps of 2x2 and less, else XLA's conv (models/fast_ops.conv_plan).
CONVS = {"xla": nn.Conv, "handmade": handmade_conv.HandmadeConv, "auto": fast_ops.AutoConv}
# model.pool: the ImageNet stem's max-pool; "fast" has equal values and a scatter-free backward.
POOLS = {"reference": resnet.max_pool_3x3_s2, "fast": fast_ops.max_pool_3x3_s2}
# model.norm: "reference" = nn.BatchNorm; "fast": equal values, in populations on CPU oneDNN's batch norm (+ ReLU).
NORMS = {"reference": nn.BatchNorm, "fast": fast_ops.BatchNorm}


def build_model(model_cfg: ml_collections.ConfigDict, num_classes: int, bn_axis_name: str | None = None):
  """Returns the flax module described by `model_cfg` (see configs/ for the fields)."""
  name = model_cfg.name
  if name == "resnet":
    return resnet.ResNet(
        depth=model_cfg.depth, num_classes=num_classes, stem=model_cfg.stem, width=model_cfg.width,
        disabled_skips=tuple(model_cfg.get("disabled_skips", ())), dtype=DTYPES[model_cfg.dtype],
        bn_axis_name=bn_axis_name, conv=CONVS[model_cfg.get("conv", "xla")],
        pool=POOLS[model_cfg.get("pool", "reference")], batch_norm=NORMS[model_cfg.get("norm", "reference")])
  if name == "phinet":  # model.phinet: alpha, beta, t_zero, num_layers, ... (models/phinet.py).
    return phinet.PhiNet(num_classes=num_classes, dtype=DTYPES[model_cfg.dtype], bn_axis_name=bn_axis_name,
                         **phinet_kwargs(model_cfg.get("phinet") or {}))
  if name == "face_net":  # model.block/channels/depths/strides/dropout/se/... (models/face_nets.py).
    return face_nets.from_config(model_cfg, num_classes, bn_axis_name, DTYPES[model_cfg.get("dtype", "float32")])
  if name in ("vit_hybrid", "mla_adapter"):  # ResNet stages + attention (models/vit_hybrid.py, mla_adapter.py).
    return attention_variant(model_cfg, num_classes, bn_axis_name)
  raise ValueError(f"model.name: unknown model {name!r} (known: resnet, phinet, face_net, vit_hybrid, mla_adapter)")


def attention_variant(model_cfg: ml_collections.ConfigDict, num_classes: int, bn_axis_name: str | None = None):
  """ViT hybrid (model.vit_dim/vit_depth/vit_heads/vit_stages) or MLA adapter (model.mla_*)."""
  common = dict(num_classes=num_classes, depth=model_cfg.depth, width=model_cfg.width, stem=model_cfg.stem,
                dtype=DTYPES[model_cfg.dtype])
  if model_cfg.name == "vit_hybrid":
    return vit_hybrid.ViTHybrid(num_stages=model_cfg.get("vit_stages", 3), dim=model_cfg.get("vit_dim", 64),
                                encoder_depth=model_cfg.get("vit_depth", 2), heads=model_cfg.get("vit_heads", 4),
                                bn_axis_name=bn_axis_name, **common)
  return mla_adapter.MLAAdapterNet(num_stages=model_cfg.get("mla_stages", 4), dim=model_cfg.get("mla_dim", 64),
                                   heads=model_cfg.get("mla_heads", 4), kv_rank=model_cfg.get("mla_kv_rank", 16),
                                   q_rank=model_cfg.get("mla_q_rank", 0), **common)


def phinet_kwargs(phinet_cfg) -> dict:
  """`config.model.phinet` (any subset of PhiNet's fields) -> constructor kwargs."""
  kwargs = dict(phinet_cfg)
  if "downsampling_layers" in kwargs:
    kwargs["downsampling_layers"] = tuple(kwargs["downsampling_layers"])
  return kwargs


def parameter_count(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
