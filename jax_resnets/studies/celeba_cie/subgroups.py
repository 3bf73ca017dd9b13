"""Binary-classification metrics overall and per protected subgroup (numpy, from predictions).

Positive class = label 1 (e.g. Blond_Hair). Undefined ratios (empty denominator) are NaN.
Subgroups: Male / not Male, Young / not Young and the four intersections; for CIE
over-representation also the cells label x Male (e.g. "Blond, Male") and label x Male x Young
(e.g. "Blond, Male, Young").

Intervals (`rate_intervals`, `over_index_intervals`) are bootstrap intervals over test
examples (stats.py). A population's rate is the mean of its K models' rates; within one
subgroup every model has the same denominator, so that mean is the rate of the per-example
fraction of models that err (`error_fraction`), which keeps the bootstrap one matrix product.
"""
import functools

import numpy as np

from jax_resnets.data import celeba
from jax_resnets.studies.celeba_cie import stats

SUBGROUPS = ("Male", "not Male", "Young", "not Young",
             "Male, Young", "Male, not Young", "not Male, Young", "not Male, not Young")
METRICS = ("accuracy", "precision", "recall", "f1", "error", "fpr", "fnr")
RATES = ("error", "fpr", "fnr")  # The audited rates; each is over the examples with label:
_RATE_LABEL = {"error": None, "fpr": 0, "fnr": 1}
_RATE_UNIT = {"error": "examples", "fpr": "negatives", "fnr": "positives"}


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


def over_indexing(selected: np.ndarray, attributes: np.ndarray, masks: dict | None = None) -> dict:
  """For each subgroup: its share of the selected examples (e.g. CIE) / its share of all examples.

  > 1 means the subgroup is over-represented among the selected examples. Also returns the
  fraction of the subgroup that is selected. `masks` (default: `subgroup_masks`) may add groups
  such as the `cell_masks`.
  """
  selected = np.asarray(selected, bool)
  out = {}
  for g, m in (subgroup_masks(attributes) if masks is None else masks).items():
    share_sel, share_all = _ratio(np.sum(selected & m), np.sum(selected)), _ratio(np.sum(m), m.size)
    out[g] = {"share_of_cie": share_sel, "share_of_data": share_all,
              "over_index": share_sel / share_all if share_all else float("nan"),
              "fraction_cie": _ratio(np.sum(selected & m), np.sum(m))}
  return out


def cell_masks(attributes: np.ndarray, labels: np.ndarray, positive_name: str = "Blond") -> dict:
  """{'<positive_name>, Male': bool [N], '<positive_name>, Male, Young': ..., ...}: the label x Male
  cells (4, e.g. all blond men: a rare cell pooled over ages) and the label x Male x Young cells (8)."""
  positive, masks = np.asarray(labels) == 1, subgroup_masks(attributes)
  cells = ["Male", "not Male", *[g for g in SUBGROUPS if ", " in g]]
  return {**{f"{positive_name}, {g}": positive & masks[g] for g in cells},
          **{f"not {positive_name}, {g}": ~positive & masks[g] for g in cells}}


