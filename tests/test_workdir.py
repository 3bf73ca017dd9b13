"""The workdir lock and checks: a busy, stale, unusable or read-only workdir, one line each."""
import os
import shutil
import signal
import socket
import subprocess
import sys
from unittest import mock

import pytest

from jax_resnets import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; from jax_resnets import workdir; cm = workdir.lock(sys.argv[1]); cm.__enter__(); "
        "print('locked', flush=True); time.sleep(120)")


def run_main(workdir, *args):
  cmd = [sys.executable, "-m", "jax_resnets.main", "--config=configs/cifar10_resnet34.py:synthetic",
         f"--workdir={workdir}", *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def error_line(proc) -> str:
  """The run's one `error:` line; fails unless there is exactly one and no traceback."""
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return lines[0]


@pytest.fixture
def holder(tmp_path):
  """A live process holding the lock of tmp_path/wd."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "wd")], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  yield proc
  proc.kill()
  proc.wait()


def test_busy_workdir_is_refused_naming_pid_and_host(holder, tmp_path):
  line = error_line(run_main(tmp_path / "wd"))
  assert f"in use by process {holder.pid} on {socket.gethostname()}" in line, line
  assert os.listdir(tmp_path / "wd") == [".lock"]  # Nothing of the refused run was written.


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(holder, tmp_path):
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with mock.patch.object(workdir_lib.logging, "warning") as warning:
    with workdir_lib.lock(str(tmp_path / "wd")):
      with open(tmp_path / "wd" / ".lock", encoding="utf-8") as f:
        assert f.read().split() == [str(os.getpid()), socket.gethostname()]
  (message, *args), _ = warning.call_args
  assert "stale lock" in message and f"process {holder.pid} on" in message % tuple(args)
  assert "no longer running" in message % tuple(args)


def test_stale_lock_file_is_taken_over_and_released(tmp_path):
  (tmp_path / ".lock").write_text(f"999999999 {socket.gethostname()}\n")
  with mock.patch.object(workdir_lib.logging, "warning") as warning:
    with workdir_lib.lock(str(tmp_path)):
      assert (tmp_path / ".lock").exists()
  assert warning.call_count == 1
  assert not (tmp_path / ".lock").exists()  # Released on exit...
  with mock.patch.object(workdir_lib.logging, "warning") as warning:
    with workdir_lib.lock(str(tmp_path)):  # ...so the next run takes it without a warning.
      pass
  assert warning.call_count == 0


def test_lock_is_released_when_the_run_fails(tmp_path):
  with pytest.raises(RuntimeError):
    with workdir_lib.lock(str(tmp_path)):
      raise RuntimeError("boom")
  with workdir_lib.lock(str(tmp_path)):
    pass


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "wd").write_text("")
  assert "is a file, not a directory" in error_line(run_main(tmp_path / "wd"))


def test_workdir_that_cannot_be_created_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  line = error_line(run_main(tmp_path / "file" / "wd"))
  assert f"cannot create workdir {tmp_path}/file/wd: Not a directory" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root passes permission bits; see the read-only mount test")
def test_workdir_without_write_permission_is_one_line(tmp_path):
  os.chmod(tmp_path, 0o555)
  try:
    with pytest.raises(workdir_lib.WorkdirError, match="is not writable"):
      workdir_lib.prepare(str(tmp_path))
  finally:
    os.chmod(tmp_path, 0o755)


def test_read_only_workdir_is_one_line(tmp_path):
  """A read-only bind mount in a private mount namespace: refused even for root."""
  if not shutil.which("unshare"):
    pytest.skip("needs unshare")
  (tmp_path / "ro").mkdir()
  script = ("from jax_resnets import workdir\n"
            "try:\n  workdir.prepare('{d}')\nexcept workdir.WorkdirError as e:\n  print('error:', e)\n")
  proc = subprocess.run(
      ["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path}/ro {tmp_path}/ro && "
       f"mount -o remount,ro,bind {tmp_path}/ro && exec {sys.executable} -c \"$0\"",
       script.format(d=tmp_path / "ro")], cwd=ROOT, capture_output=True, text=True, timeout=120)
  if "error:" not in proc.stdout and proc.returncode != 0:
    pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()[-200:]}")
  assert f"error: workdir {tmp_path}/ro is not writable (Read-only file system)" in proc.stdout, proc
