r"""Compare finished runs: `python -m jax_resnets.compare DIR... --out OUT`.

Reads each run's `results.json` and TensorBoard event files (tensorboard's
EventAccumulator) and writes into OUT:
  accuracy.png, loss.png   train / validation curves per epoch, all runs overlaid;
  tradeoff.png             final accuracy against training wall time;
  report.md                a table (final accuracy, trainable params, MACs per image, wall
                           time, img/s, efficiency = accuracy % per million trainable params),
                           the best accuracy/compute trade-off, pretrained vs random and which
                           fine-tuning depth transfers best (when the runs differ that way);
  summary.json             the table's numbers.
Run names are the directory names. Compute is measured training wall time; the best
trade-off is the cheapest run within `--tolerance` accuracy points of the most accurate.
"""
import argparse
import dataclasses
import json
import math
import os
import sys

import numpy as np

DEPTH_ORDER = {"head_only": 0, "final_block": 1, "full": 3}


@dataclasses.dataclass
class RunLog:
  name: str
  results: dict
  scalars: dict  # tag -> [(step, value)]

  @property
  def config(self) -> dict:
    return self.results.get("config", {})


def read_run(workdir: str) -> RunLog:
  """results.json + every scalar of the run's event files."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: the run in {workdir} has not finished")
  with open(path) as f:
    results = json.load(f)
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  scalars = {}
  for tag in acc.Tags().get("scalars", []):
    latest = {e.step: e.value for e in acc.Scalars(tag)}  # A resumed run may repeat steps.
    scalars[tag] = sorted(latest.items())
  name = os.path.basename(os.path.normpath(workdir))
  return RunLog(name, results, scalars)


def steps_per_epoch(run: RunLog) -> float:
  cfg = run.config
  if not cfg.get("num_train_steps") and cfg.get("num_epochs"):
    return run.results["steps"] / cfg["num_epochs"]
  evals = [s for s, _ in run.scalars.get("eval/accuracy", [])]
  return float(min(evals)) if evals else float(run.results["steps"])


def per_epoch(run: RunLog, tag: str) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, values): eval tags at each evaluation, train tags averaged within each epoch."""
  points, spe = run.scalars.get(tag, []), steps_per_epoch(run)
  if tag.startswith("eval/"):
    return np.array([s / spe for s, _ in points]), np.array([v for _, v in points])
  epochs = {}
  for s, v in points:
    epochs.setdefault(max(1, math.ceil(s / spe)), []).append(v)
  keys = sorted(epochs)
  return np.array(keys, float), np.array([np.mean(epochs[k]) for k in keys])


