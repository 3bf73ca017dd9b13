"""The entry point: bad keys, values and files give one clear line and exit code 2."""
import os
import shutil
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


@pytest.mark.parametrize("override,message", [
    ("--config.log_every_steps=0", "config error: log_every_steps=0 (must be >= 1)"),
    ("--config.num_train_steps=-1", "config error: num_train_steps=-1 (must be >= 0"),
])
def test_bad_step_counts_are_one_line(override, message, tmp_path):
  proc = run_main("--config=configs/cifar10_resnet34.py:synthetic", override, workdir=tmp_path / "wd")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert [l for l in proc.stderr.splitlines() if l.strip()] == [l for l in proc.stderr.splitlines()
                                                                 if message in l], proc.stderr[-2000:]
  assert not (tmp_path / "wd").exists()  # Rejected before the workdir is touched.


# Runs under absl's app.run as main does: quiet_libraries(), a real orbax save, one INFO line
# from a project file (compiled under jax_resnets/) and one jax python-logging INFO record.
QUIET_SCRIPT = r"""
import logging as std_logging, os, sys
import numpy as np, orbax.checkpoint as ocp
from absl import app, logging
import jax_resnets
from jax_resnets import main

def run(argv):
  main.quiet_libraries()
  mgr = ocp.CheckpointManager(os.path.join(main.FLAGS.workdir, "ckpt"))
  mgr.save(0, args=ocp.args.StandardSave({"w": np.ones((4,), np.float32)}))
  mgr.wait_until_finished()
  mgr.close()
  std_logging.getLogger("jax._src.dispatch").info("JAX PYTHON INFO")
  logging.info("LIBRARY ABSL INFO")  # from this file: not a project file
  logging.warning("LIBRARY WARNING")
  probe = os.path.join(os.path.dirname(jax_resnets.__file__), "probe.py")
  exec(compile("from absl import logging\nlogging.info('PROJECT INFO %d', 7)", probe, "exec"))

app.run(run)
"""


def test_quiet_console_with_a_real_orbax_save(tmp_path):
  proc = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, f"--workdir={tmp_path}",
                         "--config=configs/cifar10_resnet34.py:synthetic"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.listdir(tmp_path / "ckpt") == ["0"]  # The save did happen.
  lines = proc.stderr.splitlines()
  assert any(l.startswith("I") and "probe.py" in l and "PROJECT INFO 7" in l for l in lines), proc.stderr
  assert any("LIBRARY WARNING" in l for l in lines), proc.stderr
  info = [l for l in lines if l.startswith("I") and "PROJECT INFO" not in l]
  assert not info, "\n".join(info)  # orbax's save chatter, jax's and other library INFO: none.


# Under a private 1 MiB tmpfs as workdir, the study (after the CLI's config and workdir checks)
# saves 2 MiB of incompressible weights with orbax.
FULL_DISK_SCRIPT = r"""
import os, sys
import numpy as np, orbax.checkpoint as ocp
from jax_resnets import main
from jax_resnets.studies.classification import study

def fill(config, workdir):
  mgr = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
  mgr.save(0, args=ocp.args.StandardSave({"w": np.random.default_rng(0).random((1 << 19,), np.float32)}))
  mgr.wait_until_finished()

study.run = fill
sys.argv[0] = "jax_resnets.main"
main.run()
"""


def test_full_disk_is_one_line(tmp_path):
  if not shutil.which("unshare"):
    pytest.skip("needs unshare")
  wd = tmp_path / "wd"
  wd.mkdir()
  shell = f"mount -t tmpfs -o size=1m tmpfs {wd} && exec {sys.executable} -c \"$0\" \"$@\""
  proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell, FULL_DISK_SCRIPT, f"--workdir={wd}",
                         "--config=configs/cifar10_resnet34.py:synthetic"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  if "mount:" in proc.stderr or "unshare:" in proc.stderr:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: disk full (no space left on device) while writing to the workdir {wd}; "
                    "free space and run the same command again to resume from the last complete checkpoint"]
