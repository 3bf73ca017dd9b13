"""Which classification setting / transfer cell wins, only when the noise allows saying so.

Runs whose configs agree on everything but `seed` (and operational keys such as logging
or the number of devices) are one setting: their accuracy is reported as mean and 95%
interval over seeds. Settings are compared by the interval of their difference
(stats.difference); one whose interval contains 0 is a tie, and without an interval no
winner is named (identical accuracies are a tie).
"""
import dataclasses
import json
import os

import numpy as np

from jax_resnets.compare import adapter, markdown, plots, stats

DEPTH_ORDER = {"head_only": 0, "final_block": 1, "full": 3}
IGNORED = ("seed", "backend", "parallel", "num_devices", "distributed", "log_every_steps", "checkpoint",
           "dataset.num_workers", "dataset.read_threads", "dataset.data_dir", "dataset.root")
pct = markdown.pct


@dataclasses.dataclass
class Group:
  """One setting: its runs (rows) and, if every run has them, per-example correctness."""
  label: str
  rows: list
  correct: np.ndarray | None = None

  @property
  def values(self) -> list:
    return [r["accuracy"] for r in self.rows]

  @property
  def interval(self) -> tuple:
    return stats.mean_interval(self.values)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  def avg(self, key: str) -> float | None:
    vals = [r[key] for r in self.rows]
    return None if any(v is None for v in vals) else float(np.mean(vals))

  def __getitem__(self, key):  # init, freeze, disabled_skips: shared by the runs of a setting
    return self.rows[0][key]


def setting_key(cfg: dict, prefix: str = "") -> tuple:
  """The config minus seed and operational keys; paths by file name (grids fill in their root)."""
  out = []
  for k, v in sorted(cfg.items()):
    key = prefix + k
    if key in IGNORED:
      continue
    if isinstance(v, dict):
      out.extend(setting_key(v, key + "."))
    else:
      out.append((key, os.path.basename(v) if isinstance(v, str) and os.sep in v else json.dumps(v, default=str)))
  return tuple(out)


def group_label(names: list[str]) -> str:
  if len(names) == 1:
    return names[0]
  prefix = os.path.commonprefix(names).rstrip("_-. ")
  for suffix in ("seed", "s"):
    prefix = prefix[:-len(suffix)].rstrip("_-. ") if prefix.endswith(suffix) and len(prefix) > len(suffix) else prefix
  return f"{prefix or names[0]} ({len(names)} seeds)"


def make_groups(rows: list[dict], runs: list, read_correct) -> list[Group]:
  """Rows with an accuracy, grouped by setting in first-seen order."""
  by_key = {}
  for row, run in zip(rows, runs):
    if row["accuracy"] is not None:
      by_key.setdefault(setting_key(run.config), []).append((row, run))
  groups = []
  for members in by_key.values():
    label = group_label([row["run"] for row, _ in members])
    label = label if label not in {g.label for g in groups} else f"{label} #{len(groups) + 1}"
    correct = [read_correct(run) for _, run in members] if len(members) == 1 else [None]
    groups.append(Group(label, [row for row, _ in members], correct[0]))
  for g in groups:
    for r in g.rows:
      r["setting"] = g.label
  return groups


def difference(a: Group, b: Group) -> stats.Difference:
  return stats.difference(a.values, b.values, a.correct, b.correct)


def sections(rows, runs, out, opts: adapter.Options, read_correct) -> adapter.Section:
  groups = make_groups(rows, runs, read_correct)
  if not groups:
    return adapter.Section(["No run has a final accuracy: nothing to rank.", ""])
  top = max(groups, key=lambda g: g.mean)
  diffs = {g.label: difference(top, g) for g in groups if g is not top}
  lines = ["## Accuracy with 95% intervals", "", *settings_table(groups, top, diffs), "",
           verdict_line(groups, top, diffs, "setting", "settings"), ""]
  lines += tradeoff_lines(groups, top, diffs, opts.tolerance) + transfer_lines(groups)
  plot = plots.tradeoff([tradeoff_point(g) for g in groups], time_label(groups), out)
  summary = {"settings": [setting_summary(g, diffs.get(g.label)) for g in groups]}
  return adapter.Section(lines, [plot], summary)


