"""Fine -> (parent, child) mappings, hard/soft routing and hierarchy metrics (host-side numpy).

A `Hierarchy` groups the C fine labels under P parents: `groups[p]` lists parent p's fine
labels in child-index order (ascending fine label). It is written to `hierarchy.json` as
`{parent: {fine_label: child_index}}`. Parents come from the dataset's own coarse labels
(`coarse`: CIFAR-100's 20 superclasses), from consecutive runs of them merged into
`num_parents` groups (`merged_coarse`, e.g. 10 parents of 2 superclasses), or from
contiguous ranges of fine ids (`contiguous`, any P; no dataset coarse labels needed).

Routing works on fine log-probabilities log p(fine) = log p(parent) + log p(child | parent)
(heads.fine_log_probs), from which p(parent) = sum of its children's p(fine) exactly:
- soft: argmax_fine p(fine);
- hard: p* = argmax_parent p(parent), then the best child of p* (argmax p(child | p*)).
A flat head is scored the same way from its softmax (parents = summed fine probabilities).
"""
import dataclasses
import json
import os
from typing import Sequence

import numpy as np
from scipy.special import log_softmax, logsumexp

from jax_resnets.data import sources
from jax_resnets.studies.hierarchy import heads

GROUPINGS = ("coarse", "merged_coarse", "contiguous")
ROUTINGS = ("soft", "hard")


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  groups: tuple[tuple[int, ...], ...]  # groups[p][child_index] = fine label

  @property
  def num_parents(self) -> int:
    return len(self.groups)

  @property
  def num_fine(self) -> int:
    return sum(len(g) for g in self.groups)

  @property
  def parent_of(self) -> np.ndarray:
    out = np.zeros(self.num_fine, np.int64)
    for p, g in enumerate(self.groups):
      out[list(g)] = p
    return out

  @property
  def child_of(self) -> np.ndarray:
    out = np.zeros(self.num_fine, np.int64)
    for g in self.groups:
      out[list(g)] = np.arange(len(g))
    return out

  def to_json(self) -> dict:
    return {str(p): {str(f): j for j, f in enumerate(g)} for p, g in enumerate(self.groups)}

  @classmethod
  def from_json(cls, mapping: dict) -> "Hierarchy":
    return cls(tuple(tuple(int(f) for f, _ in sorted(mapping[p].items(), key=lambda kv: kv[1]))
                     for p in sorted(mapping, key=int)))

  def write(self, workdir: str) -> str:
    path = os.path.join(workdir, "hierarchy.json")
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=1)
    return path


def from_parent_of(parent_of: Sequence[int]) -> Hierarchy:
  """Fine label -> parent id list -> Hierarchy (children in ascending fine order)."""
  parent_of = np.asarray(parent_of)
  groups = tuple(tuple(int(f) for f in np.flatnonzero(parent_of == p)) for p in range(parent_of.max() + 1))
  empty = [p for p, g in enumerate(groups) if not g]
  if empty:
    raise ValueError(f"hierarchy: parents {empty} have no fine labels")
  return Hierarchy(groups)


def from_labels(fine: np.ndarray, coarse: np.ndarray, num_fine: int) -> Hierarchy:
  """Mapping read off (fine, coarse) label pairs; each fine label must have one coarse label."""
  parent_of = np.full(num_fine, -1)
  for f, c in set(zip(np.asarray(fine).tolist(), np.asarray(coarse).tolist())):
    if parent_of[f] not in (-1, c):
      raise sources.DataError(f"hierarchy: fine label {f} has two coarse labels ({parent_of[f]}, {c})")
    parent_of[f] = c
  missing = np.flatnonzero(parent_of < 0)
  if missing.size:
    raise sources.DataError(f"hierarchy: fine labels {missing[:10].tolist()} never occur in the data "
                            "(cannot read their coarse label)")
  return from_parent_of(parent_of)


