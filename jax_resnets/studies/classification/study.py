"""Plain supervised classification (e.g. ResNet-34 on CIFAR-10): train, evaluate, report.

report.md has the final metrics, the seed notebook's per-epoch table (train loss and
accuracy averaged within each epoch, validation loss and accuracy at each epoch end) and a
validation-accuracy plot (validation_accuracy.png next to it). The history comes from the
run's own TensorBoard event files, not from this process's memory, so the report of a
resumed run covers every epoch, including those trained before the restart.
"""
import math
import os

import jax
import ml_collections

from jax_resnets.training import loop

PLOT = "validation_accuracy.png"
COLUMNS = (("train/loss", "train loss", ".4f"), ("train/accuracy", "train accuracy", ".4f"),
           ("eval/loss", "validation loss", ".4f"), ("eval/accuracy", "validation accuracy", ".4f"))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  results = loop.train_and_evaluate(config, workdir)
  if jax.process_index() == 0:
    write_report(results, workdir)
  return results


def _file_scalars(path: str) -> dict[str, dict[int, float]]:
  """tag -> {step: value} of one event file (a repeated step keeps its latest value)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags().get("scalars", [])}


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> sorted [(step, value)] over the workdir's event files, one per process of the run.

  Files are read oldest first (their names start with the creation time). A resumed process
  restarts from its last checkpoint, so from the first step it logs on, the earlier processes'
  points are stale (steps it repeats, or steps past the checkpoint that died with a crash):
  they are dropped, and the latest process's values are kept.
  """
  files = sorted(f for f in os.listdir(workdir) if f.startswith("events.out.tfevents."))
  merged: dict[str, dict[int, float]] = {}
  for name in files:
    scalars = _file_scalars(os.path.join(workdir, name))
    first = min((min(points) for points in scalars.values() if points), default=None)
    if first is None:
      continue
    for tag in merged:
      merged[tag] = {s: v for s, v in merged[tag].items() if s < first}
    for tag, points in scalars.items():
      merged.setdefault(tag, {}).update(points)
  return {tag: sorted(points.items()) for tag, points in merged.items() if points}


def steps_per_epoch(results: dict, eval_steps: list[int]) -> float | None:
  """From the config when the run is epoch-based; else the first evaluation's step (one epoch)."""
  cfg = results.get("config", {})
  if not cfg.get("num_train_steps") and cfg.get("num_epochs") and results.get("steps"):
    return results["steps"] / cfg["num_epochs"]
  return float(eval_steps[0]) if eval_steps else None


def epoch_history(scalars: dict, spe: float | None) -> list[dict]:
  """One row per evaluation (each epoch's end): eval values there, train values averaged over the
  logged steps after the previous evaluation up to this one."""
  evals = scalars.get("eval/accuracy", [])
  rows, previous = [], 0
  for i, (step, _) in enumerate(evals):
    row = {"epoch": step / spe if spe else float(i + 1), "step": step}
    for tag, _, _ in COLUMNS:
      points = scalars.get(tag, [])
      if tag.startswith("eval/"):
        row[tag] = dict(points).get(step)
      else:
        window = [v for s, v in points if previous < s <= step]
        row[tag] = sum(window) / len(window) if window else None
    rows.append(row)
    previous = step
  return rows


def _cell(value, spec: str) -> str:
  return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _epoch(epoch: float) -> str:
  return str(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else f"{epoch:.2f}"


def history_table(rows: list[dict]) -> list[str]:
  """The seed notebook's per-epoch table as markdown lines."""
  lines = ["| epoch | " + " | ".join(name for _, name, _ in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for row in rows:
    lines.append(f"| {_epoch(row['epoch'])} | "
                 + " | ".join(_cell(row[tag], spec) for tag, _, spec in COLUMNS) + " |")
  return lines


def plot_validation_accuracy(rows: list[dict], path: str, title: str) -> str:
  """Validation accuracy per epoch as a PNG (matplotlib, no display)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.0))
  points = [(r["epoch"], 100 * r["eval/accuracy"]) for r in rows if r["eval/accuracy"] is not None]
  ax.plot([e for e, _ in points], [a for _, a in points], marker="o", markersize=3)
  ax.set(title=title, xlabel="epoch", ylabel="validation accuracy (%)")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def summary_lines(results: dict) -> list[str]:
  """The final metrics and run facts (this process's part of the run)."""
  return [
      "| metric | value |", "|---|---|",
      *[f"| {k} | {v:.4f} |" for k, v in sorted(results["final"].items())],
      f"| parameters | {results['num_params']:,} |",
      f"| steps | {results['steps']} |",
      f"| wall time this run (s) | {results['wall_time_s']:.1f} |",
  ]


def write_report(results: dict, workdir: str) -> None:
  """report.md: title, final metrics, per-epoch history table and the validation-accuracy plot."""
  cfg = results["config"]
  title = (f"{cfg['model']['name']}-{cfg['model']['depth']} on {cfg['dataset']['name']}"
           + (" (synthetic)" if cfg["dataset"]["synthetic"] else ""))
  scalars = read_scalars(workdir)
  rows = epoch_history(scalars, steps_per_epoch(results, [s for s, _ in scalars.get("eval/accuracy", [])]))
  lines = [f"# {title}", "", *summary_lines(results), "", "## Per epoch", ""]
  if rows:
    plot_validation_accuracy(rows, os.path.join(workdir, PLOT), f"{title}: validation accuracy")
    lines += [*history_table(rows), "", f"![validation accuracy]({PLOT})"]
  else:
    lines.append("No per-epoch evaluations in the event files (the run ended before its first epoch).")
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
