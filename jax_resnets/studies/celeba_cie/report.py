"""CIE study analysis: every reported number is computed from the predictions table.

`predictions.csv` (one row per test example):
  id, label, <the 40 CelebA attributes in ATTRIBUTES order>, then one column per model
  `pred/<level>/<seed>` holding that model's predicted label (0/1).
`analyse(table)` recomputes all metrics, CIE sets and over-indexing from it, so the
report can be re-derived with numpy alone (tests/test_celeba_cie_study.py does so), plus
bootstrap intervals (stats.py) so the report can say which subgroup changes are evidence
and which are noise: report.md opens with those findings (tests/test_cie_report.py).
"""
import csv
import dataclasses
import os

import numpy as np

from jax_resnets.data import celeba
from jax_resnets.studies.celeba_cie import cie
from jax_resnets.studies.celeba_cie import stats
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


def cie_summary(table: PredictionTable, selected: np.ndarray, level: str, baseline: str,
                masks: dict | None = None) -> dict:
  """Count, fraction, over-indexing, and both populations' metrics on CIE / non-CIE."""
  labels = table.labels
  on = lambda lvl, where: subgroups.population_metrics(labels, table.population(lvl), where) if where.any() else None
  return {
      "count": int(selected.sum()), "fraction": float(selected.mean()),
      "ids": [int(i) for i in table.ids[selected]],
      "over_index": subgroups.over_indexing(selected, table.attributes, masks),
      "blond_share_of_cie": float(labels[selected].mean()) if selected.any() else float("nan"),
      "metrics": {"compressed_on_cie": on(level, selected), "baseline_on_cie": on(baseline, selected),
                  "compressed_on_non_cie": on(level, ~selected), "baseline_on_non_cie": on(baseline, ~selected)},
  }


def _delta(now: dict, base: dict) -> dict:
  return {m: now[m] - base[m] for m in subgroups.METRICS}


def _level_entry(table: PredictionTable, level: str, base_all: dict, base_sub: dict) -> dict:
  preds = table.population(level)
  overall = subgroups.population_metrics(table.labels, preds)
  sub = subgroups.subgroup_metrics(table.labels, preds, table.attributes)
  return {"num_models": int(preds.shape[0]), "all": overall, "subgroups": sub,
          "change_vs_baseline": {"all": _delta(overall, base_all),
                                 "subgroups": {g: _delta(sub[g], base_sub[g]) for g in sub}}}


def _add_rate_intervals(table: PredictionTable, out: dict, baseline: str, boot: dict) -> None:
  """Adds n, positives, negatives and each rate's interval / delta interval to every subgroup row.

  Population rate = mean of the K models' rates (not the modal prediction's rate).
  """
  errors = np.stack([subgroups.error_fraction(table.labels, table.population(l)) for l in out])
  base = subgroups.error_fraction(table.labels, table.population(baseline))
  per_level = subgroups.rate_intervals(table.labels, errors, base, table.attributes, boot["positive_name"],
                                       boot["resamples"], boot["seed"])
  for (level, entry), evidence in zip(out.items(), per_level):
    entry["bootstrap"] = boot
    for g, e in evidence.items():
      counts = {"n": e["n"], "positives": e["positives"], "negatives": e["negatives"]}
      entry["subgroups"][g].update(counts)
      entry["subgroups"][g].update({f"{r}_{k}": e[r][k] for r in subgroups.RATES for k in ("ci", "note")})
      entry["change_vs_baseline"]["subgroups"][g].update(counts)
      entry["change_vs_baseline"]["subgroups"][g].update(
          {f"{r}_{k}": e[r][d] for r in subgroups.RATES
           for k, d in (("ci", "delta_ci"), ("note", "note"), ("significant", "delta_significant"))})