def contiguous(num_fine: int, num_parents: int) -> Hierarchy:
  """Fine ids split into `num_parents` consecutive ranges (sizes differ by at most 1)."""
  return from_parent_of(np.arange(num_fine) * num_parents // num_fine)


def merged(coarse: Hierarchy, num_parents: int) -> Hierarchy:
  """Consecutive coarse parents merged into `num_parents` groups."""
  if not 0 < num_parents <= coarse.num_parents:
    raise ValueError(f"hierarchy.num_parents={num_parents} must be in [1, {coarse.num_parents}] for merged_coarse")
  return from_parent_of(coarse.parent_of * num_parents // coarse.num_parents)


def scan_labels(ds_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(label, coarse_label) of every example of `split` (decodes the records once)."""
  source = sources.make_source(ds_cfg, split)
  if len(source) == 0 or "coarse_label" not in source[0]:
    raise sources.DataError(f"hierarchy.grouping=coarse needs 'coarse_label' in dataset {ds_cfg.name!r} "
                            "(use grouping=contiguous)")
  pairs = np.array([(int(e["label"]), int(e["coarse_label"])) for e in map(source.__getitem__, range(len(source)))])
  return pairs[:, 0], pairs[:, 1]


def build(hier_cfg, ds_cfg) -> Hierarchy:
  """`config.hierarchy` + `config.dataset` -> Hierarchy."""
  num_fine = sources.spec(ds_cfg).num_classes
  if hier_cfg.grouping == "contiguous":
    return contiguous(num_fine, hier_cfg.num_parents)
  coarse = from_labels(*scan_labels(ds_cfg, ds_cfg.train_split), num_fine)
  if hier_cfg.grouping == "merged_coarse":
    return merged(coarse, hier_cfg.num_parents)
  return coarse


# --- routing ---


def parent_log_probs(fine_logp: np.ndarray, h: Hierarchy) -> np.ndarray:
  """log p(parent) = logsumexp of its children's log p(fine): [N, C] -> [N, P]."""
  return np.stack([logsumexp(fine_logp[:, list(g)], axis=1) for g in h.groups], axis=1)


def route(fine_logp: np.ndarray, h: Hierarchy, routing: str) -> np.ndarray:
  """Predicted fine labels [N] by soft or hard routing."""
  if routing == "soft":
    return np.argmax(fine_logp, 1)
  return np.argmax(ranking_scores(fine_logp, h, "hard"), 1)


def ranking_scores(fine_logp: np.ndarray, h: Hierarchy, routing: str) -> np.ndarray:
  """Scores whose descending order ranks the fine labels (for top-k).

  Hard routing ranks the children of the chosen parent first (by p(child | parent)), then
  every other fine label by p(fine); so hard top-k for k >= a parent's size is parent accuracy.
  """
  fine_logp = np.asarray(fine_logp, np.float64)
  if routing == "soft":
    return fine_logp
  chosen = np.argmax(parent_log_probs(fine_logp, h), 1)
  in_chosen = h.parent_of[None, :] == chosen[:, None]
  lift = fine_logp.max(1, keepdims=True) - fine_logp.min(1, keepdims=True) + 1.0  # Above every other label.
  return fine_logp + in_chosen * lift


def soft_route(parent_logits, child_logits, h: Hierarchy) -> np.ndarray:
  return route(np.asarray(heads.fine_log_probs(parent_logits, child_logits, h.groups)), h, "soft")


def hard_route(parent_logits, child_logits, h: Hierarchy) -> np.ndarray:
  """argmax parent, then argmax of that parent's child head."""
  parent = np.argmax(parent_logits, 1)
  child_logits = np.where(heads.child_mask(h.groups)[None], child_logits, heads.MASKED)
  child = np.argmax(np.asarray(child_logits)[np.arange(len(parent)), parent], 1)
  return np.array([h.groups[p][c] for p, c in zip(parent, child)])


# --- metrics ---


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def metrics(logits: np.ndarray, labels: np.ndarray, h: Hierarchy, routing: str = "soft") -> dict:
  """Fine top-1/top-5, parent accuracy, child accuracy per parent and averaged, in-parent errors.

  Top-5 is None (n/a) under hard routing: committing to one parent leaves only its children
  as candidates, so "top-5" would be parent accuracy under another name.

  `logits`: any fine scores (a flat head's logits or a hierarchy head's log p(fine));
  child accuracy of parent p: among examples whose true parent is p, the share whose best
  child of p (argmax p(fine) within p) is the true label (the child head given the right parent).
  """
  labels = np.asarray(labels)
  fine_logp = log_softmax(np.asarray(logits, np.float64), axis=1)
  scores = ranking_scores(fine_logp, h, routing)
  pred = np.argmax(scores, 1)
  parent_of, true_parent = h.parent_of, h.parent_of[labels]
  within = np.where(parent_of[None, :] == true_parent[:, None], fine_logp, -np.inf)
  child_ok = np.argmax(within, 1) == labels
  per_parent = {str(p): float(child_ok[true_parent == p].mean()) for p in range(h.num_parents)
                if np.any(true_parent == p)}
  wrong = pred != labels
  return {
      "fine_top1": float(np.mean(~wrong)),
      "fine_top5": None if routing == "hard" else top_k_accuracy(scores, labels, 5),
      "parent_accuracy": float(np.mean(parent_of[pred] == true_parent)),
      "child_accuracy_mean": float(np.mean(list(per_parent.values()))),
      "child_accuracy_per_parent": per_parent,
      "fine_errors": int(wrong.sum()),
      "errors_within_parent": float(np.mean(parent_of[pred[wrong]] == true_parent[wrong])) if wrong.any() else 0.0,
  }
