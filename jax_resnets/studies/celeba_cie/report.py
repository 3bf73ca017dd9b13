"""CIE study analysis: every reported number is computed from the predictions table.

`predictions.csv` (one row per test example):
  id, label, <the 40 CelebA attributes in ATTRIBUTES order>, then one column per model
  `pred/<level>/<seed>` holding that model's predicted label (0/1).
`analyse(table)` recomputes all metrics, CIE sets and over-indexing from it, so the
report can be re-derived with numpy alone (tests/test_celeba_cie_study.py does so).
"""
import csv
import dataclasses

import numpy as np

from jax_resnets.data import celeba
from jax_resnets.studies.celeba_cie import cie
from jax_resnets.studies.celeba_cie import subgroups

CIE_METHODS = ("modal", "taxicab")


@dataclasses.dataclass
class PredictionTable:
  ids: np.ndarray         # [N]
  labels: np.ndarray      # [N]
  attributes: np.ndarray  # [N, 40]
  preds: dict             # level -> {seed: [N]}, insertion-ordered (baseline first)

  def population(self, level: str) -> np.ndarray:
    return np.stack(list(self.preds[level].values()))


def write_csv(table: PredictionTable, path: str) -> None:
  header = ["id", "label", *celeba.ATTRIBUTES]
  columns = [table.ids, table.labels, *table.attributes.T]
  for level, models in table.preds.items():
    for seed, p in models.items():
      header.append(f"pred/{level}/{seed}")
      columns.append(p)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(np.stack([np.asarray(c, np.int64) for c in columns], axis=1).tolist())


def read_csv(path: str) -> PredictionTable:
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header, data = rows[0], np.array(rows[1:], np.int64)
  col = {name: i for i, name in enumerate(header)}
  preds = {}
  for name in header:
    if name.startswith("pred/"):
      _, level, seed = name.split("/")
      preds.setdefault(level, {})[int(seed)] = data[:, col[name]]
  attributes = data[:, [col[a] for a in celeba.ATTRIBUTES]]
  return PredictionTable(data[:, col["id"]], data[:, col["label"]], attributes, preds)


def cie_sets(table: PredictionTable, level: str, baseline: str, top_fraction: float) -> dict:
  base, comp = table.population(baseline), table.population(level)
  return {"modal": cie.modal_cie(base, comp), "taxicab": cie.taxicab_cie(base, comp, top_fraction)}


def cie_summary(table: PredictionTable, selected: np.ndarray, level: str, baseline: str) -> dict:
  """Count, fraction, over-indexing, and both populations' metrics on CIE / non-CIE."""
  labels = table.labels
  on = lambda lvl, where: subgroups.population_metrics(labels, table.population(lvl), where) if where.any() else None
  return {
      "count": int(selected.sum()), "fraction": float(selected.mean()),
      "ids": [int(i) for i in table.ids[selected]],
      "over_index": subgroups.over_indexing(selected, table.attributes),
      "blond_share_of_cie": float(labels[selected].mean()) if selected.any() else float("nan"),
      "metrics": {"compressed_on_cie": on(level, selected), "baseline_on_cie": on(baseline, selected),
                  "compressed_on_non_cie": on(level, ~selected), "baseline_on_non_cie": on(baseline, ~selected)},
  }


def _delta(now: dict, base: dict) -> dict:
  return {m: now[m] - base[m] for m in subgroups.METRICS}


def analyse(table: PredictionTable, baseline: str = "baseline", top_fraction: float = 0.1) -> dict:
  """{level: {'all', 'subgroups', 'change_vs_baseline', 'cie'}} for every level of the table."""
  base_all = subgroups.population_metrics(table.labels, table.population(baseline))
  base_sub = subgroups.subgroup_metrics(table.labels, table.population(baseline), table.attributes)
  out = {}
  for level in table.preds:
    preds = table.population(level)
    overall = subgroups.population_metrics(table.labels, preds)
    sub = subgroups.subgroup_metrics(table.labels, preds, table.attributes)
    entry = {"num_models": int(preds.shape[0]), "all": overall, "subgroups": sub,
             "change_vs_baseline": {"all": _delta(overall, base_all),
                                    "subgroups": {g: _delta(sub[g], base_sub[g]) for g in sub}}}
    if level != baseline:
      sets = cie_sets(table, level, baseline, top_fraction)
      entry["cie"] = {m: cie_summary(table, sets[m], level, baseline) for m in CIE_METHODS}
    out[level] = entry
  return out


