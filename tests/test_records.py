"""Records are kept, the console is quiet: a finished run re-run leaves results.json as it was; a run
prints a handful of lines and ends with its own summary."""
import os
import subprocess
import sys

from jax_resnets.training import loop
from testutils import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rerunning_a_finished_run_keeps_results_json(tmp_path):
  workdir = str(tmp_path)
  loop.train_and_evaluate(tiny_config(), workdir)
  with open(os.path.join(workdir, "results.json"), "rb") as f:
    before = f.read()
  again = loop.train_and_evaluate(tiny_config(), workdir)
  with open(os.path.join(workdir, "results.json"), "rb") as f:
    assert f.read() == before
  assert again["already_finished"] and again["wall_time_s"] > 0 and again["steps"] == 8


def test_a_run_prints_a_few_lines_and_ends_with_its_summary(tmp_path):
  out = subprocess.run([sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py",
                        f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in (out.stderr + out.stdout).splitlines() if l.strip()]
  assert len(lines) <= 30, "\n".join(lines)
  assert not any("orbax" in l or "checkpoint_manager" in l for l in lines), "\n".join(lines)
  assert out.stdout.strip().splitlines()[-1].startswith("done in ") and "report.md" in out.stdout
