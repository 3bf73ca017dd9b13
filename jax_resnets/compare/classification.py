"""Classification runs and transfer-grid cells (training/loop.py `finish` writes results.json).

results.json: {"final": {"eval/accuracy", "eval/loss", ...}, "steps", "wall_time_s",
"num_params", "trainable_params", "config"}, optionally "train_time_s" (training without
compilation) and "train_flops"; events: train/loss, train/accuracy, eval/*, train/img_per_sec.
A `predictions_<eval split>.csv` next to it (from `python -m jax_resnets.evaluate`) gives the
per-example correctness that a bootstrap interval needs.
"""
import csv
import os
import sys

import numpy as np

from jax_resnets.compare import adapter, markdown, plots, runs, transfer

fmt = markdown.fmt


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


def read_correct(run: runs.RunLog) -> np.ndarray | None:
  """Per-example correctness (ordered by id) from predictions_<eval split>.csv, if there is one."""
  split = (run.config.get("dataset") or {}).get("eval_split", "test")
  path = os.path.join(run.workdir, f"predictions_{split}.csv")
  if not os.path.exists(path):
    return None
  with open(path, newline="") as f:
    rows = sorted((int(r["id"]), int(r["label"]) == int(r["prediction"])) for r in csv.DictReader(f))
  return np.array([ok for _, ok in rows], bool)


def compute(r: dict) -> dict:
  """Training time without compilation when the run measured it, else wall time (flagged)."""
  own = runs.number(r.get("train_time_s"))
  return {"train_time_s": own if own is not None else runs.number(r.get("wall_time_s")),
          "time_incl_compile": own is None, "train_flops": runs.number(r.get("train_flops"))}


def rows(run: runs.RunLog, opts: adapter.Options) -> list[dict]:
  r, cfg = run.results, run.config
  accuracy = runs.number((r.get("final") or {}).get("eval/accuracy"))
  ips = [v for _, v in run.scalars.get("train/img_per_sec", [])]
  img_per_sec = float(np.mean(ips)) if ips else (runs.number(r.get("steps_per_sec")) or 0) * cfg.get("batch_size", 0)
  trainable = runs.number(r.get("trainable_params", r.get("num_params")))
  evals = [v for _, v in run.scalars.get("eval/accuracy", [])]
  return [{
      "run": run.name, "seed": cfg.get("seed"),
      "init": "pretrained" if (cfg.get("init") or {}).get("checkpoint") else "random",
      "freeze": str(cfg.get("freeze", "full")),
      "disabled_skips": ",".join((cfg.get("model") or {}).get("disabled_skips") or ()) or "-",
      "accuracy": accuracy, "best_accuracy": max(evals) if evals else accuracy,
      "trainable_params": trainable, "total_params": runs.number(r.get("num_params")),
      "macs": macs_per_image(cfg) if opts.with_macs and cfg.get("model") else None,
      **compute(r), "img_per_sec": img_per_sec,
      "efficiency": 100 * accuracy / (trainable / 1e6) if trainable and accuracy is not None else None,
  }]


def curves(run: runs.RunLog) -> list[plots.Curve]:
  """accuracy.png and loss.png: train | validation panels per epoch (dashed: random init)."""
  random_init = not (run.config.get("init") or {}).get("checkpoint")
  out = []
  for metric in ("accuracy", "loss"):
    for split, title in (("train", "train"), ("eval", "validation")):
      x, y = runs.per_epoch(run, f"{split}/{metric}")
      out.append(plots.Curve(f"{metric}.png", f"{title} {metric}", run.name, list(x), list(y),
                             ylabel=metric, color_key=run.name, dashed=random_init))
  return out


def _time(r: dict) -> str:
  return fmt(r["train_time_s"], ".1f") + ("*" if r["time_incl_compile"] else "")


COLUMNS = (
    ("run", lambda r: r["run"]), ("init", lambda r: r["init"]), ("freeze", lambda r: r["freeze"]),
    ("disabled skips", lambda r: r["disabled_skips"]), ("seed", lambda r: str(r["seed"])),
    ("final acc (%)", markdown.col("accuracy", ".2f", 100)),
    ("best acc (%)", markdown.col("best_accuracy", ".2f", 100)),
    ("trainable params", markdown.col("trainable_params", ",.0f")),
    ("total params", markdown.col("total_params", ",.0f")),
    ("MACs/img (M)", markdown.col("macs", "sig", 1e-6)), ("train FLOPs", markdown.col("train_flops", ".3g")),
    ("train time (s)", _time), ("img/s", markdown.col("img_per_sec", ",.0f")),
    ("acc % per M trainable", markdown.col("efficiency", "sig")),
)

NOTE = ("Accuracy: final evaluation of each run (best: highest evaluation during training). Train time: "
        "training without compilation when results.json has `train_time_s`; a * marks wall time including "
        "compilation and evaluation (runs that did not record it). Train FLOPs: `train_flops` of results.json "
        "(n/a: not recorded). img/s excludes compilation; MACs per image of the inference forward pass from "
        "XLA's cost analysis (FLOPs / 2).")

ADAPTER = adapter.Adapter("classification", "classification runs", COLUMNS, rows, curves, NOTE,
                          lambda rows_, runs_, out, opts: transfer.sections(rows_, runs_, out, opts, read_correct))