# --- report.md and plots -------------------------------------------------------------------


def fmt(x, pct: bool = False, signed: bool = False) -> str:
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "n/a"
  x = 100 * x if pct else x
  return f"{x:+.2f}" if signed else f"{x:.2f}" if pct else f"{x:.3f}"


def _table(header: list, rows: list) -> list:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def summary_table(results: dict) -> list:
  header = ["level", "models", "target sparsity", "achieved sparsity", "accuracy %", "precision %", "recall %",
            "F1 %", "Δ accuracy (pp)", "modal CIE", "modal CIE %", "taxicab CIE"]
  rows = []
  for level, a in results["analysis"].items():
    meta, m = results["levels"][level], a["all"]
    c = a.get("cie", {})
    rows.append([level, str(a["num_models"]), fmt(meta.get("sparsity")), fmt(meta.get("achieved_sparsity")),
                 f"{fmt(m['accuracy'], True)} ± {fmt(m['accuracy_std'], True)}", fmt(m["precision"], True),
                 fmt(m["recall"], True), fmt(m["f1"], True),
                 fmt(a["change_vs_baseline"]["all"]["accuracy"], True, True),
                 str(c["modal"]["count"]) if c else "-", fmt(c["modal"]["fraction"], True) if c else "-",
                 str(c["taxicab"]["count"]) if c else "-"])
  return _table(header, rows)


def subgroup_table(results: dict, metric: str, change: bool = False) -> list:
  groups = list(next(iter(results["analysis"].values()))["subgroups"])
  rows = []
  for level, a in results["analysis"].items():
    src = a["change_vs_baseline"]["subgroups"] if change else a["subgroups"]
    rows.append([level, *[fmt(src[g][metric], True, change) for g in groups]])
  return _table(["level", *groups], rows)


def cie_table(results: dict, method: str) -> list:
  header = ["level", "CIE", "baseline acc. on CIE %", "compressed acc. on CIE %",
            "baseline acc. on non-CIE %", "compressed acc. on non-CIE %", "Blond share of CIE %"]
  rows = []
  for level, a in results["analysis"].items():
    if "cie" not in a:
      continue
    c = a["cie"][method]
    acc = lambda k: fmt((c["metrics"][k] or {}).get("accuracy"), True)
    rows.append([level, str(c["count"]), acc("baseline_on_cie"), acc("compressed_on_cie"),
                 acc("baseline_on_non_cie"), acc("compressed_on_non_cie"), fmt(c["blond_share_of_cie"], True)])
  return _table(header, rows)


def over_index_table(results: dict, method: str) -> list:
  groups = list(next(iter(results["analysis"].values()))["subgroups"])
  rows = [[level, *[fmt(a["cie"][method]["over_index"][g]["over_index"]) for g in groups]]
          for level, a in results["analysis"].items() if "cie" in a]
  return _table(["level", *groups], rows)


def sparsity_table(results: dict) -> list:
  levels = [l for l, m in results["levels"].items() if m["kind"] in ("baseline", "pruning")]
  tensors = list(results["levels"][levels[-1]]["achieved_per_tensor"])
  rows = [[t, *[fmt(results["levels"][l]["achieved_per_tensor"][t], True) for l in levels]] for t in tensors]
  rows.append(["**overall**", *[fmt(results["levels"][l]["achieved_sparsity"], True) for l in levels]])
  return _table(["tensor (mean over models, %)", *levels], rows)


