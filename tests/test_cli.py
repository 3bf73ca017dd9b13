"""The entry point: bad keys, values and files give one clear line and exit code 2."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, workdir):
  cmd = [sys.executable, "-m", "jax_resnets.main", f"--workdir={workdir}", *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--config.modle.depth=18"], "unknown config key 'modle' in --config.modle.depth=18"),
    (["--config.model.nope=3"], "unknown config key 'nope' in --config.model.nope=3"),
    (["--config.batch_size=abc"], "flag --config.batch_size=abc: invalid literal for int()"),
    (["--config.model.depth=19"], "config error: model.depth=19 (must be one of 18, 34, 50, 101, 152)"),
    (["--config.model.disabled_skips=('layer9.0',)"], "config error: model.disabled_skips='layer9.0'"),
    (["--config.parallel=dp"], "config error: parallel='dp'"),
    (["--config.batch_size=63"], "config error: batch_size=63 (not divisible by the 4 devices)"),
])
def test_config_errors_are_one_line(args, message, tmp_path):
  proc = run_main("--config=configs/cifar10_resnet34.py:synthetic", *args, workdir=tmp_path)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_missing_config_file_is_one_line(tmp_path):
  proc = run_main("--config=configs/does_not_exist.py", workdir=tmp_path)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "No such file or directory: 'configs/does_not_exist.py'" in proc.stderr


def test_missing_real_dataset_names_the_prepare_command(tmp_path):
  proc = run_main("--config=configs/cifar10_resnet34.py", f"--config.dataset.data_dir={tmp_path}/tfds",
                  workdir=tmp_path / "wd")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "python -m jax_resnets.data.prepare cifar10" in proc.stderr
