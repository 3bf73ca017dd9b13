"""Study 5 (ResNet-34 on CIFAR): check_conv, the per-epoch report, the transfer grid's two cells."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from jax_resnets import studies
from jax_resnets.models import torchvision_import as tvi
from jax_resnets.studies.classification import study
from jax_resnets.studies.resnet34 import check_conv, handmade_conv
from launch import grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "cifar10_resnet34.py")
PNG = b"\x89PNG\r\n\x1a\n"
ROW = re.compile(r"^\| (\S+) (\d+x\d+)->\S+ s\d+ \| (\S+) \| (\S+) \| (\S+) \| (\w+) \|$", re.M)


def _rows(text: str) -> list[tuple[str, str, list[float], str]]:
  """check_conv's table rows: (input, kernel, [output, d/d input, d/d kernel differences], ok|FAIL)."""
  return [(m[1], m[2], [float(m[i]) for i in (3, 4, 5)], m[6]) for m in ROW.finditer(text)]


def test_check_conv_command_prints_small_differences():
  cmd = [sys.executable, "-m", "jax_resnets.studies.resnet34.check_conv", "--shape=9,9,4,3,8,2",
         "--shape=8,8,4,1,8,2", "--batch=3"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  rows = _rows(proc.stdout)
  assert [r[0] for r in rows] == ["3x9x9x4", "3x8x8x4"] and all(r[3] == "ok" for r in rows)
  assert [r[1] for r in rows] == ["3x3", "1x1"] and all(0 <= d < 1e-4 for r in rows for d in r[2])


def test_default_shapes_are_resnet34_cifar_convs():
  shapes = check_conv.resnet34_shapes(width=64, batch=2)
  assert str(shapes[0]) == "2x32x32x3 3x3->64 s1" and str(shapes[-1]) == "2x4x4x512 3x3->512 s1"
  assert "2x32x32x64 1x1->128 s2" in map(str, shapes)  # layer2's downsample
  assert {(s.kernel, s.stride) for s in shapes} == {(3, 1), (3, 2), (1, 2)} and len(shapes) == 11


def test_check_conv_passes_the_handmade_conv_and_fails_a_flipped_kernel(monkeypatch, capsys):
  shapes = check_conv.resnet34_shapes(width=4, batch=2, image_size=8)[:4]  # stem, layer1, layer2's first
  assert check_conv.run(shapes) == 0
  good = _rows(capsys.readouterr().out)
  assert len(good) == 4 and all(d < 1e-4 for r in good for d in r[2])
  right = handmade_conv.conv2d
  monkeypatch.setattr(handmade_conv, "conv2d", lambda x, k, *a, **kw: right(x, k[::-1, ::-1], *a, **kw))
  assert check_conv.run(shapes) == 1
  out = capsys.readouterr().out
  for _, kernel, diffs, verdict in _rows(out):
    if kernel == "3x3":  # A flipped 3x3 kernel is wrong everywhere; a 1x1 one is unchanged.
      assert verdict == "FAIL" and min(diffs) > 1e-2
    else:
      assert verdict == "ok"
  assert "FAILED" in out


def _write_events(workdir, points):
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(logdir=str(workdir))
  for step, tag, value in points:
    writer.add_scalar(tag, value, step)
  writer.close()
  time.sleep(1.1)  # Event file names have a 1 s resolution: the next process gets its own file.


def test_report_reads_the_whole_history_of_a_resumed_run(tmp_path):
  """First process: epoch 1 (checkpoint at step 4) and steps 6-7 of epoch 2, then a crash; the
  second resumes from step 4, repeats steps 6-7 logging at 6 and 8, and finishes. The report
  has both epochs, train values averaged per epoch, without the crashed process's steps 6-7."""
  ev = lambda s, loss, acc: [(s, "eval/loss", loss), (s, "eval/accuracy", acc)]
  _write_events(tmp_path, [(2, "train/loss", 2.0), (4, "train/loss", 1.0), *ev(4, 1.5, 0.25),
                           (6, "train/loss", 9.0), (7, "train/loss", 9.0)])
  _write_events(tmp_path, [(6, "train/loss", 0.6), (8, "train/loss", 0.4), *ev(8, 0.7, 0.75)])
  assert len(os.listdir(tmp_path)) == 2
  results = {"config": {"model": {"name": "resnet", "depth": 34}, "dataset": {"name": "cifar10", "synthetic": True},
                        "num_epochs": 2, "num_train_steps": 0},
             "final": {"eval/accuracy": 0.75, "eval/loss": 0.7}, "num_params": 1234, "steps": 8, "wall_time_s": 1.0}
  study.write_report(results, str(tmp_path))
  report = (tmp_path / "report.md").read_text()
  assert "| epoch | train loss | train accuracy | validation loss | validation accuracy |" in report
  assert "| 1 | 1.5000 | n/a | 1.5000 | 0.2500 |" in report
  assert "| 2 | 0.5000 | n/a | 0.7000 | 0.7500 |" in report
  assert f"![validation accuracy]({study.PLOT})" in report
  assert (tmp_path / study.PLOT).read_bytes()[:8] == PNG


def test_transfer_smoke_grid_trains_both_cells_and_reports_resumed_epochs(tmp_path):
  module, _, arg = grid.load_grid_module(f"{CONFIG}:transfer,synthetic")
  root = str(tmp_path / "grid")
  cells = grid.cells(module, arg, root)
  assert {n: c["freeze"] for n, c in cells.items()} == {"feature_extraction": "head_only", "fine_tuning": "full"}
  os.makedirs(root)
  module.prepare(root, arg)
  assert tvi.resolve(cells["fine_tuning"]["init.checkpoint"], 34).endswith(module.SMOKE_WEIGHTS)
  # Feature extraction first for one epoch only: the grid then resumes it to two.
  first = grid.apply_overrides(module.get_config(arg), {**cells["feature_extraction"], "num_epochs": 1})
  studies.run(first, os.path.join(root, "feature_extraction"))
  os.remove(os.path.join(root, "feature_extraction", "results.json"))  # Unfinished: the grid resumes it.
  # Resuming with num_epochs 1 -> 2 is a changed hyper-parameter: allowed explicitly.
  assert grid.run_local(f"{CONFIG}:transfer,synthetic", root, extra=("--config.resume_with_changes=True",),
                        in_process=True, report=False) == []
  trainable = {}
  for name, freeze in (("feature_extraction", "head_only"), ("fine_tuning", "full")):
    results = json.load(open(os.path.join(root, name, "results.json")))
    assert results["config"]["freeze"] == freeze and results["steps"] == 4
    assert results["config"]["init"]["checkpoint"].endswith(module.SMOKE_WEIGHTS)
    trainable[name] = (results["trainable_params"], results["num_params"])
    report = open(os.path.join(root, name, "report.md")).read()
    epochs = re.findall(r"^\| (\d) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", report, re.M)
    assert epochs == ["1", "2"], report  # The resumed cell's report has the first process's epoch too.
  assert trainable["feature_extraction"][0] < trainable["fine_tuning"][0] == trainable["fine_tuning"][1]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
