"""`config.model` -> flax module. One place that knows every architecture name."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections

from jax_resnets import backend as backend_lib
from jax_resnets.models import resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# model.name -> the study module whose `from_config(model_cfg, num_classes, bn_axis_name, dtype)`
# builds it (imported on use: the core knows the names, each study folder its own models).
STUDY_MODELS = {
    "phinet": "jax_resnets.studies.hierarchy.phinet",
    "face_net": "jax_resnets.studies.faces.face_nets",
    "vit_hybrid": "jax_resnets.studies.celeba_cie.vit_hybrid",
    "mla_adapter": "jax_resnets.studies.celeba_cie.mla_adapter",
}
NAMES = ("resnet", *STUDY_MODELS)


def build_model(model_cfg: ml_collections.ConfigDict, num_classes: int, bn_axis_name: str | None = None,
                backend: str = "xla"):
  """Returns the flax module described by `model_cfg` (see configs/ for the fields); a ResNet's
  ops come from `backend` (`jax_resnets.backend`: 'xla', 'cpu' or 'auto')."""
  name, dtype = model_cfg.name, DTYPES[model_cfg.get("dtype", "float32")]
  if name == "resnet":
    ops = backend_lib.resolve(backend).model_kwargs()
    if model_cfg.get("conv") == "handmade":  # The ResNet-34 study's im2col conv (its own check).
      ops["conv"] = importlib.import_module("jax_resnets.studies.resnet34.handmade_conv").HandmadeConv
    return resnet.ResNet(
        depth=model_cfg.depth, num_classes=num_classes, stem=model_cfg.stem, width=model_cfg.width,
        disabled_skips=tuple(model_cfg.get("disabled_skips", ())), dtype=dtype, bn_axis_name=bn_axis_name, **ops)
  if name in STUDY_MODELS:
    return importlib.import_module(STUDY_MODELS[name]).from_config(model_cfg, num_classes, bn_axis_name, dtype)
  raise ValueError(f"model.name: unknown model {name!r} (known: {', '.join(NAMES)})")


def parameter_count(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