def macs_per_image(cfg: dict) -> float | None:
  """XLA-counted MACs of one image's forward pass (None if the model can't be built here)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jax_resnets.data import sources  # pylint: disable=g-import-not-at-top
  from jax_resnets.evaluation import flops  # pylint: disable=g-import-not-at-top
  try:
    spec = sources.spec(ml_collections.ConfigDict(cfg["dataset"]))
    size = cfg["dataset"].get("image_size") or spec.image_size
    return flops.analyze_config(cfg["model"], spec.num_classes, size)["macs"]
  except Exception as e:  # pylint: disable=broad-except
    print(f"warning: no MACs for {cfg.get('model')}: {e}", file=sys.stderr)
    return None


def summarize(run: RunLog, with_macs: bool = True) -> dict:
  r, cfg = run.results, run.config
  accuracy = r["final"].get("eval/accuracy")
  ips = [v for _, v in run.scalars.get("train/img_per_sec", [])]
  img_per_sec = float(np.mean(ips)) if ips else (r.get("steps_per_sec") or 0) * cfg.get("batch_size", 0)
  trainable = r.get("trainable_params", r.get("num_params"))
  return {
      "run": run.name,
      "init": "pretrained" if (cfg.get("init") or {}).get("checkpoint") else "random",
      "freeze": str(cfg.get("freeze", "full")),
      "disabled_skips": ",".join(cfg.get("model", {}).get("disabled_skips") or ()) or "-",
      "accuracy": accuracy,
      "best_accuracy": max([v for _, v in run.scalars.get("eval/accuracy", [])] or [accuracy]),
      "trainable_params": trainable,
      "total_params": r.get("num_params"),
      "macs": macs_per_image(cfg) if with_macs else None,
      "wall_time_s": r.get("wall_time_s"),
      "img_per_sec": img_per_sec,
      "efficiency": 100 * accuracy / (trainable / 1e6) if trainable else None,
  }


def plot_curves(runs: list[RunLog], out: str) -> list[str]:
  """accuracy.png and loss.png: train | validation panels, one line per run."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for metric in ("accuracy", "loss"):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, run in enumerate(runs):
      color = plt.cm.tab10(i % 10)
      for ax, split in zip(axes, ("train", "eval")):
        x, y = per_epoch(run, f"{split}/{metric}")
        random_init = not (run.config.get("init") or {}).get("checkpoint")
        ax.plot(x, y, marker="o", markersize=3, color=color, linestyle="--" if random_init else "-",
                label=run.name)
    for ax, title in zip(axes, ("train", "validation")):
      ax.set(title=f"{title} {metric}", xlabel="epoch", ylabel=metric)
      ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out, f"{metric}.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths


def plot_tradeoff(rows: list[dict], out: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for row in rows:
    ax.scatter(row["wall_time_s"], 100 * row["accuracy"], marker="o" if row["init"] == "pretrained" else "x")
    ax.annotate(row["run"], (row["wall_time_s"], 100 * row["accuracy"]), fontsize=7)
  ax.set(xlabel="training wall time (s)", ylabel="final accuracy (%)", title="accuracy vs compute")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(out, "tradeoff.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _fmt(v, spec: str, scale: float | None = None) -> str:
  """`spec` "sig" = 4 significant digits without exponent (0.1824, 11,448)."""
  if v is None:
    return "n/a"
  v = v if scale is None else v * scale
  if spec == "sig":
    spec = f",.{max(0, 3 - math.floor(math.log10(abs(v))))}f" if v else ".0f"
  return format(v, spec)


def table(rows: list[dict]) -> list[str]:
  lines = ["| run | init | freeze | disabled skips | final acc (%) | best acc (%) | trainable params | "
           "total params | MACs/img (M) | wall time (s) | img/s | acc % per M trainable |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['run']} | {r['init']} | {r['freeze']} | {r['disabled_skips']} | {_fmt(r['accuracy'], '.2f', 100)} | "
        f"{_fmt(r['best_accuracy'], '.2f', 100)} | {_fmt(r['trainable_params'], ',')} | "
        f"{_fmt(r['total_params'], ',')} | {_fmt(r['macs'], 'sig', 1e-6)} | {_fmt(r['wall_time_s'], '.1f')} | "
        f"{_fmt(r['img_per_sec'], ',.0f')} | {_fmt(r['efficiency'], 'sig')} |")
  return lines


def tradeoff_section(rows: list[dict], tolerance: float) -> list[str]:
  best = max(rows, key=lambda r: r["accuracy"])
  pareto = [r for r in rows if not any(o["accuracy"] >= r["accuracy"] and o["wall_time_s"] < r["wall_time_s"]
                                       or o["accuracy"] > r["accuracy"] and o["wall_time_s"] <= r["wall_time_s"]
                                       for o in rows)]
  near = [r for r in rows if r["accuracy"] >= best["accuracy"] - tolerance / 100]
  pick = min(near, key=lambda r: r["wall_time_s"])
  return [
      "## Best accuracy/compute trade-off", "",
      f"Most accurate: **{best['run']}** ({100 * best['accuracy']:.2f}%, {best['wall_time_s']:.0f} s).",
      f"Best trade-off (cheapest run within {tolerance:g} points of it): **{pick['run']}** "
      f"({100 * pick['accuracy']:.2f}% in {pick['wall_time_s']:.0f} s, "
      f"{best['wall_time_s'] / max(pick['wall_time_s'], 1e-9):.2f}x less time than the most accurate).",
      "Pareto front (no run is both more accurate and faster): "
      + ", ".join(f"{r['run']} ({100 * r['accuracy']:.2f}%, {r['wall_time_s']:.0f} s)"
                  for r in sorted(pareto, key=lambda r: r["wall_time_s"])) + ".", ""]


def transfer_sections(rows: list[dict]) -> list[str]:
  """Pretrained vs random per freeze mode, and which depth of fine-tuning transfers best."""
  by = {(r["init"], r["freeze"], r["disabled_skips"]): r for r in rows}
  pairs = [(by[("pretrained", f, s)], by[("random", f, s)]) for (i, f, s) in by
           if i == "pretrained" and ("random", f, s) in by]
  if not pairs:
    return []
  pairs.sort(key=lambda p: (DEPTH_ORDER.get(p[0]["freeze"], 2), p[0]["trainable_params"] or 0))
  lines = ["## Pretrained vs random", "",
           "| freeze | disabled skips | pretrained acc (%) | random acc (%) | gain (points) |", "|---|---|---|---|---|"]
  for p, r in pairs:
    lines.append(f"| {p['freeze']} | {p['disabled_skips']} | {100 * p['accuracy']:.2f} | {100 * r['accuracy']:.2f} | "
                 f"{100 * (p['accuracy'] - r['accuracy']):+.2f} |")
  best = max(pairs, key=lambda pr: pr[0]["accuracy"])
  gain = max(pairs, key=lambda pr: pr[0]["accuracy"] - pr[1]["accuracy"])
  eff = max(pairs, key=lambda pr: pr[0]["efficiency"] or 0)
  lines += ["", "## Which fine-tuning depth transfers best", "",
            f"- Highest accuracy from pretrained weights: **{best[0]['freeze']}** ({100 * best[0]['accuracy']:.2f}%).",
            f"- Largest gain of pretrained over random init at the same depth: **{gain[0]['freeze']}** "
            f"({100 * (gain[0]['accuracy'] - gain[1]['accuracy']):+.2f} points).",
            f"- Most accuracy per trainable parameter (pretrained): **{eff[0]['freeze']}** "
            f"({_fmt(eff[0]['efficiency'], 'sig')} % per M trainable).", ""]
  return lines


def write_report(workdirs: list[str], out: str, tolerance: float = 1.0, with_macs: bool = True) -> str:
  """Writes OUT/report.md, the plots and summary.json; returns the report's path."""
  os.makedirs(out, exist_ok=True)
  runs = [read_run(d) for d in workdirs]
  rows = [summarize(r, with_macs) for r in runs]
  plots = plot_curves(runs, out) + [plot_tradeoff(rows, out)]
  lines = [f"# Comparison of {len(rows)} runs", "", *table(rows), "",
           "Accuracy: final evaluation of each run; wall time and img/s measured in the run (img/s excludes "
           "compilation); MACs per image of the inference forward pass from XLA's cost analysis (FLOPs / 2).", "",
           *tradeoff_section(rows, tolerance), *transfer_sections(rows), "## Curves", "",
           *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], ""]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(rows, f, indent=2)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Compare finished runs (see module doc).")
  parser.add_argument("workdirs", nargs="+", help="run directories (each with results.json)")
  parser.add_argument("--out", required=True, help="output directory for report.md and plots")
  parser.add_argument("--tolerance", type=float, default=1.0, help="accuracy points for the trade-off pick")
  parser.add_argument("--no_macs", action="store_true", help="skip the XLA cost analysis of each model")
  args = parser.parse_args(argv)
  try:
    print(write_report(args.workdirs, args.out, args.tolerance, not args.no_macs))
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
