"""One finished run: its results.json, its event files, and which study wrote it.

Event files are read lazily and per sub-directory because the studies put them in
different places (the workdir itself; hierarchy's DIR/stage1..3; CIE's
DIR/tensorboard/<level>/seed_<s>), and a CIE comparison needs none of them.
"""
import dataclasses
import json
import math
import os

import numpy as np

STUDIES = ("classification", "hierarchy", "faces", "celeba_cie")


class CompareError(ValueError):
  """A user error (missing run, unknown or mixed studies): one line, exit status 2.

  A ValueError so that callers that already report bad input in one line (launch/grid.py) do so.
  """


@dataclasses.dataclass
class RunLog:
  name: str
  workdir: str
  results: dict
  _events: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def config(self) -> dict:
    return self.results.get("config") or {}

  @property
  def scalars(self) -> dict:
    """tag -> [(step, value)] of the event files directly in the workdir."""
    return self.events("")

  def events(self, subdir: str) -> dict:
    if subdir not in self._events:
      self._events[subdir] = read_scalars(os.path.join(self.workdir, subdir))
    return self._events[subdir]


def read_scalars(directory: str) -> dict:
  """tag -> sorted [(step, value)]; a resumed run may repeat a step: the latest value wins."""
  if not os.path.isdir(directory):
    return {}
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  scalars = {}
  for tag in acc.Tags().get("scalars", []):
    latest = {e.step: e.value for e in acc.Scalars(tag)}
    scalars[tag] = sorted(latest.items())
  return scalars


def read_run(workdir: str) -> RunLog:
  """results.json of `workdir` (CompareError if missing or unreadable); events on demand."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise CompareError(f"{path} not found: the run in {workdir} has not finished (or is not a workdir)")
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise CompareError(f"{path} is not readable JSON: {e}") from e
  if not isinstance(results, dict):
    raise CompareError(f"{path} does not hold a JSON object")
  return RunLog(os.path.basename(os.path.normpath(workdir)), workdir, results)


def detect_study(results: dict) -> str | None:
  """The study that wrote `results`: by its shape first (hierarchy's report has no config), then config.study."""
  if "comparison" in results and "stages" in results:
    return "hierarchy"
  if "analysis" in results:
    return "celeba_cie"
  study = (results.get("config") or {}).get("study")
  if study in STUDIES:
    return study
  final = results.get("final")
  if isinstance(final, dict) and "eval/accuracy" in final:
    return "classification"
  if isinstance(final, dict) and any(str(k).startswith(("verification/", "dev/")) for k in final):
    return "faces"
  return None


def number(v) -> float | None:
  """A results.json value as a float: studies may write numpy scalars as strings, or None/NaN."""
  if isinstance(v, bool) or v is None:
    return None
  try:
    v = float(v)
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None


def steps_per_epoch(run: RunLog, eval_tag: str = "eval/accuracy", subdir: str = "") -> float:
  """From the config's epochs when they set the length, else the first evaluation's step."""
  cfg, r = run.config, run.results
  total = number(r.get("steps")) or number(r.get("total_steps"))
  if total and not cfg.get("num_train_steps") and cfg.get("num_epochs"):
    return total / cfg["num_epochs"]
  evals = [s for s, _ in run.events(subdir).get(eval_tag, [])]
  return float(min(evals)) if evals and min(evals) > 0 else float(total or 1)


def per_epoch(run: RunLog, tag: str, subdir: str = "", eval_tag: str = "eval/accuracy"):
  """(epochs, values): evaluation tags at each evaluation, training tags averaged per epoch."""
  points, spe = run.events(subdir).get(tag, []), steps_per_epoch(run, eval_tag, subdir)
  if not tag.startswith("train/"):
    return np.array([s / spe for s, _ in points]), np.array([v for _, v in points])
  epochs = {}
  for s, v in points:
    epochs.setdefault(max(1, math.ceil(s / spe)), []).append(v)
  keys = sorted(epochs)
  return np.array(keys, float), np.array([np.mean(epochs[k]) for k in keys])
