"""Compression bias (CIE) runs on CelebA (studies/celeba_cie/study.py `run`).

results.json: {"analysis": {level: {"num_models", "all": {accuracy, precision, recall, f1,
..., <metric>_std}, "subgroups", "change_vs_baseline", "cie": {"modal": {"count",
"fraction", ...}, "taxicab": {...}}}}, "levels": {level: {"kind", "sparsity", "method"}},
"num_test", ...}; the baseline level has no "cie". Bootstrap intervals are read where
results.json has them, in any of the layouts `interval` accepts, and never required.
"""
from jax_resnets.compare import adapter, markdown, plots, runs

METRICS = ("accuracy", "precision", "recall", "f1")


def _pair(v) -> tuple | None:
  if isinstance(v, (list, tuple)) and len(v) == 2 and all(runs.number(x) is not None for x in v):
    return float(v[0]), float(v[1])
  return None


def interval(metric: str, *containers) -> tuple | None:
  """[lo, hi] of `metric` from `<metric>_ci`, `ci: {metric: [lo, hi]}` or `ci: {all: {...}}`."""
  for c in containers:
    if not isinstance(c, dict):
      continue
    ci = c.get("ci") if isinstance(c.get("ci"), dict) else {}
    for v in (c.get(f"{metric}_ci"), ci.get(metric), (ci.get("all") or {}).get(metric)):
      if _pair(v):
        return _pair(v)
  return None


def level_row(name: str, level: str, entry: dict, meta: dict) -> dict:
  overall, modal = entry.get("all") or {}, ((entry.get("cie") or {}).get("modal")) or {}
  row = {"run": name, "level": level, "models": entry.get("num_models"), "sparsity": meta.get("sparsity"),
         "modal_cie": runs.number(modal.get("count")), "modal_cie_fraction": runs.number(modal.get("fraction")),
         "modal_cie_ci": interval("count", modal), "modal_cie_fraction_ci": interval("fraction", modal)}
  for m in METRICS:
    row[m] = runs.number(overall.get(m))
    row[m + "_std"] = runs.number(overall.get(m + "_std"))
    row[m + "_ci"] = interval(m, overall, entry)
  return row


def rows(run: runs.RunLog, opts: adapter.Options) -> list[dict]:
  del opts
  levels = run.results.get("levels") or {}
  return [level_row(run.name, level, entry, levels.get(level) or {})
          for level, entry in (run.results.get("analysis") or {}).items()]


def _metric(m: str):
  def get(row):
    if row[m + "_ci"] is not None:
      return markdown.with_interval(row[m], row[m + "_ci"])
    std = "" if row[m + "_std"] is None or row[m] is None else f" ± {markdown.pct(row[m + '_std'])}"
    return markdown.pct(row[m]) + std
  return get


def _modal(row) -> str:
  if row["modal_cie"] is None:
    return "-"
  return markdown.with_interval(row["modal_cie"], row["modal_cie_ci"], scale=1, spec=".0f")


def curves(run: runs.RunLog) -> list[plots.Curve]:
  """cie.png: accuracy, F1 and modal CIE count against the compression level (error bars: intervals)."""
  out = []
  table = rows(run, adapter.Options())
  panels = (("accuracy", "accuracy (%)", 100), ("f1", "F1 (%)", 100), ("modal_cie", "modal CIE count", 1))
  for key, panel, scale in panels:
    pts = [r for r in table if r[key] is not None]
    cis = [r[key + "_ci"] for r in pts]
    err = None if not pts or any(c is None for c in cis) else tuple(
        [scale * c[i] for c in cis] for i in (0, 1))
    out.append(plots.Curve("cie.png", panel, run.name, [r["level"] for r in pts], [scale * r[key] for r in pts],
                           xlabel="compression level", ylabel=panel, err=err))
  return out


COLUMNS = (("run", lambda r: r["run"]), ("level", lambda r: r["level"]), ("models", lambda r: str(r["models"])),
           ("target sparsity", markdown.col("sparsity", ".3f")),
           *[(f"{m} (%)", _metric(m)) for m in ("accuracy", "precision", "recall")], ("F1 (%)", _metric("f1")),
           ("modal CIE", _modal), ("modal CIE (%)", lambda r: markdown.with_interval(r["modal_cie_fraction"],
                                                                                  r["modal_cie_fraction_ci"])))

NOTE = ("Per compression level, over each level's population of models: mean ± std over models, or "
        "[95% bootstrap interval] where results.json has one. Modal CIE: test examples where the compressed "
        "population's modal prediction differs from the baseline's.")

ADAPTER = adapter.Adapter("celeba_cie", "compression-bias (CIE) runs", COLUMNS, rows, curves, NOTE)
