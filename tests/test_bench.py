"""The benchmark command runs end to end at a tiny size, torch contender included."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_vs_torch_prints_both_contenders_and_ratio():
  cmd = [sys.executable, "-m", "benchmarks.bench", "--model=resnet18", "--stem=imagenet", "--image=32",
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


def test_bench_convs_covers_every_resnet18_conv_and_runs():
  from jax_resnets.studies.resnet34 import timing  # pylint: disable=g-import-not-at-top,unused-import  # global --batch flag
  from benchmarks import bench_convs  # pylint: disable=g-import-not-at-top  # must not clash with it
  for stem in ("cifar", "imagenet"):
    shapes = bench_convs.conv_shapes(stem, 64, 8)
    assert sum(s[-1] for s in shapes) == 20  # stem + 16 block convs + 3 downsample convs
    assert [s[3] for s in shapes].count(1) == 3
  assert bench_convs.conv_shapes("imagenet", 64, 8)[1][0] == 16  # after the 7x7/2 conv and the 3x3/2 pool
  cmd = [sys.executable, "-m", "benchmarks.bench_convs", "--image=16", "--batch=2", "--width=4", "--steps=1"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  total = next(l for l in proc.stdout.splitlines() if l.startswith("total per step"))
  assert float(total.split("ours ")[1].split("= ")[1].split(" ms")[0]) > 0
