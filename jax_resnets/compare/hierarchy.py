"""Flat vs hierarchical heads (studies/hierarchy/study.py `write_report`).

results.json: {"stages": {stage: hierarchy_metrics}, "comparison": {row label: {fine_top1,
fine_top5, parent_accuracy, child_accuracy_mean, errors_within_parent, ...}}}. A stage's own
directory (DIR/stage1 of a `stage=all` run) holds the loop's results.json and
hierarchy_metrics.json instead; its metrics become the rows. Events are in each stage's
directory (DIR/stage1, stage2, stage2_children, stage3), or in DIR for a single-stage run.
"""
import json
import os

from jax_resnets.compare import adapter, markdown, plots, runs

STAGES = ("stage1", "stage2", "stage2_children", "stage3")
METRICS = ("fine_top1", "fine_top5", "parent_accuracy", "child_accuracy_mean", "errors_within_parent")


def comparison(run: runs.RunLog) -> dict:
  if "comparison" in run.results:
    return run.results["comparison"]
  path = os.path.join(run.workdir, "hierarchy_metrics.json")
  if not os.path.exists(path):
    raise runs.CompareError(f"{run.workdir}: a hierarchy run without results.json 'comparison' or "
                            "hierarchy_metrics.json (not finished?)")
  with open(path) as f:
    m = json.load(f)
  return {f"{m.get('stage', '?')} {routing}": v for routing, v in (m.get("metrics") or {}).items()}


def rows(run: runs.RunLog, opts: adapter.Options) -> list[dict]:
  del opts
  stages = run.results.get("stages") or {}
  out = []
  for label, m in comparison(run).items():
    row = {"run": run.name, "head": label, **{k: runs.number(m.get(k)) for k in METRICS}}
    stage = next((s for s in STAGES if label.startswith(s)), None) or _stage_of(label)
    row["steps"] = (stages.get(stage) or {}).get("steps") if stage else None
    out.append(row)
  return out


def _stage_of(label: str) -> str | None:
  """The study's row labels: 'flat' is stage1, 'parent only (+ child heads)' stage2_children (the
  child heads trained on the parent-only model), other hierarchy rows stage3."""
  return "stage1" if label == "flat" else "stage2_children" if "parent only" in label else "stage3"


def curves(run: runs.RunLog) -> list[plots.Curve]:
  """Validation accuracy and loss per epoch of each stage (hierarchy.png)."""
  subdirs = [s for s in STAGES if os.path.isdir(os.path.join(run.workdir, s))] or [""]
  out = []
  for sub in subdirs:
    for tag, panel in (("eval/accuracy", "validation accuracy"), ("eval/loss", "validation loss")):
      x, y = runs.per_epoch(run, tag, subdir=sub)
      out.append(plots.Curve("hierarchy.png", panel, f"{run.name} {sub}".strip(), list(x), list(y),
                             ylabel=tag.split("/")[1], color_key=f"{run.name} {sub}"))
  return out


COLUMNS = (("run", lambda r: r["run"]), ("head", lambda r: r["head"]),
           *[(f"{m} (%)", markdown.col(m, ".2f", 100)) for m in METRICS],
           ("steps", lambda r: str(r["steps"]) if r["steps"] is not None else "n/a"))

NOTE = ("Rows: each run's all-heads comparison (flat head, then the hierarchy head with hard and soft "
        "routing), on the eval split's fine labels; metrics as in the study's report.")

ADAPTER = adapter.Adapter("hierarchy", "hierarchy runs (flat vs hierarchical heads)", COLUMNS, rows, curves, NOTE)
