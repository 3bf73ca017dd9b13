"""Fault injection: kill -9, SIGTERM, NaN loss, a damaged checkpoint, a full disk.

BUILD_NOTES.md lists what each of these guarantees.
"""
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jax_resnets.training import checkpointing, loop, parallel
from testutils import assert_same_state, saved_state, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_main(workdir, *overrides):
  cmd = [sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py", f"--workdir={workdir}",
         *overrides]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path, proc, timeout=240):
  deadline = time.time() + timeout
  while not os.path.isdir(path):
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.1)


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
  workdir = str(tmp_path / "killed")
  proc = start_main(workdir, "--config.num_epochs=3")
  wait_for(os.path.join(workdir, "checkpoints", "4"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # TensorBoard events are flushed before each checkpoint: the curves reach the step it holds.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()
  assert 4 in [e.step for e in events.Scalars("eval/accuracy")]
  rerun = subprocess.run([sys.executable, "-m", "jax_resnets.main", "--config=tests/testutils.py",
                          f"--workdir={workdir}", "--config.num_epochs=3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  reference = str(tmp_path / "reference")
  loop.train_and_evaluate(tiny_config(num_epochs=3), reference)
  assert_same_state(saved_state(tiny_config(num_epochs=3), reference),
                     saved_state(tiny_config(num_epochs=3), workdir))


def test_sigterm_saves_the_current_step_and_exits_143(tmp_path):
  workdir = str(tmp_path)
  proc = start_main(workdir, "--config.num_epochs=100")
  wait_for(os.path.join(workdir, "checkpoints", "4"), proc)
  proc.send_signal(signal.SIGTERM)
  output = proc.communicate(timeout=120)[0]
  assert proc.returncode == 143, output[-3000:]
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert f"stopped at step {steps[-1]}" in output
  assert 4 < steps[-1] < 400


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  compile_steps = parallel.DataParallel.compile_steps

  def poisoned(self, *args, **kwargs):
    compile_steps(self, *args, **kwargs)
    train_step = self.train_step

    def step(state, batch):
      state, metrics = train_step(state, batch)
      if int(jax.device_get(self.unreplicate(state).step)) >= 6:  # Loss explodes at step 6.
        state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
        metrics = {**metrics, "loss": metrics["loss"] * np.nan}
      return state, metrics

    self.train_step = step
    return self

  monkeypatch.setattr(parallel.DataParallel, "compile_steps", poisoned)
  with pytest.raises(loop.NonFiniteLoss, match="at step 6.*last good checkpoint: step 4"):
    loop.train_and_evaluate(tiny_config(), str(tmp_path))
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]
  state = saved_state(tiny_config(), str(tmp_path))
  assert int(state.step) == 4 and all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  workdir = str(tmp_path)
  loop.train_and_evaluate(tiny_config(), workdir)  # Checkpoints at steps 4 and 8.
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "8", "state")):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(f.name) // 3))
  results = loop.train_and_evaluate(tiny_config(), workdir)
  assert results["steps_this_run"] == 4  # Resumed from step 4, not 8.
  assert "Checkpoint of step 8" in caplog.text and "unreadable" in caplog.text
  assert int(saved_state(tiny_config(), workdir).step) == 8  # Step 8 was written again, readable.


@contextlib.contextmanager
def small_filesystem(path, monkeypatch):
  """A 16 MiB tmpfs at `path`, yielding a function that fills it; or, where mounting is not
  allowed, a simulated ENOSPC from the checkpoint writer."""
  os.makedirs(path)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", path],
                           capture_output=True).returncode == 0

  def fill():
    if mounted:
      # suppress outermost: closing the file flushes what the full disk refused, raising again.
      with contextlib.suppress(OSError), open(os.path.join(path, "filler"), "wb") as f:
        while True:
          f.write(b"\0" * (1 << 20))
          f.flush()
    else:
      def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
      monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "save", enospc)

  try:
    yield fill
  finally:
    if mounted:
      subprocess.run(["umount", "-l", path], check=False)


def test_full_disk_gives_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  workdir = str(tmp_path / "small")
  with small_filesystem(workdir, monkeypatch) as fill:
    def fill_after_first_checkpoint(step):
      if step == 5:  # Step 4's checkpoint is written asynchronously: let it land first.
        deadline = time.time() + 60
        while not os.path.isdir(os.path.join(workdir, "checkpoints", "4")) and time.time() < deadline:
          time.sleep(0.05)
        fill()

    hooks = [fill_after_first_checkpoint]
    with pytest.raises(checkpointing.CheckpointError, match="No space left on device.*intact: steps \\[4\\]"):
      loop.train_and_evaluate(tiny_config(), workdir, hooks=hooks)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(workdir, "filler"))
    monkeypatch.undo()
    state = saved_state(tiny_config(), workdir)
    assert int(state.step) == 4