def error_fraction(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
  """[K, N] predictions -> [N] fraction of the K models that mislabel each example."""
  return np.mean(np.asarray(preds) != np.asarray(labels)[None], axis=0)


def rate_note(metric: str, count: int, positive_name: str = "Blond") -> str | None:
  """Why a rate over `count` examples is not shown (None: it is shown)."""
  unit = _RATE_UNIT[metric]
  if count == 0:
    why = {"error": "", "fpr": f" (every example is {positive_name})",
           "fnr": f" (no {positive_name} example)"}[metric]
    return f"undefined: no {unit}{why}"
  return f"too few {unit} (n={count})" if count < stats.MIN_COUNT else None


def rate_denominators(labels: np.ndarray, masks: dict) -> np.ndarray:
  """[G * len(RATES), N] 0/1: the examples each (subgroup, rate) is computed over."""
  labels = np.asarray(labels)
  over = {r: np.ones(labels.shape, bool) if y is None else labels == y for r, y in _RATE_LABEL.items()}
  rows = [m & over[r] for m in masks.values() for r in RATES]
  return np.array(rows, np.float64)


def _rates_statistic(w, cells, num, delta_num, membership):
  """[..., 2, L, M]: rates and paired deltas against the baseline under weights w."""
  d = (w @ cells.T) @ membership
  per_cell = lambda x: (w @ x.T).reshape(*d.shape[:-1], -1, cells.shape[0]) @ membership
  return np.stack([per_cell(num) / d[..., None, :], per_cell(delta_num) / d[..., None, :]], axis=-3)


def rate_intervals(labels, errors, base, attributes, positive_name: str = "Blond",
                   num_resamples: int = stats.NUM_RESAMPLES, seed: int = stats.SEED) -> list:
  """Per level (row of errors [L, N]): {subgroup: counts, rate and paired delta intervals}.

  `errors` and `base` are `error_fraction`s; the delta of a rate against the baseline is
  computed from errors - base under the same resample, so it is paired by construction.
  """
  errors, base = np.atleast_2d(errors), np.asarray(base, np.float64)
  masks = subgroup_masks(attributes)
  den = rate_denominators(labels, masks)
  cells, membership = stats.partition(den)
  num = (cells[None] * errors[:, None]).reshape(-1, cells.shape[-1]).astype(np.float32)
  delta_num = (cells[None] * (errors - base)[:, None]).reshape(num.shape).astype(np.float32)  # 0 stays 0.
  statistic = functools.partial(_rates_statistic, membership=membership)  # Not resampled.
  _, lo, hi = stats.bootstrap(statistic, (cells, num, delta_num), num_resamples, seed)
  counts = den.sum(-1).astype(int).reshape(len(masks), len(RATES))
  shape = (2, errors.shape[0], len(masks), len(RATES))
  lo, hi = lo.reshape(shape), hi.reshape(shape)
  return [{g: _rate_entry(counts[j], lo[:, i, j], hi[:, i, j], positive_name) for j, g in enumerate(masks)}
          for i in range(errors.shape[0])]


def _rate_entry(counts, lo, hi, positive_name) -> dict:
  """One subgroup's counts, and per rate: note, interval, delta interval, significance."""
  out = {"n": int(counts[0]), "negatives": int(counts[1]), "positives": int(counts[2])}
  for k, r in enumerate(RATES):
    note = rate_note(r, int(counts[k]), positive_name)
    out[r] = {"note": note, "ci": None if note else [float(lo[0, k]), float(hi[0, k])],
              "delta_ci": None if note else [float(lo[1, k]), float(hi[1, k])],
              "delta_significant": False if note else bool(stats.excludes(lo[1, k], hi[1, k], 0.0))}
  return out


def _over_index_statistic(w, sets, cells, both, membership):
  """[..., S, Q]: (share of set s in group q) / (share of the test set in group q)."""
  in_set, in_group = w @ sets.T, (w @ cells.T) @ membership
  both = (w @ both.T).reshape(*in_set.shape, cells.shape[0]) @ membership
  return both / in_set[..., :, None] / (in_group[..., None, :] / w.sum(-1)[..., None, None])


def over_index_intervals(sets: np.ndarray, masks: dict, num_resamples: int = stats.NUM_RESAMPLES,
                         seed: int = stats.SEED) -> list:
  """Per selected set (row of sets [S, N], e.g. CIE): {group: over-index, interval, significance}.

  Membership of each example in a set is kept fixed while examples are resampled.
  """
  sets = np.atleast_2d(np.asarray(sets, np.float32))
  groups = np.array(list(masks.values()), bool)
  cells, membership = stats.partition(groups)
  both = (sets[:, None] * cells[None]).reshape(-1, sets.shape[-1])
  statistic = functools.partial(_over_index_statistic, membership=membership)  # Not resampled.
  point, lo, hi = stats.bootstrap(statistic, (sets, cells, both), num_resamples, seed)
  n, selected = groups.sum(-1), sets.sum(-1).astype(int)
  inside = (sets @ groups.T.astype(np.float32)).astype(int)
  return [{g: _over_index_entry(int(n[j]), int(selected[i]), int(inside[i, j]), sets.shape[-1],
                                point[i, j], lo[i, j], hi[i, j]) for j, g in enumerate(masks)}
          for i in range(len(sets))]


def _over_index_entry(n, selected, inside, total, point, lo, hi) -> dict:
  """One group's over-index, withheld (with the reason) when a handful of CIE would decide it.

  With few CIE expected in a group and few found there, a percentile interval collapses (e.g. to
  [0, 0] when the group holds no CIE) and would look significant, so those are reported as too
  few instead. A small group holding at least MIN_COUNT CIE (a rare cell the compression hurt,
  such as blond men) is tested: its count, not the expectation, carries the interval.
  """
  expected = selected * n / total
  note = ("undefined: no examples in this subgroup" if n == 0 else "undefined: no CIE" if selected == 0
          else f"too few examples (n={n})" if n < stats.MIN_COUNT
          else f"too few CIE (n={selected})" if selected < stats.MIN_COUNT
          else f"too few CIE expected ({expected:.1f}) or found ({inside})"
          if max(expected, inside) < stats.MIN_COUNT else None)
  return {"n": n, "cie_in_group": inside, "expected": float(expected), "over_index": float(point), "note": note,
          "ci": None if note else [float(lo), float(hi)],
          "significant": False if note else bool(stats.excludes(lo, hi, 1.0))}
