"""The synthetic transfer grid end to end: six cells, skip on re-run, report and plots; SLURM."""
import json
import os
import subprocess

import numpy as np
import pytest

from jax_resnets import compare
from jax_resnets.models import torchvision_import as tvi
from launch import grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "cifar100_transfer_grid.py") + ":synthetic"
SMOKE_MODULE = grid.load_grid_module(SMOKE.split(":")[0])[0]
CELLS = ["pretrained_head_only", "pretrained_final_block", "pretrained_full",
         "random_head_only", "random_final_block", "random_full"]


def test_smoke_grid_writes_report_with_six_cells(tmp_path, capsys):
  root = str(tmp_path / "grid")
  assert grid.run_local(SMOKE, root, in_process=True) == []
  report = open(os.path.join(root, "report", "report.md")).read()
  for cell in CELLS:
    assert f"| {cell} |" in report
  for section in ("## Accuracy with 95% intervals", "## Best accuracy/compute trade-off", "## Pretrained vs random",
                  "## Which fine-tuning depth transfers best"):
    assert section in report
  # One run per cell and no per-example predictions: no interval, so no cell is named the most accurate.
  assert "Most accurate" not in report and ("No winner named" in report or "**Tie**" in report)
  for png in ("accuracy.png", "loss.png", "tradeoff.png"):
    with open(os.path.join(root, "report", png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  summary = json.load(open(os.path.join(root, "report", "summary.json")))
  assert summary["study"] == "classification"
  rows = {r["run"]: r for r in summary["rows"]}
  head, full = rows["pretrained_head_only"], rows["pretrained_full"]
  assert head["init"] == "pretrained" and rows["random_head_only"]["init"] == "random"
  assert head["trainable_params"] < rows["pretrained_final_block"]["trainable_params"] < full["trainable_params"]
  assert full["trainable_params"] == full["total_params"]
  assert head["macs"] and head["img_per_sec"] > 0
  results = json.load(open(os.path.join(root, "pretrained_head_only", "results.json")))
  assert results["trainable_params"] == head["trainable_params"] < results["num_params"]
  x, y = compare.per_epoch(compare.read_run(os.path.join(root, "random_full")), "train/loss")
  assert list(x) == [1.0, 2.0] and len(y) == 2  # Two epochs of curve points.

  check_frozen_layers_kept_imported_weights(root)

  capsys.readouterr()
  assert grid.run_local(SMOKE, root, in_process=True, report=False) == []
  assert capsys.readouterr().out.count("finished, skipped") == 6


def check_frozen_layers_kept_imported_weights(root: str) -> None:
  """Imported weights -> training -> checkpoint: frozen params and BN stats bit-identical."""
  weights = tvi.torch_to_flax(tvi.read_state_dict(os.path.join(root, SMOKE_MODULE.SMOKE_WEIGHTS)))
  for cell, trainable in (("pretrained_head_only", ("fc",)), ("pretrained_final_block", ("layer4", "fc"))):
    steps = os.listdir(os.path.join(root, cell, "checkpoints"))
    final = tvi.load_orbax(os.path.join(root, cell, "checkpoints", max(steps, key=int), "state"))
    assert final.keys() == weights.keys()
    for key, value in final.items():
      if key[1] in trainable:
        assert key[1] == "fc" or not np.array_equal(value, weights[key]), f"{cell}: {key} did not train"
      else:
        assert np.array_equal(value, weights[key]), f"{cell}: frozen {key} changed"


def test_slurm_script_has_one_task_per_cell(tmp_path):
  real = SMOKE.split(":")[0]  # The real grid: nothing to prepare.
  path = grid.write_slurm(real, str(tmp_path), extra=["--config.seed=3"], slurm_args=["--gres=gpu:1"])
  text = open(path).read()
  assert "#SBATCH --array=0-5" in text and "#SBATCH --gres=gpu:1" in text
  for cell in CELLS:
    assert f"--workdir={tmp_path}/{cell}" in text
  assert text.count("--config.seed=3") == 6 and text.count("results.json ||") == 6
  assert "--config.freeze=head_only" in text and "--config.optim.learning_rate=0.0001" in text
  assert text.count("--config.init.checkpoint=resnet152-394f9c45.pth") == 3
  assert subprocess.run(["bash", "-n", path], check=False).returncode == 0


def test_real_grid_without_weights_fails_with_one_line(tmp_path):
  """The real (non-synthetic) pretrained cells need torchvision's file; no download."""
  env = {**os.environ, "JAX_RESNETS_WEIGHTS": str(tmp_path / "weights"), "TORCH_HOME": str(tmp_path)}
  cmd = grid.command(os.path.join(ROOT, "configs", "cifar100_transfer_grid.py"), str(tmp_path / "cell"),
                     grid.cells(grid.load_grid_module(SMOKE.split(":")[0])[0], None,
                                str(tmp_path))["pretrained_full"])
  proc = subprocess.run(cmd + ["--config.dataset.synthetic=True"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "resnet152-394f9c45.pth" in lines[0] and str(tmp_path / "weights") in lines[0]


def test_grid_config_cells():
  module, _, _ = grid.load_grid_module(os.path.join(ROOT, "configs", "cifar10_resnet152.py"))
  cells = grid.cells(module, None, "/g")
  assert cells["no_skips"]["model.disabled_skips"] == ("layer3.0", "layer4.1")
  config = grid.apply_overrides(module.get_config(None), cells["no_skips"])
  assert config.model.disabled_skips == ("layer3.0", "layer4.1") and config.freeze == "head_only"
  assert config.init.checkpoint == "resnet152-394f9c45.pth" and config.model.depth == 152
  with pytest.raises(ValueError, match="unknown argument"):
    module.get_config("nope")
