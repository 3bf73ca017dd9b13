"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

Only convolution and dense kernels are pruned (biases, batch-norm scales/offsets and
statistics never are). The target sparsity follows the cubic schedule

  s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** 3,   t_0 <= t <= t_end,

and masks are recomputed every `frequency` steps in [t_0, t_end] by magnitude, either
per tensor (each kernel pruned to s_t, as tensorflow/model_optimization and the paper's
code) or globally (one magnitude ranking over all prunable weights). Between updates the
masks are fixed. `gradual_magnitude_pruning` is the optax transformation the study chains
after its optimizer: the core train step trains pruned models like any other.

Ranking ties (equal magnitudes, in particular already-zero weights) are broken by flat
index, so exactly round(s * n) weights are pruned. Written here rather than with
jaxpruner, which is not installable in this environment.
"""
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jax_resnets.training import freeze, population

SCOPES = ("per_tensor", "global")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Zhu & Gupta polynomial schedule: mask updates at t_0, t_0 + f, ..., up to t_end."""
  final_sparsity: float | jax.Array
  begin_step: int
  end_step: int
  frequency: int
  initial_sparsity: float = 0.0
  power: int = 3

  def sparsity(self, step):
    """Target sparsity at `step` (clamped to the [begin, end] window)."""
    span = max(self.end_step - self.begin_step, 1)
    progress = jnp.clip((step - self.begin_step) / span, 0.0, 1.0)
    return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power

  def is_update_step(self, step):
    """True at t_0 + k * frequency for t_0 <= step <= t_end, and at t_end itself."""
    inside = (step >= self.begin_step) & (step <= self.end_step)
    return inside & (((step - self.begin_step) % self.frequency == 0) | (step == self.end_step))


def schedule_from_config(cfg: ml_collections.ConfigDict, final_sparsity) -> Schedule:
  return Schedule(final_sparsity, cfg.begin_step, cfg.end_step, cfg.frequency,
                  cfg.get("initial_sparsity", 0.0), cfg.get("power", 3))


def is_prunable(path, leaf) -> bool:
  """Conv and dense kernels: a leaf named `kernel` with >= 2 dims (never biases or BN)."""
  return freeze.path_str(path).endswith("kernel") and jnp.ndim(leaf) >= 2


def _keep_mask(magnitudes: jax.Array, sparsity) -> jax.Array:
  """Bool mask of the same shape: False for the round(sparsity * n) smallest magnitudes."""
  flat = magnitudes.reshape(-1)
  n = flat.shape[0]
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  k = jnp.round(sparsity * n).astype(jnp.int32)
  return (ranks >= k).reshape(magnitudes.shape)


def magnitude_masks(params, sparsity, scope: str = "per_tensor"):
  """Masks (bool, True = kept) for every prunable leaf; non-prunable leaves get a scalar True."""
  if scope not in SCOPES:
    raise ValueError(f"pruning.scope: unknown scope {scope!r} (known: {', '.join(SCOPES)})")
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  flags = [is_prunable(p, x) for p, x in leaves]
  if scope == "per_tensor":
    masks = [_keep_mask(jnp.abs(x), sparsity) if f else jnp.ones((), bool) for (_, x), f in zip(leaves, flags)]
  else:
    pruned = [x for (_, x), f in zip(leaves, flags) if f]
    keep = _keep_mask(jnp.concatenate([jnp.abs(x).reshape(-1) for x in pruned]), sparsity)
    sizes = np.cumsum([x.size for x in pruned])[:-1]
    parts = iter(x.reshape(p.shape) for x, p in zip(jnp.split(keep, sizes), pruned))
    masks = [next(parts) if f else jnp.ones((), bool) for f in flags]
  return jax.tree_util.tree_unflatten(treedef, masks)


def initial_masks(params):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.ones(x.shape, bool) if is_prunable(p, x) else jnp.ones((), bool), params)


def apply_masks(tree, masks):
  """Zeroes the pruned entries of `tree` (params, gradients or updates)."""
  return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, masks)


def update_masks(params, masks, step, schedule: Schedule, scope: str = "per_tensor"):
  """New magnitude masks at an update step of the schedule, else the old ones (jit-able; in a
  population the step is every model's, so the masks' sorts run only on update steps)."""
  return jax.lax.cond(population.same_for_all_models(schedule.is_update_step(step)),
                      lambda: magnitude_masks(params, schedule.sparsity(step), scope),
                      lambda: masks)


def sparsity_report(params) -> dict:
  """Achieved sparsity (fraction of exact zeros) per prunable tensor and overall (numpy)."""
  per_tensor, zeros, total = {}, 0, 0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if is_prunable(path, x):
      x = np.asarray(x)
      z = int(np.sum(x == 0))
      per_tensor[freeze.path_str(path)] = z / x.size
      zeros, total = zeros + z, total + x.size
  return {"per_tensor": per_tensor, "overall": zeros / max(total, 1)}


class PruningState(NamedTuple):
  count: jax.Array  # updates applied so far
  masks: Any  # True = kept; the next forward pass's masks
  final_sparsity: jax.Array  # an array, not a constant: every level compiles to the same program


def gradual_magnitude_pruning(cfg: ml_collections.ConfigDict, final_sparsity: float) -> optax.GradientTransformation:
  """Pruning as the last transformation of an optax chain (`cfg` = config.pruning).

  After update t the masks of step t + 1 are recomputed on the schedule from the updated weights'
  magnitudes (the weights step t + 1 starts from, as a mask update at the start of that step would
  see them), and every pruned weight's update is -weight, so it becomes exactly 0 and stays 0.
  Inside `freeze.optimizer`'s trainable branch it never sees, so never prunes, frozen weights.
  """
  def init_fn(params):
    return PruningState(jnp.zeros([], jnp.int32), initial_masks(params), jnp.asarray(final_sparsity, jnp.float32))

  def update_fn(updates, state, params):
    schedule = schedule_from_config(cfg, state.final_sparsity)
    masks = update_masks(optax.apply_updates(params, updates), state.masks, state.count + 1, schedule, cfg.scope)
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
    return updates, PruningState(state.count + 1, masks, state.final_sparsity)

  return optax.GradientTransformation(init_fn, update_fn)
