"""ViT-hybrid and MLA-adapter variants: shapes, trainable counts (eval_shape), MLA's low-rank KV."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from jax_resnets.studies.celeba_cie import pruning
from jax_resnets.models import registry
from jax_resnets.studies.celeba_cie import mla_adapter
from jax_resnets.training import freeze


def config(arg):
  spec = importlib.util.spec_from_file_location("celeba_cie_config", "configs/celeba_cie.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def shapes(cfg):
  model = registry.build_model(cfg.model, 2)
  s = cfg.dataset.image_size
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, s, s, 3)))
  logits, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((3, s, s, 3)))
  return variables["params"], logits, out


def test_vit_hybrid_shapes_and_prunable_kernels():
  params, logits, out = shapes(config("smoke,vit_hybrid"))
  assert logits.shape == (3, 2) and out["features"].shape == (3, 16)
  assert {"conv1", "layer3", "embedding", "cls", "pos_embedding", "encoder_block1", "head"} <= set(params)
  assert "layer4" not in params  # vit_stages = 3.
  names = [freeze.path_str(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if pruning.is_prunable(p, x)]
  assert "encoder_block0/attention/query/kernel" in names and "pos_embedding" not in names


def test_mla_adapter_trains_only_adapter_and_head():
  cfg = config("mla_adapter")
  params, logits, _ = shapes(cfg)
  assert logits.shape == (3, 2) and set(params) == {"backbone", "adapter", "head"}
  total = registry.parameter_count(params)
  trainable, _ = freeze.param_counts(params, cfg.freeze)
  adapter_head = registry.parameter_count({"a": params["adapter"], "h": params["head"]})
  assert trainable == adapter_head and trainable < total / 50
  assert not any(jax.tree.leaves(freeze.trainable_mask(params, cfg.freeze)["backbone"]))
  assert params["adapter"]["mla"]["w_dkv"]["kernel"].shape == (64, 16)  # dim -> kv_rank latent.


def test_mla_keys_and_values_live_in_the_low_rank_latent():
  mla = mla_adapter.MultiHeadLatentAttention(heads=2, head_dim=8, kv_rank=3)
  h = jax.random.normal(jax.random.key(1), (1, 10, 16))
  variables = mla.init(jax.random.key(0), h)
  out, inter = mla.apply(variables, h, capture_intermediates=True)
  assert out.shape == h.shape and np.all(np.isfinite(out))
  keys = np.asarray(inter["intermediates"]["w_uk"]["__call__"][0]).reshape(10, 16)
  values = np.asarray(inter["intermediates"]["w_uv"]["__call__"][0]).reshape(10, 16)
  assert np.linalg.matrix_rank(keys, tol=1e-4) <= 3 and np.linalg.matrix_rank(values, tol=1e-4) <= 3