def _add_cie(table: PredictionTable, out: dict, baseline: str, top_fraction: float, boot: dict) -> None:
  """CIE summaries, with over-representation intervals for subgroups and label x Male x Young cells."""
  masks = {**subgroups.subgroup_masks(table.attributes),
           **subgroups.cell_masks(table.attributes, table.labels, boot["positive_name"])}
  keys, sets = [], []
  for level, entry in out.items():
    if level == baseline:
      continue
    found = cie_sets(table, level, baseline, top_fraction)
    entry["cie"] = {m: cie_summary(table, found[m], level, baseline, masks) for m in CIE_METHODS}
    keys += [(level, m) for m in CIE_METHODS]
    sets += [found[m] for m in CIE_METHODS]
  if not sets:
    return
  evidence = subgroups.over_index_intervals(np.stack(sets), masks, boot["resamples"], boot["seed"])
  for (level, method), groups in zip(keys, evidence):
    for g, e in groups.items():
      row = out[level]["cie"][method]["over_index"][g]
      row.update({"n": e["n"], "cie_in_group": e["cie_in_group"], "expected": e["expected"],
                  "over_index_ci": e["ci"], "note": e["note"], "significant": e["significant"]})


def analyse(table: PredictionTable, baseline: str = "baseline", top_fraction: float = 0.1,
            positive_name: str = "Blond", num_resamples: int = stats.NUM_RESAMPLES,
            seed: int = stats.SEED) -> dict:
  """{level: {'all', 'subgroups', 'change_vs_baseline', 'cie', 'bootstrap'}} for every level.

  Subgroup rows carry n / positives / negatives, `<rate>_ci` ([lo, hi]) and `<rate>_note`
  (why a rate is withheld); their change rows add the paired delta's `<rate>_ci` and
  `<rate>_significant`. `positive_name` names label 1 in the label x Male x Young cells.
  """
  base_all = subgroups.population_metrics(table.labels, table.population(baseline))
  base_sub = subgroups.subgroup_metrics(table.labels, table.population(baseline), table.attributes)
  out = {level: _level_entry(table, level, base_all, base_sub) for level in table.preds}
  boot = {"resamples": num_resamples, "seed": seed, "confidence": stats.CONFIDENCE, "min_count": stats.MIN_COUNT,
          "population_rate": "mean of the K models' rates", "positive_name": positive_name}
  _add_rate_intervals(table, out, baseline, boot)
  _add_cie(table, out, baseline, top_fraction, boot)
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


RATE_NAMES = {"error": "error", "fpr": "FPR", "fnr": "FNR"}


def fmt_ci(ci, pct: bool = True, signed: bool = False) -> str:
  return f"[{fmt(ci[0], pct, signed)}, {fmt(ci[1], pct, signed)}]"


def rate_cell(row: dict, rate: str) -> str:
  """'12.34 [10.10, 14.50]', or why the rate is withheld (too few / undefined)."""
  if row.get(f"{rate}_note"):
    return row[f"{rate}_note"]
  return f"{fmt(row[rate], True)} {fmt_ci(row[f'{rate}_ci'])}"


def delta_cell(row: dict, rate: str) -> str:
  """'+3.20 [+1.10, +5.30]'; 'n.s.' appended when the paired interval contains 0."""
  if row.get(f"{rate}_note"):
    return "-"
  text = f"{fmt(row[rate], True, True)} {fmt_ci(row[f'{rate}_ci'], True, True)}"
  return text if row[f"{rate}_significant"] else text + " n.s."


def audit_table(results: dict, level: str, baseline: str) -> list:
  """Rows = subgroups: n, positives, each rate with its interval and its paired delta vs baseline."""
  a = results["analysis"][level]
  header = ["subgroup", "n", "positives"]
  for r in subgroups.RATES:
    header += [f"{RATE_NAMES[r]} % [95% CI]", f"Δ {RATE_NAMES[r]} pp [95% CI]"]
  rows = []
  for g, row in a["subgroups"].items():
    change = a["change_vs_baseline"]["subgroups"][g]
    cells = [g, str(row["n"]), str(row["positives"])]
    for r in subgroups.RATES:
      cells += [rate_cell(row, r), "(reference)" if level == baseline else delta_cell(change, r)]
    rows.append(cells)
  return _table(header, rows)


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