def settings_table(groups: list[Group], top: Group, diffs: dict) -> list[str]:
  def interval(g):
    _, lo, hi = g.interval
    return "n/a" if lo is None else f"[{pct(lo)}, {pct(hi)}]"

  def diff(g, i):
    d = diffs.get(g.label)
    if d is None:
      return "-"
    return [f"{100 * d.value:+.2f}", "n/a" if d.lo is None else f"[{100 * d.lo:+.2f}, {100 * d.hi:+.2f}]",
            d.method, verdict_word(d, top, g)][i]

  columns = (("setting", lambda g: g.label), ("runs", lambda g: str(len(g.rows))),
             ("mean acc (%)", lambda g: pct(g.mean)), ("95% interval (%)", interval),
             (f"difference to {top.label} (points)", lambda g: diff(g, 0)),
             ("95% interval of the difference", lambda g: diff(g, 1)),
             ("interval from", lambda g: diff(g, 2)), ("verdict", lambda g: diff(g, 3)))
  return markdown.table(columns, groups)


def verdict_word(d: stats.Difference, a: Group, b: Group) -> str:
  return {"a": f"{a.label} better", "b": f"{b.label} better"}.get(d.verdict, d.verdict)


def verdict_line(groups: list[Group], top: Group, diffs: dict, what: str, plural: str) -> str:
  """Names a winner only if it beats every other setting beyond the interval of the difference."""
  if len(groups) == 1:
    return f"Only one {what}: nothing to compare."
  tied = [top.label] + [k for k, d in diffs.items() if d.verdict == "tie"]
  unknown = [k for k, d in diffs.items() if d.verdict == "no interval"]
  if len(tied) == 1 and not unknown and all(d.verdict == "a" for d in diffs.values()):
    return (f"Most accurate {what}: **{top.label}** ({pct(top.mean)}%), above every other beyond the 95% "
            "interval of the difference.")
  if unknown:
    return (f"No winner named: the comparison has no interval for {', '.join(unknown)} against the highest "
            "mean (one run per setting and no per-example predictions). Repeat the runs with other `seed`s, "
            "or write predictions with `python -m jax_resnets.evaluate`, to get one."
            + (f" Tie (equal accuracy): {', '.join(tied)}." if len(tied) > 1 else ""))
  scope = f"all {len(groups)} {plural}" if len(tied) == len(groups) else ", ".join(tied)
  return f"**Tie** between {scope}: equal accuracy, or the 95% interval of the difference contains 0."


def time_label(groups: list[Group]) -> str:
  incl = [r["time_incl_compile"] for g in groups for r in g.rows]
  kind = "wall time incl. compilation" if all(incl) else "some incl. compilation" if any(incl) else "excl. compilation"
  return f"training time (s; {kind})"


def tradeoff_point(g: Group) -> dict:
  _, lo, hi = g.interval
  return {"label": g.label, "x": g.avg("train_time_s") or 0.0, "y": g.mean, "lo": lo, "hi": hi,
          "filled": g["init"] == "pretrained"}


def setting_summary(g: Group, d: stats.Difference | None) -> dict:
  mean, lo, hi = g.interval
  return {"setting": g.label, "runs": [r["run"] for r in g.rows], "accuracy_mean": mean,
          "accuracy_interval": None if lo is None else [lo, hi],
          "difference_to_top": None if d is None else {"value": d.value, "interval": None if d.lo is None else
                                                        [d.lo, d.hi], "method": d.method, "verdict": d.verdict}}


