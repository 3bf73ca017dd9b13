"""Resume integrity (issue 23): damaged checkpoints (flipped bytes, NaN) fall back and are written
again, a changed config is refused in one line (or logged with resume_with_changes), and a full
disk reported by tensorstore is one CheckpointError line."""
import glob
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jax_resnets.training import checkpointing, loop
from testutils import assert_same_state, saved_state, tiny_config

# One test process runs this module: its module-scoped fixture trains once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_resume_integrity")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(workdir, *overrides):
  cmd = [sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py", f"--workdir={workdir}",
         *overrides]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted 2-epoch run (checkpoints at steps 4 and 8) and its final state."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  loop.train_and_evaluate(tiny_config(), workdir)
  return workdir, saved_state(tiny_config(), workdir)


@pytest.fixture
def copy_of(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished[0], workdir)
  return workdir


def flip_bits(workdir, step):
  """Flips the lowest bit of a few bytes of the step's largest array data file: tensorstore reads
  the values back without an error, only wrong."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_*", "d", "*"))
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    for offset in range(len(data) // 4, len(data) // 4 + 40, 4):
      data[offset] ^= 0x01
    f.seek(0)
    f.write(data)


def test_flipped_bytes_fall_back_resave_and_equal_an_uninterrupted_run(finished, copy_of):
  flip_bits(copy_of, 8)
  os.remove(os.path.join(copy_of, "results.json"))
  proc = run_main(copy_of)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Checkpoint of step 8" in proc.stderr and "checksums" in proc.stderr, proc.stderr[-3000:]
  assert "Deleting the damaged checkpoint of step 8" in proc.stderr
  state = saved_state(tiny_config(), copy_of)  # Step 8 was written again and reads back intact.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  assert_same_state(state, finished[1])


def test_nan_checkpoint_is_rejected_and_replaced(finished, copy_of, caplog):
  shutil.rmtree(os.path.join(copy_of, "checkpoints", "8"))
  run = loop.build(tiny_config(), copy_of)  # At step 4.
  poisoned = run.state.replace(step=run.state.step + 4, params=jax.tree.map(lambda p: p * np.nan, run.state.params))
  run.ckpt.save(8, poisoned, run.train_iter)  # Valid checksums, NaN values.
  run.ckpt.close()
  results = loop.train_and_evaluate(tiny_config(), copy_of)
  assert results["steps_this_run"] == 4 and "already_finished" not in results
  assert "Checkpoint of step 8" in caplog.text and "non-finite" in caplog.text
  assert_same_state(saved_state(tiny_config(), copy_of), finished[1])


def test_changed_width_is_one_line_naming_it(copy_of):
  proc = run_main(copy_of, "--config.model.width=8", "--config.resume_with_changes=True")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and "damaged" not in proc.stderr + proc.stdout
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "model.width (4 -> 8)" in errors[0], proc.stderr[-3000:]


def test_changed_learning_rate_needs_resume_with_changes(copy_of, caplog):
  shutil.rmtree(os.path.join(copy_of, "checkpoints", "8"))
  os.remove(os.path.join(copy_of, "results.json"))
  changed = tiny_config()
  changed.optim.learning_rate = 0.01
  with pytest.raises(checkpointing.ConfigChanged, match=r"optim\.learning_rate \(0\.05 -> 0\.01\).*"
                     "resume_with_changes=True") as error:
    loop.build(changed, copy_of)
  assert "\n" not in str(error.value) and "model" not in str(error.value)
  changed.resume_with_changes = True
  results = loop.train_and_evaluate(changed, copy_of)
  assert results["steps_this_run"] == 4
  assert "resume_with_changes=True" in caplog.text and "optim.learning_rate (0.05 -> 0.01)" in caplog.text
  # Step 8 was saved with the new rate; keys that never matter for resume are not compared.
  again = tiny_config(log_every_steps=1)
  again.optim.learning_rate, again.checkpoint.keep = 0.01, 3
  assert loop.train_and_evaluate(again, copy_of)["already_finished"]


def test_full_disk_from_tensorstore_is_one_checkpoint_error_line(copy_of, monkeypatch):
  run = loop.build(tiny_config(), copy_of)

  def resource_exhausted(*args, **kwargs):
    raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"/x/d/abc\": [OSError: No space left on "
                     "device] [os_error_code='28'] [source locations='tensorstore/kvstore/file/file_key_value_store.cc']")

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", resource_exhausted)
  try:
    with pytest.raises(checkpointing.CheckpointError, match=r"step 12 .*No space left on device.*"
                       r"intact: steps \[4, 8\]") as error:
      run.ckpt.save(12, run.state, run.train_iter)
  finally:
    monkeypatch.undo()
    run.ckpt.close()
  assert "\n" not in str(error.value)