def over_index_cell(row: dict) -> str:
  """'1.52 [1.10, 2.01]'; 'n.s.' appended when the interval contains 1; or why it is withheld."""
  if row.get("note"):
    return row["note"]
  text = f"{fmt(row['over_index'])} {fmt_ci(row['over_index_ci'], False)}"
  return text if row["significant"] else text + " n.s."


def over_index_table(results: dict, method: str) -> list:
  """Rows = subgroups and label x Male x Young cells; columns = levels."""
  levels = [l for l, a in results["analysis"].items() if "cie" in a]
  if not levels:
    return ["(no compressed level)"]
  first = results["analysis"][levels[0]]["cie"][method]["over_index"]
  rows = [[g, str(first[g].get("n", "-")),
           *[over_index_cell(results["analysis"][l]["cie"][method]["over_index"][g]) for l in levels]]
          for g in first]
  return _table(["group", "n", *levels], rows)


def sparsity_table(results: dict) -> list:
  levels = [l for l, m in results["levels"].items() if m["kind"] in ("baseline", "pruning")]
  tensors = list(results["levels"][levels[-1]]["achieved_per_tensor"])
  rows = [[t, *[fmt(results["levels"][l]["achieved_per_tensor"][t], True) for l in levels]] for t in tensors]
  rows.append(["**overall**", *[fmt(results["levels"][l]["achieved_sparsity"], True) for l in levels]])
  return _table(["tensor (mean over models, %)", *levels], rows)


def _baseline(results: dict) -> str:
  """The reference level: the one without CIE (analyse computes CIE for every other level)."""
  return next(l for l, a in results["analysis"].items() if "cie" not in a)


def hurt(a: dict) -> list:
  """'Male (n=.., positives=..): FNR +12.30 pp [+4.10, +20.20]' per subgroup with a significant rise."""
  out = []
  for g, row in a["change_vs_baseline"]["subgroups"].items():
    rises = [f"{RATE_NAMES[r]} {fmt(row[r], True, True)} pp {fmt_ci(row[f'{r}_ci'], True, True)}"
             for r in subgroups.RATES if row.get(f"{r}_significant") and row[f"{r}_ci"][0] > 0]
    if rises:
      out.append(f"{g} (n={row['n']}, positives={row['positives']}): {', '.join(rises)}")
  return out


def over_represented(a: dict, method: str = "modal") -> list:
  """'Blond, Male, Young ×3.10 [2.00, 4.50] (n=.., .. CIE)' per group whose interval lies above 1."""
  return [f"{g} ×{fmt(row['over_index'])} {fmt_ci(row['over_index_ci'], False)} (n={row['n']}, "
          f"{row['cie_in_group']} CIE)" for g, row in a["cie"][method]["over_index"].items()
          if row.get("significant") and row["over_index_ci"][0] > 1]


def _listed(title: str, items: list) -> list:
  return [f"  - {title}: none"] if not items else [f"  - {title}:", *[f"    - {i}" for i in items]]