def write_report(results: dict, path: str) -> None:
  cfg, t = results["config"], results["top_fraction"]
  lines = [
      f"# Compression bias on CelebA `{cfg['dataset']['label_attribute']}`"
      + (" (synthetic twin)" if cfg["dataset"]["synthetic"] else ""),
      "", f"Model: {results['model']} ({results['num_params']:,} parameters, {results['trainable_params']:,} trainable). "
      f"{results['num_test']} test examples; populations of {cfg['cie']['num_seeds']} seeds; "
      f"{results['total_steps']} steps of batch {cfg['batch_size']}; pruning {cfg['pruning']['scope']} "
      f"(begin {cfg['pruning']['begin_step']}, end {cfg['pruning']['end_step']}, every {cfg['pruning']['frequency']}).",
      "", "Every number below is recomputed from `predictions.csv` (see `jax_resnets/evaluation/report_cie.py`). "
      "Metric values are means over the population (± std across models); `n/a` = undefined (empty denominator). "
      "Modal CIE ties go to label 0; taxicab CIE = top "
      f"{t:.0%} of the test set by L1 distance (distance 0 excluded).",
      "", "## Levels", "", *summary_table(results),
  ]
  for metric, title in (("fnr", "False-negative rate"), ("fpr", "False-positive rate"), ("error", "Error rate")):
    lines += ["", f"## {title} per subgroup (%)", "", *subgroup_table(results, metric),
              "", "Change against baseline (percentage points):", "", *subgroup_table(results, metric, True)]
  for method in ("modal", "taxicab"):
    lines += ["", f"## {method.capitalize()} CIE: accuracy on CIE and non-CIE", "", *cie_table(results, method),
              "", f"Over-indexing of {method} CIE (subgroup share of CIE / share of test set; > 1 = over-represented):",
              "", *over_index_table(results, method)]
  lines += ["", "## Achieved sparsity", "", *sparsity_table(results), "", "## Plots", "",
            "![subgroup FNR/FPR vs sparsity](subgroup_rates.png)", "", "![CIE fraction per level](cie_fraction.png)",
            "", f"![modal CIE images at {results['grid_level']}](cie_grid.png)", ""]
  if results.get("cv"):
    cv = results["cv"]
    lines += ["## Baseline k-fold cross-validation", "",
              f"{cv['folds']} folds: accuracy {fmt(cv['accuracy_mean'], True)} ± {fmt(cv['accuracy_std'], True)} % "
              f"(per fold: {', '.join(fmt(a, True) for a in cv['accuracy'])})", ""]
  lines += ["## Timing", "", *[f"- {k}: {v}" for k, v in results["timing"].items()], ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_subgroup_rates(results: dict, path: str) -> None:
  """FNR and FPR of every subgroup against target sparsity (baseline = 0)."""
  plt = _pyplot()
  levels = [l for l, m in results["levels"].items() if m["kind"] in ("baseline", "pruning")]
  x = [results["levels"][l]["sparsity"] for l in levels]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, metric in zip(axes, ("fnr", "fpr")):
    for g in results["analysis"][levels[0]]["subgroups"]:
      ax.plot(x, [100 * results["analysis"][l]["subgroups"][g][metric] for l in levels], marker="o", label=g)
    ax.set(xlabel="target sparsity", ylabel=f"{metric.upper()} (%)", title=f"{metric.upper()} per subgroup")
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_cie_fraction(results: dict, path: str) -> None:
  plt = _pyplot()
  levels = [l for l in results["analysis"] if "cie" in results["analysis"][l]]
  x = np.arange(len(levels))
  fig, ax = plt.subplots(figsize=(max(6, len(levels)), 4))
  for i, method in enumerate(CIE_METHODS):
    ax.bar(x + (i - 0.5) * 0.4, [100 * results["analysis"][l]["cie"][method]["fraction"] for l in levels], 0.4,
           label=method)
  ax.set_xticks(x, levels, rotation=30, ha="right")
  ax.set(ylabel="CIE (% of test set)", title="CIE fraction per compression level")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_cie_grid(images: list, captions: list, path: str, title: str, columns: int = 8) -> None:
  """A grid of (uint8 HWC) CIE images with one caption each (an empty note if none)."""
  plt = _pyplot()
  rows = max(1, -(-len(images) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.4), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, image, caption in zip(axes.ravel(), images, captions):
    ax.imshow(image)
    ax.set_title(caption, fontsize=6)
  fig.suptitle(title if images else title + " (no CIE at this level)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
