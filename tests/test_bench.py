"""The benchmark command runs end to end at a tiny size, torch contender included."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_vs_torch_prints_both_contenders_and_ratio():
  cmd = [sys.executable, "-m", "jax_resnets.bench", "--model=resnet18", "--stem=imagenet", "--image=32",
         "--batch=4", "--width=4", "--vs_torch", "--warmup=1", "--steps=1"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout + proc.stderr
  for name in ("jax_train", "jax_eval", "torch_train", "torch_eval"):
    line = next(l for l in out.splitlines() if l.startswith(name))
    assert float(line.split()[1]) > 0, line  # img/s
  assert "GFLOP/step" in out
  assert "cpu: " in out  # the host the numbers belong to
  for mode in ("train", "eval"):
    ratio = next(l for l in out.splitlines() if l.startswith(f"ratio {mode}: JAX/torch = "))
    assert float(ratio.split("= ")[1].split("x")[0]) > 0