def findings(results: dict) -> list:
  """Per compressed level: subgroups significantly hurt and groups with significantly more CIE, or 'none'."""
  boot = next(iter(results["analysis"].values())).get("bootstrap", {})
  conf = boot.get("confidence", stats.CONFIDENCE)
  lines, tested, found = [], 0, 0
  for level, a in results["analysis"].items():
    if "cie" not in a:
      continue
    changes = a["change_vs_baseline"]["subgroups"].values()
    tested += sum(not row.get(f"{r}_note") for row in changes for r in subgroups.RATES)
    found += sum(bool(row.get(f"{r}_significant")) and row[f"{r}_ci"][0] > 0 for row in changes
                 for r in subgroups.RATES)
    lines += [f"- **{level}**", *_listed("significantly hurt", hurt(a)),
              *_listed("modal CIE significantly over-represented in", over_represented(a))]
  return ["## Findings", "",
          f"Per compressed level: subgroups whose error, FPR or FNR rose against `{_baseline(results)}` with the "
          f"paired {conf:.0%} interval of the rise above 0 (change, interval, subgroup size), and groups whose "
          "modal-CIE over-representation interval lies above 1. Anything else is within the noise and not named.",
          "", *lines, "",
          f"{found} of {tested} tested subgroup rate changes are significant rises; if compression changed nothing, "
          f"about {tested * (1 - conf) / 2:.1f} would be by chance ({conf:.0%} intervals, no multiplicity "
          f"correction). Rates over fewer than {boot.get('min_count', stats.MIN_COUNT)} positives / negatives "
          "are not tested."]


def tie_line(cie_cfg: dict) -> str:
  """How modal ties were settled: none can occur with an odd K (binary labels)."""
  k, rule = cie_cfg["num_seeds"], cie_cfg.get("tie_rule", "label_0")
  if k % 2:
    return f"Modal CIE: K = {k} is odd, so no modal label ties"
  return f"Modal CIE: K = {k} is even, so modal labels can tie; ties go to label 0 (`cie.tie_rule={rule}`)"


def method_lines(results: dict) -> list:
  cfg, t = results["config"], results["top_fraction"]
  boot = next(iter(results["analysis"].values())).get("bootstrap", {})
  return [
      f"Model: {results['model']} ({results['num_params']:,} parameters, {results['trainable_params']:,} trainable). "
      f"{results['num_test']} test examples; populations of {cfg['cie']['num_seeds']} seeds; "
      f"{results['total_steps']} steps of batch {cfg['batch_size']}; pruning {cfg['pruning']['scope']} "
      f"(begin {cfg['pruning']['begin_step']}, end {cfg['pruning']['end_step']}, every {cfg['pruning']['frequency']}).",
      "", "Every number below is recomputed from `predictions.csv` (see `jax_resnets/studies/celeba_cie/report.py`). "
      "Metric values are means over the population (± std across models); `n/a` = undefined (empty denominator). "
      f"{tie_line(cfg['cie'])}; taxicab CIE = top "
      f"{t:.0%} of the test set by L1 distance (distance 0 excluded).",
      "", f"Intervals: {boot.get('confidence', stats.CONFIDENCE):.0%} percentile bootstrap over the test examples "
      f"({boot.get('resamples', stats.NUM_RESAMPLES)} resamples, seed {boot.get('seed', stats.SEED)}). A population's "
      "rate is the mean of its K models' rates (not the modal prediction's). A change against the baseline "
      "resamples the same examples for both populations (paired); `n.s.` = its interval contains 0 "
      "(over-representation: contains 1). A rate over fewer than "
      f"{boot.get('min_count', stats.MIN_COUNT)} positives (FNR), negatives (FPR) or examples is withheld and "
      "says so. CIE membership is held fixed while resampling. The intervals cover test-set sampling for these "
      "trained models, not the spread from training new populations.",
  ]


