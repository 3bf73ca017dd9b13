r"""Expand a grid config into one run per cell, each with its own workdir; run or schedule them.

  python launch/grid.py --config=configs/cifar100_transfer_grid.py:synthetic --workdir=/tmp/tgrid
  python launch/grid.py --config=configs/cifar100_transfer_grid.py --workdir=/tmp/tgrid --slurm
  python launch/grid.py --config=... --workdir=... -- --config.num_epochs=3   # extra flags, every cell

A grid config is a normal config file (`get_config(arg)`) with `get_grid(arg)` returning
{cell name: {"dotted.key": value}} ("{root}" in a string value becomes the grid directory)
and optionally `prepare(root, arg)`, called once before the cells. Locally the cells run one
after another as `python -m jax_resnets.main ... --workdir=ROOT/<cell>`; a cell whose
`results.json` exists is skipped, so re-running finishes an interrupted grid (an unfinished
cell resumes from its checkpoint). A failing cell is reported and the others still run; the
exit status is 1 if any failed. Then `jax_resnets.compare` writes ROOT/report. `--slurm`
writes ROOT/grid.sbatch (a job array, one task per cell, same commands) instead.
"""
import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python launch/grid.py` from anywhere: grid configs import jax_resnets.
  sys.path.insert(0, ROOT)


def load_grid_module(config: str):
  """`path.py[:arg]` -> (module, path, arg)."""
  path, _, arg = config.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"grid config {path!r} not found")
  spec = importlib.util.spec_from_file_location("grid_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_grid"):
    raise ValueError(f"{path} has no get_grid(arg): not a grid config")
  return module, path, arg or None


def cells(module, arg, root: str) -> dict[str, dict]:
  """{cell: overrides} with "{root}" filled in."""
  fill = lambda v: v.replace("{root}", root) if isinstance(v, str) else v
  return {name: {k: fill(v) for k, v in overrides.items()} for name, overrides in module.get_grid(arg).items()}


def command(config: str, workdir: str, overrides: dict, extra=()) -> list[str]:
  """The `jax_resnets.main` command line of one cell."""
  flags = [f"--config.{k}={v if isinstance(v, str) else repr(v)}" for k, v in overrides.items()]
  return [sys.executable, "-m", "jax_resnets.main", f"--config={config}", f"--workdir={workdir}", *flags,
          *extra]


def apply_overrides(config, overrides: dict):
  """Sets dotted keys on a ConfigDict (the in-process twin of `--config.k=v`)."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_cell(module, config: str, arg, workdir: str, overrides: dict, extra, in_process: bool) -> bool:
  if in_process:  # Tests: one process, shared compilation caches; `--config.k=v` extras as overrides.
    from jax_resnets import studies  # pylint: disable=g-import-not-at-top
    studies.run(apply_overrides(module.get_config(arg), {**overrides, **config_extras(extra)}), workdir)
    return True
  return subprocess.run(command(config, workdir, overrides, extra), cwd=ROOT, check=False).returncode == 0


def config_extras(extra) -> dict:
  """`--config.key=value` flags -> {key: value} (Python literals where they parse, else strings)."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for flag in extra:
    key, _, value = flag.removeprefix("--config.").partition("=")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def run_local(config: str, root: str, extra=(), in_process: bool = False, report: bool = True) -> list[str]:
  """Runs unfinished cells one after another; returns the names of failed cells."""
  module, _, arg = load_grid_module(config)
  os.makedirs(root, exist_ok=True)
  if hasattr(module, "prepare"):
    module.prepare(root, arg)
  failed, grid = [], cells(module, arg, root)
  for i, (name, overrides) in enumerate(grid.items()):
    workdir = os.path.join(root, name)
    if os.path.exists(os.path.join(workdir, "results.json")):
      print(f"[{i + 1}/{len(grid)}] {name}: finished, skipped", flush=True)
      continue
    print(f"[{i + 1}/{len(grid)}] {name}: running in {workdir}", flush=True)
    if not run_cell(module, config, arg, workdir, overrides, extra, in_process):
      print(f"[{i + 1}/{len(grid)}] {name}: FAILED (see its output above)", flush=True)
      failed.append(name)
  done = [os.path.join(root, n) for n in grid if os.path.exists(os.path.join(root, n, "results.json"))]
  if report and done:
    from jax_resnets import compare  # pylint: disable=g-import-not-at-top
    compare.write_report(done, os.path.join(root, "report"))
    print(f"report: {os.path.join(root, 'report', 'report.md')}", flush=True)
  return failed


def write_slurm(config: str, root: str, extra=(), slurm_args=()) -> str:
  """ROOT/grid.sbatch: an array job, task i runs cell i unless it has finished."""
  module, _, arg = load_grid_module(config)
  os.makedirs(root, exist_ok=True)
  if hasattr(module, "prepare"):
    module.prepare(root, arg)
  grid = cells(module, arg, root)
  lines = ["#!/bin/bash", f"#SBATCH --array=0-{len(grid) - 1}", "#SBATCH --job-name=grid",
           f"#SBATCH --output={root}/%x-%A_%a.out", *[f"#SBATCH {a}" for a in slurm_args],
           f"cd {shlex.quote(ROOT)}", "CELLS=("]
  for name, overrides in grid.items():
    workdir = os.path.join(root, name)
    cmd = shlex.join(["python", *command(config, workdir, overrides, extra)[1:]])
    lines.append(f"  {shlex.quote(f'test -f {workdir}/results.json || {cmd}')}")
  lines += [")", 'eval "${CELLS[$SLURM_ARRAY_TASK_ID]}"', ""]
  path = os.path.join(root, "grid.sbatch")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Run a grid config cell by cell (see module doc).")
  parser.add_argument("--config", required=True, help="configs/<grid>.py[:arg]")
  parser.add_argument("--workdir", required=True, help="grid directory; one sub-directory per cell")
  parser.add_argument("--slurm", action="store_true", help="write ROOT/grid.sbatch instead of running")
  parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH line, e.g. --gres=gpu:1")
  parser.add_argument("extra", nargs="*", help="after --: flags added to every cell's command")
  args = parser.parse_args(argv)
  root = os.path.abspath(args.workdir)
  try:
    if args.slurm:
      print(f"wrote {write_slurm(args.config, root, args.extra, args.sbatch)}; submit with sbatch")
      return 0
    failed = run_local(args.config, root, args.extra)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if failed:
    print(f"failed cells: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
