"""The comparison report: detect the study, let its adapter make rows and curves, write it all."""
import argparse
import json
import os
import sys

from jax_resnets.compare import adapter, cie, classification, faces, hierarchy, markdown, plots, runs

ADAPTERS = {a.study: a for a in (classification.ADAPTER, hierarchy.ADAPTER, faces.ADAPTER, cie.ADAPTER)}


def study_of(logs: list[runs.RunLog]) -> adapter.Adapter:
  """The one study all runs come from; CompareError (one line) for unknown or mixed studies."""
  kinds = {}
  for log in logs:
    kind = runs.detect_study(log.results)
    if kind is None:
      raise runs.CompareError(f"{log.workdir}/results.json: cannot tell which study wrote it "
                              f"(no config.study, and not the layout of any of {', '.join(ADAPTERS)})")
    kinds.setdefault(kind, []).append(log.name)
  if len(kinds) > 1:
    listing = "; ".join(f"{k}: {', '.join(names)}" for k, names in kinds.items())
    raise runs.CompareError(f"runs of different studies cannot be compared in one report ({listing}); "
                            "compare each study's runs separately")
  return ADAPTERS[next(iter(kinds))]


def build(workdirs: list[str], out: str, opts: adapter.Options) -> tuple[list[str], dict]:
  """(report.md lines, summary.json content); writes the plots into `out`."""
  logs = [runs.read_run(d) for d in workdirs]
  study = study_of(logs)
  rows = [row for log in logs for row in study.rows(log, opts)]
  plot_paths = plots.draw([c for log in logs for c in study.curves(log)], out)
  extra = study.sections(rows, logs, out, opts) if study.sections else adapter.Section([])
  lines = [f"# Comparison of {len(logs)} {study.title}", "", f"Study: {study.study}.", "",
           *markdown.table(study.columns, rows), "", study.note, "", *extra.lines, "## Curves", "",
           *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plot_paths + extra.plots], ""]
  summary = {"study": study.study, "runs": [log.name for log in logs], "rows": rows, **extra.summary}
  return lines, summary


def write_report(workdirs: list[str], out: str, tolerance: float = 1.0, with_macs: bool = True) -> str:
  """Writes OUT/report.md, the plots and summary.json; returns the report's path."""
  os.makedirs(out, exist_ok=True)
  lines, summary = build(workdirs, out, adapter.Options(tolerance, with_macs))
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=str)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jax_resnets.compare",
                                   description="Compare finished runs of one study (see the package doc).")
  parser.add_argument("workdirs", nargs="+", help="run directories (each with results.json)")
  parser.add_argument("--out", required=True, help="output directory for report.md, summary.json and plots")
  parser.add_argument("--tolerance", type=float, default=1.0,
                      help="accuracy points for the compute trade-off pick when runs have no interval")
  parser.add_argument("--no_macs", action="store_true", help="skip the XLA cost analysis of each model")
  args = parser.parse_args(argv)
  try:
    print(write_report(args.workdirs, args.out, args.tolerance, not args.no_macs))
  except (runs.CompareError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