def write_report(results: dict, path: str) -> None:
  cfg, base = results["config"], _baseline(results)
  lines = [f"# Compression bias on CelebA `{cfg['dataset']['label_attribute']}`"
           + (" (synthetic twin)" if cfg["dataset"]["synthetic"] else ""), "", *findings(results), "",
           "## Setup", "", *method_lines(results), "", "## Levels", "", *summary_table(results), "",
           *curves_lines(results),
           "## Subgroup audit", "", "Rates in %, changes against the baseline in percentage points, each with its "
           "95% interval (see Setup)."]
  for level in results["analysis"]:
    lines += ["", f"### {level}", "", *audit_table(results, level, base)]
  for metric, title in (("fnr", "False-negative rate"), ("fpr", "False-positive rate"), ("error", "Error rate")):
    lines += ["", f"## {title} per subgroup (%): point estimates", "",
              "Means over the population without intervals or minimum counts (the numbers the plot draws); "
              "read them with the subgroup audit above.", "", *subgroup_table(results, metric)]
  for method in ("modal", "taxicab"):
    lines += ["", f"## {method.capitalize()} CIE: accuracy on CIE and non-CIE", "", *cie_table(results, method),
              "", f"Over-representation of {method} CIE (share of CIE in the group / the group's share of the test "
              "set; > 1 = over-represented; 95% interval; n = group size in the test set):",
              "", *over_index_table(results, method)]
  lines += _tail_lines(results)
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _tail_lines(results: dict) -> list:
  lines = ["", "## Achieved sparsity", "", *sparsity_table(results), "", "## Plots", "",
           "![subgroup FNR/FPR vs sparsity](subgroup_rates.png)", "", "![CIE fraction per level](cie_fraction.png)",
           "", f"![modal CIE images at {results['grid_level']}](cie_grid.png)", ""]
  if results.get("cv"):
    lines += cv_lines(results["cv"])
  return lines + ["## Timing", "", *[f"- {k}: {v}" for k, v in results["timing"].items()], ""]


CURVE_TAGS = ("train/loss", "train/loss_std", "eval/loss", "eval/loss_std")


def epoch_curves(scalars: dict) -> list:
  """One row per epoch end (each `eval/loss` point) from a level's TensorBoard scalars: the
  validation loss there, and the train loss (population mean, and its std across models) averaged
  over the steps logged since the previous epoch end. Values are means over the K models."""
  evals = scalars.get("eval/loss", [])
  rows, previous, per_epoch = [], 0, evals[0][0] if evals else 1  # The first evaluation ends epoch 1.
  for step, _ in evals:
    row = {"epoch": round(step / per_epoch, 2), "step": step}  # A last, partial epoch: e.g. 6.05.
    for tag in CURVE_TAGS:
      if tag.startswith("eval/"):
        row[tag] = dict(scalars.get(tag, [])).get(step)
      else:
        window = [v for s, v in scalars.get(tag, []) if previous < s <= step]
        row[tag] = float(np.mean(window)) if window else None
    rows.append(row)
    previous = step
  return rows


def read_curves(level_dir: str) -> list:
  """`epoch_curves` of the level's event files (resume-safe: a resumed process's points win)."""
  from jax_resnets.studies.classification import study as classification  # pylint: disable=g-import-not-at-top
  return epoch_curves(classification.read_scalars(level_dir)) if os.path.isdir(level_dir) else []


def curve_levels(results: dict) -> list:
  """The baseline and the study's grid level (the highest non-collapsed sparsity), when curves exist."""
  curves = results.get("curves") or {}
  wanted = [_baseline(results), results.get("grid_level")]
  return [l for i, l in enumerate(wanted) if l in curves and curves[l] and l not in wanted[:i]]


def _mean_std(row: dict, tag: str) -> str:
  mean, std = row.get(tag), row.get(f"{tag}_std")
  return "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def curves_lines(results: dict) -> list:
  """Per-epoch train and validation loss (mean ± std over the population) of the curve levels."""
  levels = curve_levels(results)
  if not levels:
    return []
  lines = ["## Train and validation loss", "",
           "Population mean ± std across the K models per epoch, read from each level's TensorBoard events "
           "(`levels/<level>/events.*`: `train/loss`, `eval/loss` and their `_std`); train = mean of the "
           "steps logged in the epoch, validation = the epoch-end evaluation on "
           f"`{results['config']['cie'].get('validation_split') or results['config']['dataset']['eval_split']}`.",
           "", "![train and validation loss](loss_curves.png)"]
  for level in levels:
    rows = [[f"{r['epoch']:g}", str(r["step"]), _mean_std(r, "train/loss"), _mean_std(r, "eval/loss")]
            for r in results["curves"][level]]
    lines += ["", f"### {level}", "", *_table(["epoch", "step", "train loss", "validation loss"], rows)]
  return lines + [""]


