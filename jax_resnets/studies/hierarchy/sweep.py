"""All-heads report of a hierarchy grid (`configs/cifar100_hierarchy.py:d_sweep`): one table, one d plot.

The grid's cells are ordinary hierarchy runs in ROOT/<cell>: stage-1 runs of the flat heads
(`original`, `adaptive` D -> d -> C, `adaptive_nonlinear` D -> d -> act -> C, one cell per
d) and one `stage=all` run whose stage 1 is the original head and whose later stages are the
hierarchical head. This reads every cell's results.json and writes
  ROOT/heads_report.md: fine top-1, top-5 and head parameters of every head, and
  ROOT/d_sweep.png:     fine top-1 against d, each point labelled with its head parameters,
                        the original and hierarchical heads as horizontal references.
Each finished cell calls `write` (config `hierarchy.sweep_root`), so the grid command alone
leaves both files complete; `python -m jax_resnets.studies.hierarchy.sweep ROOT` redoes them.
"""
import json
import os
import sys

HIERARCHY_ROWS = ("hierarchy, parent only + child heads, hard routing",
                  "hierarchy, parent only + child heads, soft routing",
                  "hierarchy, hard routing", "hierarchy, soft routing")


def read_cells(root: str) -> dict:
  """Cell name -> its results.json, for every finished hierarchy run directly under `root`."""
  cells = {}
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
    path = os.path.join(root, name, "results.json")
    if os.path.exists(path):
      with open(path) as f:
        results = json.load(f)
      if "stages" in results and "comparison" in results:
        cells[name] = results
  return cells


def head_rows(cells: dict) -> list[dict]:
  """One row per head: the flat head of every cell's stage 1, the hierarchy head's routings."""
  rows = []
  for name, results in cells.items():
    stages = results["stages"]
    if "stage1" in stages:
      s = stages["stage1"]
      m = s["metrics"]["flat"]
      rows.append({"cell": name, "head": s["head"], "d": s.get("bottleneck"), "fine_top1": m["fine_top1"],
                   "fine_top5": m["fine_top5"], "head_params": s["head_params"], "steps": s["steps"]})
    for label in HIERARCHY_ROWS:
      if label in results["comparison"]:
        s = stages["stage2_children" if "parent only" in label else "stage3"]
        m = results["comparison"][label]
        rows.append({"cell": name, "head": label, "d": None, "fine_top1": m["fine_top1"],
                     "fine_top5": m.get("fine_top5"), "head_params": s["head_params"], "steps": s["steps"]})
  order = {"original": 0, "adaptive": 1, "adaptive_nonlinear": 2}
  return sorted(rows, key=lambda r: (order.get(r["head"], 3), r["d"] or 0))


def markdown(rows: list[dict]) -> str:
  cell = lambda v, spec: "n/a" if v is None else format(v, spec)
  lines = ["# All heads: original, adaptive, non-linear adaptive, hierarchical", "",
           "Fine top-1 / top-5 on the eval split. adaptive: D -> d -> C, linear; adaptive_nonlinear: the same "
           "with an activation after D -> d; hierarchical rows share the original head's stage-1 backbone. "
           "Top-5 is n/a under hard routing (it commits to one parent, whose children are then the top-5). "
           "Plot: d_sweep.png.", "",
           "| head | d | fine top-1 | fine top-5 | head params | steps | cell |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['head']} | {cell(r['d'], 'd')} | {cell(r['fine_top1'], '.4f')} | "
                 f"{cell(r['fine_top5'], '.4f')} | {r['head_params']:,} | {r['steps']} | {r['cell']} |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  """Fine top-1 vs d (log axis) per factorised head; params next to each point."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for head, marker in (("adaptive", "o"), ("adaptive_nonlinear", "s")):
    pts = sorted((r["d"], r["fine_top1"], r["head_params"]) for r in rows if r["head"] == head and r["d"])
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=head)
      for d, acc, params in pts:
        ax.annotate(f"{params:,}", (d, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
  for r, style in ((next((r for r in rows if r["head"] == "original"), None), "--"),
                   (next((r for r in rows if r["head"] == "hierarchy, soft routing"), None), ":")):
    if r:
      ax.axhline(r["fine_top1"], linestyle=style, color="gray", label=f"{r['head']} ({r['head_params']:,} params)")
  ax.set_xscale("log", base=2)
  ax.set(xlabel="d (bottleneck width)", ylabel="fine top-1", title="Accuracy vs d (labels: head parameters)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(root: str) -> dict:
  """ROOT/heads_report.md and ROOT/d_sweep.png from the finished cells (atomic replaces)."""
  rows = head_rows(read_cells(root))
  paths = {"report": os.path.join(root, "heads_report.md"), "plot": os.path.join(root, "d_sweep.png")}
  with open(paths["report"] + ".tmp", "w") as f:
    f.write(markdown(rows))
  os.replace(paths["report"] + ".tmp", paths["report"])
  plot(rows, paths["plot"] + ".tmp.png")
  os.replace(paths["plot"] + ".tmp.png", paths["plot"])
  return {"rows": rows, **paths}


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m jax_resnets.studies.hierarchy.sweep GRID_ROOT")
  print(write(sys.argv[1])["report"])
