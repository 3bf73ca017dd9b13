"""Classification heads on a shared backbone's pooled features (D = feature size).

- `original`: one linear layer, D -> C. Params (D + 1) * C.
- `adaptive`: factorized D -> d -> C with no non-linearity between (a rank-d linear map
  with biases). Params (D + 1) * d + (d + 1) * C.
- `adaptive_nonlinear`: the same with `activation` after the D -> d layer; same params.
- `hierarchy`: a parent classifier over P parents (D -> P) and one child classifier per
  parent over that parent's fine classes, all P evaluated at once as one einsum with a
  [P, D, M] kernel (M = the largest number of children; slots past a parent's own
  children are masked). Params (D + 1) * P + P * (D + 1) * M.

Every head returns `(logits, aux)`. The hierarchy head's logits are the soft-routed fine
log-probabilities log p(fine) = log p(parent) + log p(child | parent) over the C fine
classes (a proper distribution, so softmax cross-entropy on them is the fine NLL), and
`aux` holds `parent_logits` [B, P] and `child_logits` [B, P, M] (invalid slots at -1e9).
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HEADS = ("original", "adaptive", "adaptive_nonlinear", "hierarchy")
MASKED = -1e9
ACTIVATIONS = {"relu": nn.relu, "hard_swish": nn.hard_swish, "gelu": nn.gelu, "tanh": jnp.tanh}


class LinearHead(nn.Module):
  """`original`: D -> C."""
  num_classes: int

  @nn.compact
  def __call__(self, features):
    return nn.Dense(self.num_classes, name="fc")(features), {}


class FactorizedHead(nn.Module):
  """`adaptive` (activation None) / `adaptive_nonlinear`: D -> d [-> act] -> C."""
  num_classes: int
  bottleneck: int
  activation: Callable | None = None

  @nn.compact
  def __call__(self, features):
    h = nn.Dense(self.bottleneck, name="reduce")(features)
    if self.activation is not None:
      h = self.activation(h)
    return nn.Dense(self.num_classes, name="fc")(h), {}


def child_mask(groups: Sequence[Sequence[int]]) -> np.ndarray:
  """[P, M] bool: slot m of parent p is one of its children."""
  m = max(len(g) for g in groups)
  return np.array([[j < len(g) for j in range(m)] for g in groups])


def fine_log_probs(parent_logits: jax.Array, child_logits: jax.Array,
                   groups: Sequence[Sequence[int]]) -> jax.Array:
  """Soft routing: [B, P], [B, P, M] -> log p(fine) [B, C], C = number of fine labels.

  `groups[p][j]` is the fine label of child j of parent p (the hierarchy.json mapping).
  """
  mask = jnp.asarray(child_mask(groups))
  log_parent = jax.nn.log_softmax(parent_logits, -1)
  log_child = jax.nn.log_softmax(jnp.where(mask, child_logits, MASKED), -1)
  joint = log_parent[..., None] + log_child  # [B, P, M]
  fine = [f for g in groups for f in g]
  flat_index = np.array([p * mask.shape[1] + j for p, g in enumerate(groups) for j in range(len(g))])
  order = np.argsort(fine)  # Column c of the result is fine label c.
  return joint.reshape(*joint.shape[:-2], -1)[..., flat_index[order]]


class HierarchyHead(nn.Module):
  """Parent classifier + P child classifiers, batched (one einsum, no per-parent modules)."""
  groups: Sequence[Sequence[int]]  # groups[p] = fine labels of parent p, in child-index order.

  @nn.compact
  def __call__(self, features):
    p, m, d = len(self.groups), max(len(g) for g in self.groups), features.shape[-1]
    parent_logits = nn.Dense(p, name="parent")(features)
    kernel = self.param("child_kernel", nn.initializers.lecun_normal(batch_axis=(0,)), (p, d, m))
    bias = self.param("child_bias", nn.initializers.zeros, (p, m))
    child_logits = jnp.einsum("bd,pdm->bpm", features, kernel) + bias
    child_logits = jnp.where(jnp.asarray(child_mask(self.groups)), child_logits, MASKED)
    logits = fine_log_probs(parent_logits, child_logits, self.groups)
    return logits, {"parent_logits": parent_logits, "child_logits": child_logits}


def build_head(head_cfg, num_classes: int, groups: Sequence[Sequence[int]] | None = None) -> nn.Module:
  """`config.head` -> head module (`groups` needed for `hierarchy`)."""
  if head_cfg.name == "original":
    return LinearHead(num_classes)
  if head_cfg.name in ("adaptive", "adaptive_nonlinear"):
    act = ACTIVATIONS[head_cfg.activation] if head_cfg.name == "adaptive_nonlinear" else None
    return FactorizedHead(num_classes, head_cfg.bottleneck, act)
  if head_cfg.name == "hierarchy":
    return HierarchyHead(tuple(tuple(int(f) for f in g) for g in groups))
  raise ValueError(f"head.name: unknown head {head_cfg.name!r} (known: {', '.join(HEADS)})")


class HeadedClassifier(nn.Module):
  """Backbone (built with num_classes=0) + head. Returns (logits, {'features', **head aux}).

  `frozen_backbone`: the backbone runs in inference mode (BN running statistics used and
  kept) and no gradient reaches it (pair with an optimizer that also skips its weight decay).
  """
  backbone: Any
  head: Any
  frozen_backbone: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    _, out = self.backbone(x, train=train and not self.frozen_backbone)
    features = out["features"]
    if self.frozen_backbone:
      features = jax.lax.stop_gradient(features)
    logits, aux = self.head(features)
    return logits.astype(jnp.float32), {**out, **aux}