def plot_loss_curves(results: dict, path: str) -> None:
  """Train vs validation loss per epoch, mean ± std band, one panel per curve level."""
  levels = curve_levels(results)
  if not levels:
    return
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 4), squeeze=False)
  for ax, level in zip(axes[0], levels):
    rows = results["curves"][level]
    x = [r["epoch"] for r in rows]
    for tag, label in (("train/loss", "train"), ("eval/loss", "validation")):
      y = np.array([np.nan if r[tag] is None else r[tag] for r in rows], float)
      sd = np.array([np.nan if r[f"{tag}_std"] is None else r[f"{tag}_std"] for r in rows], float)
      ax.plot(x, y, marker="o", label=label)
      ax.fill_between(x, y - sd, y + sd, alpha=0.25)
    ax.set(xlabel="epoch", ylabel="loss (population mean ± std)", title=level)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def cv_lines(cv: dict) -> list:
  """Mean ± std across folds of the held-out metrics and of the fold populations' CIE count."""
  if "per_fold" not in cv:  # Results written before the per-fold metrics.
    return ["## Baseline k-fold cross-validation", "",
            f"{cv['folds']} folds: accuracy {fmt(cv['accuracy_mean'], True)} ± {fmt(cv['accuracy_std'], True)} %", ""]
  names = {"accuracy": "accuracy %", "precision": "precision %", "recall": "recall %", "f1": "F1 %",
           "cie_count": "modal CIE vs baseline (test)"}
  cell = lambda m, v: f"{v:.1f}" if m == "cie_count" else fmt(v, True)
  rows = [[str(f), *[cell(m, r[m]) for m in names]] for f, r in enumerate(cv["per_fold"])]
  rows.append(["mean ± std", *[f"{cell(m, cv['mean'][m])} ± {cell(m, cv['std'][m])}" for m in names]])
  return ["## Baseline k-fold cross-validation", "",
          f"{cv['folds']} folds of the training split; each fold's population (same K, seeds and steps as the "
          "baseline) is trained on the other folds. Accuracy, precision, recall and F1 (means over its K models) "
          "are on its held-out fold. Modal CIE is counted on the test split against the full baseline "
          "population: those examples change modal label without any compression, only because the "
          "population was trained on 1/k fewer examples, so it is the noise floor a compression level's "
          "CIE count should be read against.", "",
          *_table(["fold", *names.values()], rows), ""]


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _rate_or_nan(row: dict, rate: str, bound: int | None) -> float:
  """The rate (bound None) or an end of its interval; NaN (not drawn) when it is withheld."""
  if row.get(f"{rate}_note"):
    return float("nan")
  ci = row.get(f"{rate}_ci")
  return row[rate] if bound is None or ci is None else ci[bound]


def plot_subgroup_rates(results: dict, path: str) -> None:
  """FNR and FPR of every subgroup against target sparsity (baseline = 0)."""
  plt = _pyplot()
  levels = [l for l, m in results["levels"].items() if m["kind"] in ("baseline", "pruning")]
  x = [results["levels"][l]["sparsity"] for l in levels]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, metric in zip(axes, ("fnr", "fpr")):
    groups = list(results["analysis"][levels[0]]["subgroups"])
    for j, g in enumerate(groups):
      rows = [results["analysis"][l]["subgroups"][g] for l in levels]
      y, lo, hi = (100 * np.array([_rate_or_nan(r, metric, k) for r in rows]) for k in (None, 0, 1))
      dodge = 0.006 * (j - (len(groups) - 1) / 2)  # Side by side, so the intervals stay readable.
      ax.errorbar(np.add(x, dodge), y, yerr=[y - lo, hi - y], marker="o", capsize=2, label=g)
    ax.set(xlabel="target sparsity", ylabel=f"{metric.upper()} (%)",
           title=f"{metric.upper()} per subgroup (95% CI; withheld rates omitted)")
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