def tradeoff_lines(groups: list[Group], top: Group, diffs: dict, tolerance: float) -> list[str]:
  """The cheapest setting not distinguishable from the highest accuracy, and the Pareto front."""
  time = lambda g: g.avg("train_time_s") or 0.0
  near = [top] + [g for g in groups if g is not top and (
      diffs[g.label].verdict == "tie"
      or diffs[g.label].verdict == "no interval" and g.mean >= top.mean - tolerance / 100)]
  pick = min(near, key=time)
  pareto = [g for g in groups if not any(
      o.mean >= g.mean and time(o) < time(g) or o.mean > g.mean and time(o) <= time(g) for o in groups)]
  star = lambda g: "*" if any(r["time_incl_compile"] for r in g.rows) else ""
  return [
      "## Best accuracy/compute trade-off", "",
      f"Cheapest setting whose accuracy is not distinguishable from the highest mean (a tie, or within "
      f"{tolerance:g} accuracy points where there is no interval): **{pick.label}** ({pct(pick.mean)}% in "
      f"{time(pick):.1f}{star(pick)} s" + (f"; the slowest of those {len(near)} takes {max(map(time, near)):.1f} s)."
                                          if len(near) > 1 else ")."),
      "Pareto front (no setting is both more accurate and faster): "
      + ", ".join(f"{g.label} ({pct(g.mean)}%, {time(g):.1f}{star(g)} s)" for g in sorted(pareto, key=time)) + ".",
      "Times: training without compilation; * marks wall time including compilation (no `train_time_s`).", ""]


def transfer_lines(groups: list[Group]) -> list[str]:
  """Pretrained vs random per freeze mode, and which fine-tuning depth transfers best."""
  by = {(g["init"], g["freeze"], g["disabled_skips"]): g for g in groups}
  pairs = [(g, by[("random", f, s)]) for (i, f, s), g in by.items() if i == "pretrained" and ("random", f, s) in by]
  if not pairs:
    return []
  pairs.sort(key=lambda p: (DEPTH_ORDER.get(p[0]["freeze"], 2), p[0]["trainable_params"] or 0))
  gains = [(p, r, difference(p, r)) for p, r in pairs]
  columns = (("freeze", lambda x: x[0]["freeze"]), ("disabled skips", lambda x: x[0]["disabled_skips"]),
             ("pretrained acc (%)", lambda x: pct(x[0].mean)), ("random acc (%)", lambda x: pct(x[1].mean)),
             ("gain (points)", lambda x: f"{100 * x[2].value:+.2f}"),
             ("95% interval", lambda x: "n/a" if x[2].lo is None else f"[{100 * x[2].lo:+.2f}, {100 * x[2].hi:+.2f}]"),
             ("verdict", lambda x: verdict_word(x[2], x[0], x[1])))
  return ["## Pretrained vs random", "", *markdown.table(columns, gains), "",
          *depth_lines([p for p, _ in pairs], gains), ""]


def depth_lines(pretrained: list[Group], gains: list) -> list[str]:
  top = max(pretrained, key=lambda g: g.mean)
  diffs = {g.label: difference(top, g) for g in pretrained if g is not top}
  by_verdict = {}
  for p, _, d in gains:
    by_verdict.setdefault({"a": "pretrained better", "b": "random better"}.get(d.verdict, d.verdict),
                          []).append(p["freeze"])
  eff = [(g.avg("efficiency") or 0.0, g) for g in pretrained]
  best_eff = max(eff, key=lambda e: e[0])
  eff_tied = [g["freeze"] for e, g in eff if abs(e - best_eff[0]) < 1e-9]
  return ["## Which fine-tuning depth transfers best", "",
          "- " + verdict_line(pretrained, top, diffs, "fine-tuning depth (pretrained)",
                              "fine-tuning depths (pretrained)"),
          "- Pretrained vs random at the same depth: "
          + "; ".join(f"{v}: {', '.join(fs)}" for v, fs in by_verdict.items()) + ".",
          "- Most accuracy per trainable parameter (pretrained): "
          + (f"**{best_eff[1]['freeze']}** ({markdown.fmt(best_eff[0], 'sig')} % per M trainable)."
             if len(eff_tied) == 1 else f"tie between {', '.join(eff_tied)}.")]
