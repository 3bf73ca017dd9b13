"""Face classification / verification runs (studies/faces/study.py `run`).

results.json: {"final": {"dev/accuracy", "verification/accuracy", "verification/accuracy_in_sample",
...}, "chance", "stopping_metric", "best_step", "stopped_at", "steps_run", "total_steps",
"wall_time_s", "num_params", "config"}. Final values may be strings (numpy scalars written
with `default=str`), ints or NaN, so every value goes through runs.number. Events: dev/accuracy
and verification/* at each epoch end, train/* while training.
"""
from jax_resnets.compare import adapter, markdown, plots, runs

HEADLINE = (("verification/accuracy", "verification acc, held out (k-fold threshold) (%)"),
            ("verification/accuracy_in_sample", "verification acc, in-sample threshold (%)"),
            ("dev/accuracy", "dev classification acc (%)"))


def rows(run: runs.RunLog, opts: adapter.Options) -> list[dict]:
  del opts
  r, cfg = run.results, run.config
  final, chance = r.get("final") or {}, r.get("chance") or {}
  row = {"run": run.name, "task": (cfg.get("faces") or {}).get("task", "?"), "loss": str(cfg.get("loss", "?")),
         "stopping_metric": str(r.get("stopping_metric", "?")), "best_step": r.get("best_step"),
         "num_params": runs.number(r.get("num_params")), "wall_time_s": runs.number(r.get("wall_time_s"))}
  for key, _ in HEADLINE:
    row[key] = runs.number(final.get(key))
    row["chance:" + key] = runs.number(chance.get(key))
  return [row]


def _with_chance(key: str):
  def get(row):
    value = markdown.pct(row[key])
    chance = row["chance:" + key]
    return value if chance is None or value == "n/a" else f"{value} (chance {markdown.pct(chance)})"
  return get


def curves(run: runs.RunLog) -> list[plots.Curve]:
  """Validation metrics at each epoch end and the training loss per epoch (faces.png)."""
  tag = run.results.get("stopping_metric") or "dev/accuracy"
  out = []
  for key, panel in (("dev/accuracy", "dev classification accuracy"),
                     ("verification/accuracy", "dev verification accuracy"), ("train/loss", "train loss")):
    x, y = runs.per_epoch(run, key, eval_tag=tag)
    out.append(plots.Curve("faces.png", panel, run.name, list(x), list(y), ylabel=key.split("/")[1]))
  return out


COLUMNS = (("run", lambda r: r["run"]), ("task", lambda r: r["task"]), ("loss", lambda r: r["loss"]),
           *[(header, _with_chance(key)) for key, header in HEADLINE],
           ("best checkpoint", lambda r: f"step {r['best_step']} by {r['stopping_metric']}"),
           ("params", markdown.col("num_params", ",.0f")), ("wall time (s)", markdown.col("wall_time_s", ".1f")))

NOTE = ("Verification accuracy on the unknown_dev split (identities not trained on): held out, the threshold "
        "chosen on k-1 folds and scored on the k-th (faces.threshold_folds); in-sample, the threshold chosen "
        "and scored on the same images (optimistic). "
        "Dev classification accuracy: the dev split of the known identities. All from the best checkpoint; "
        "chance as the study computes it.")

ADAPTER = adapter.Adapter("faces", "face classification / verification runs", COLUMNS, rows, curves, NOTE)
