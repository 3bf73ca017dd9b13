"""The benchmark command runs end to end at a tiny size, torch contender included."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_vs_torch_prints_both_contenders_and_ratio():
  """torch.compile (minutes to compile on 2 CPU cores) is made unavailable: its skip path is tested."""
  cmd = [sys.executable, "-m", "benchmarks.bench", "--model=resnet18", "--stem=imagenet", "--image=32",
         "--batch=4", "--width=4", "--vs_torch", "--warmup=1", "--steps=1", "--mfu"]
  env = {**os.environ, "CXX": "/nonexistent/g++"}
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout + proc.stderr
  assert "torch.compile skipped: CXX=/nonexistent/g++ is not an executable compiler" in out
  assert "MFU unknown peak (cpu)" in out
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


def test_peak_table_knows_common_gpus():
  """MFU's denominators: bf16 / TF32 dense peaks by device_kind; others are 'unknown peak'."""
  from benchmarks import mfu  # pylint: disable=g-import-not-at-top
  assert mfu.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert mfu.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert mfu.peak_flops("NVIDIA H200", "float32") == 494.7e12
  assert mfu.peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
  assert mfu.peak_flops("NVIDIA L4", "bfloat16") == 121e12
  assert mfu.peak_flops("NVIDIA L40S", "bfloat16") is None  # Not the L4.
  assert mfu.peak_flops("NVIDIA GeForce RTX 4090", "bfloat16") == 165.2e12
  assert mfu.peak_flops("cpu", "bfloat16") is None
