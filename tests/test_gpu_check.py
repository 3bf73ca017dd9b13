"""benchmarks/gpu_check.sh cannot rot: its --cpu dry run (same sections, tiny sizes) passes in CI."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("device", "tests", "train", "population", "data", "summary")


def test_gpu_check_cpu_dry_run_prints_every_section():
  proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-4000:]
  for name in SECTIONS:
    assert f"=== {name} ===" in out, name
  assert "failed sections: none" in out
  assert "test_step_equivalence.py::" in out  # The GPU tests are collected (they exist by these names).
  assert "MFU unknown peak (cpu)" in out
  assert "K=2 " in out and "cost per model" in out
  assert "input pipeline" in out and "cifar10_32:" in out
