"""Binary-classification metrics overall and per protected subgroup (numpy, from predictions).

Positive class = label 1 (e.g. Blond_Hair). Undefined ratios (empty denominator) are NaN.
Subgroups: Male / not Male, Young / not Young and the four intersections.
"""
import numpy as np

from jax_resnets.data import celeba

SUBGROUPS = ("Male", "not Male", "Young", "not Young",
             "Male, Young", "Male, not Young", "not Male, Young", "not Male, not Young")
METRICS = ("accuracy", "precision", "recall", "f1", "error", "fpr", "fnr")


def subgroup_masks(attributes: np.ndarray) -> dict:
  """[N, 40] CelebA attributes (0/1) -> {subgroup name: bool [N]} in SUBGROUPS order."""
  male = np.asarray(attributes)[:, celeba.ATTRIBUTES.index("Male")] == 1
  young = np.asarray(attributes)[:, celeba.ATTRIBUTES.index("Young")] == 1
  return {"Male": male, "not Male": ~male, "Young": young, "not Young": ~young,
          "Male, Young": male & young, "Male, not Young": male & ~young,
          "not Male, Young": ~male & young, "not Male, not Young": ~male & ~young}


def _ratio(a, b) -> float:
  return float(a) / float(b) if b else float("nan")


def binary_metrics(labels: np.ndarray, preds: np.ndarray) -> dict:
  """accuracy, precision, recall, F1, error, FPR, FNR (+ counts) of one model on some examples."""
  labels, preds = np.asarray(labels).astype(bool), np.asarray(preds).astype(bool)
  tp, fp = int(np.sum(labels & preds)), int(np.sum(~labels & preds))
  fn, tn = int(np.sum(labels & ~preds)), int(np.sum(~labels & ~preds))
  n = tp + fp + fn + tn
  return {"accuracy": _ratio(tp + tn, n), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
          "f1": _ratio(2 * tp, 2 * tp + fp + fn), "error": _ratio(fp + fn, n), "fpr": _ratio(fp, fp + tn),
          "fnr": _ratio(fn, fn + tp), "count": n, "positives": tp + fn}


def population_metrics(labels: np.ndarray, preds: np.ndarray, where: np.ndarray | None = None) -> dict:
  """Mean and std over the K models ([K, N] preds) of `binary_metrics` on the `where` examples."""
  where = np.ones(np.asarray(labels).shape[0], bool) if where is None else np.asarray(where, bool)
  per_model = [binary_metrics(np.asarray(labels)[where], p[where]) for p in np.asarray(preds)]
  out = {"count": per_model[0]["count"], "positives": per_model[0]["positives"]}
  for m in METRICS:
    values = np.array([r[m] for r in per_model], float)
    finite = values[np.isfinite(values)]
    out[m] = float(finite.mean()) if finite.size else float("nan")
    out[m + "_std"] = float(finite.std()) if finite.size else float("nan")
  return out


def subgroup_metrics(labels, preds, attributes) -> dict:
  """{subgroup: population_metrics} for every subgroup in SUBGROUPS."""
  return {g: population_metrics(labels, preds, m) for g, m in subgroup_masks(attributes).items()}


def over_indexing(selected: np.ndarray, attributes: np.ndarray) -> dict:
  """For each subgroup: its share of the selected examples (e.g. CIE) / its share of all examples.

  > 1 means the subgroup is over-represented among the selected examples. Also returns the
  fraction of the subgroup that is selected.
  """
  selected = np.asarray(selected, bool)
  out = {}
  for g, m in subgroup_masks(attributes).items():
    share_sel, share_all = _ratio(np.sum(selected & m), np.sum(selected)), _ratio(np.sum(m), m.size)
    out[g] = {"share_of_cie": share_sel, "share_of_data": share_all,
              "over_index": share_sel / share_all if share_all else float("nan"),
              "fraction_cie": _ratio(np.sum(selected & m), np.sum(m))}
  return out
