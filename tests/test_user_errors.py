"""Damaged user files are one line, not a traceback: weights files, the faces early-stopping state."""
import os
import subprocess
import sys

import pytest

from jax_resnets import config_lib
from jax_resnets.models import torchvision_import
from jax_resnets.studies.faces import study as faces

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["resnet18-bad.safetensors", "resnet18-bad.pth"])
def test_a_corrupt_weights_file_is_one_weights_error_naming_it(tmp_path, name):
  good = torchvision_import.write_random_checkpoint(str(tmp_path / "good.safetensors"), 18, 4)
  with open(good, "rb") as f:
    data = f.read()
  path = tmp_path / name
  path.write_bytes(data[: len(data) // 3] if name.endswith(".safetensors") else b"\x80\x04garbage" + data[:100])
  with pytest.raises(torchvision_import.WeightsError, match=f"{name} cannot be read as a weights file"):
    torchvision_import.read_state_dict(str(path))


def test_cli_with_a_truncated_weights_file_prints_one_line(tmp_path):
  good = torchvision_import.write_random_checkpoint(str(tmp_path / "w.safetensors"), 18, 4)
  with open(good, "rb") as f:
    data = f.read()
  with open(good, "wb") as f:
    f.write(data[:200])
  out = subprocess.run([sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py",
                        f"--workdir={tmp_path / 'run'}", f"--config.init.checkpoint={good}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "w.safetensors cannot be read" in errors[0]


def test_a_truncated_early_stopping_state_is_one_config_error(tmp_path):
  (tmp_path / "early_stopping.json").write_text('{"best": 0.5, "best_st')
  with pytest.raises(config_lib.ConfigError, match="early_stopping.json is damaged"):
    faces.EarlyStopping(str(tmp_path), "verification/accuracy", "max", 3)
  stopper_dir = tmp_path / "ok"
  stopper_dir.mkdir()
  stopper = faces.EarlyStopping(str(stopper_dir), "m", "max", 1)
  stopper.update(1, {"m": 0.5})
  assert faces.EarlyStopping(str(stopper_dir), "m", "max", 1).state["best"] == 0.5
  assert not (stopper_dir / "early_stopping.json.tmp").exists()
