"""Compression Identified Exemplars (Hooker et al. 2020, "Characterising Bias in Compressed Models").

Inputs are predicted labels of two populations on the same N test examples, arrays
[K, N] (K models each; the two K may differ).

Modal CIE: examples where the modal label of the compressed population differs from the
modal label of the baseline population. With two classes an odd K never ties; an even K can
(the paper's K = 30), and a tie has no modal label, so the study makes the rule explicit
(`cie.tie_rule`, TIE_RULES): `odd_only` refuses even populations (the study's config check),
`label_0` breaks ties towards the smallest class id (np.argmax takes the first maximum),
identically for both populations; the report states which one applied.

Taxicab CIE: examples ranked by the taxicab (L1) distance between the two populations'
label distributions, sum_c |p_baseline(c) - p_compressed(c)| in [0, 2]; the top
round(fraction * N) are CIE. Equal distances are ordered by example position (a stable
sort), and examples at distance 0 are never CIE (so there can be fewer than the quota).
"""
import numpy as np

TIE_RULES = ("odd_only", "label_0")


def label_distribution(preds: np.ndarray, num_classes: int = 2) -> np.ndarray:
  """[K, N] predicted labels -> [N, C] fraction of models predicting each class."""
  preds = np.asarray(preds)
  counts = np.stack([(preds == c).sum(axis=0) for c in range(num_classes)], axis=-1)
  return counts / preds.shape[0]


def modal_labels(preds: np.ndarray, num_classes: int = 2) -> np.ndarray:
  """Most frequent label per example; ties go to the smallest class id."""
  return np.argmax(label_distribution(preds, num_classes), axis=-1)


def modal_cie(baseline: np.ndarray, compressed: np.ndarray, num_classes: int = 2) -> np.ndarray:
  """Bool [N]: modal labels of the two populations differ."""
  return modal_labels(baseline, num_classes) != modal_labels(compressed, num_classes)


def taxicab_distance(baseline: np.ndarray, compressed: np.ndarray, num_classes: int = 2) -> np.ndarray:
  return np.abs(label_distribution(baseline, num_classes) - label_distribution(compressed, num_classes)).sum(-1)


def taxicab_cie(baseline: np.ndarray, compressed: np.ndarray, top_fraction: float,
                num_classes: int = 2) -> np.ndarray:
  """Bool [N]: the round(top_fraction * N) largest non-zero taxicab distances."""
  distance = taxicab_distance(baseline, compressed, num_classes)
  quota = int(round(top_fraction * distance.shape[0]))
  order = np.argsort(-distance, kind="stable")[:quota]
  out = np.zeros(distance.shape[0], bool)
  out[order[distance[order] > 0]] = True
  return out
