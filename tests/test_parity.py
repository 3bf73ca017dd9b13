"""benchmarks/parity.py: digits image folder, both sides, report/plot/JSON; the schedule's formula."""
import json
import math
import os
import subprocess
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("sklearn")


def test_parity_tiny_run_writes_table_plot_and_interval(tmp_path):
  """2 seeds x 1 epoch of a width-4 ResNet-18 on 16 px digits (both sides; the project as a subprocess)."""
  from benchmarks import parity  # pylint: disable=g-import-not-at-top
  digits = str(tmp_path / "digits")
  assert parity.make_digits(digits, size=16) == {"train": 1347, "test": 450}
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "benchmarks.parity", f"--dataset={digits}", "--config=configs/cifar10_resnet34.py",
         "--seeds=2", f"--out={out}", "--config.model.depth=18", "--config.model.width=4", "--config.num_epochs=1",
         "--config.batch_size=128", "--config.dataset.image_size=16", "--config.backend=xla"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = (out / "parity.md").read_text()
  assert "| 1 | " in report and "95% Welch t-interval over seeds [" in report
  assert "PyTorch wall time per seed" in report and "project (JAX) wall time per seed" in report
  assert "project (JAX) train img/s: " in report
  assert (out / "parity.png").stat().st_size > 1000
  runs = json.loads((out / "parity.json").read_text())["runs"]
  for side in ("jax", "torch"):
    assert len(runs[side]) == 2 and all(len(r["accuracy"]) == 1 for r in runs[side])
    assert all(0.0 <= r["accuracy"][0] <= 1.0 for r in runs[side])
  assert runs["jax"][0]["steps"] == runs["torch"][0]["steps"] == 1347 // 128
  assert all(0 < r["run_img_per_sec"] < r["train_img_per_sec"] for r in runs["jax"])


def test_unsupported_recipe_is_one_line_exit_2(tmp_path):
  cmd = [sys.executable, "-m", "benchmarks.parity", f"--dataset={tmp_path}", "--config=configs/cifar10_resnet34.py",
         f"--out={tmp_path / 'o'}", "--config.dataset.augment=('crop','color_jitter')"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: the PyTorch twin does not reproduce dataset.augment")


@pytest.mark.parametrize("optim", [
    dict(schedule="cosine", warmup_epochs=0.0), dict(schedule="cosine", warmup_epochs=1.5),
    dict(schedule="step", warmup_epochs=1.0, decay_epochs=(2, 3), decay_factor=0.1),
    dict(schedule="cosine_restarts", warmup_epochs=0.0, restart_epochs=1, restart_mult=2),
    dict(schedule="constant", warmup_epochs=0.5)])
def test_torch_learning_rate_formula_equals_the_projects_schedule(optim):
  """The twin's closed form, per update, against optim.py's optax schedule (no offset by one)."""
  from benchmarks import parity_torch  # pylint: disable=g-import-not-at-top
  from jax_resnets.training import optim as project_optim  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, **optim))
  spe, total = 4, 20
  schedule = project_optim.learning_rate_schedule(cfg, spe, total)
  for i in range(total):
    assert math.isclose(parity_torch.learning_rate(cfg, i, spe, total), float(schedule(i)), rel_tol=1e-5,
                        abs_tol=1e-7), (i, optim)
