"""The workdir of a run: checked before any training starts, and held by one run at a time.

Two runs writing the same checkpoints/ and events would silently corrupt each other, and a
workdir that cannot be written would fail only at the first checkpoint, after minutes of
training; both stop here at once with one line instead.

The lock is `fcntl.flock` on DIR/.lock: the kernel releases it when the holding process
dies (crash, kill -9), so a lock left behind is never mistaken for a live run. The file
holds the holder's PID and host for the message; a file nobody holds is stale and taken over
with a warning. flock works across hosts on NFS (Linux emulates it with POSIX locks).
"""
import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from typing import Iterator

from absl import logging

LOCK_NAME = ".lock"


class WorkdirError(Exception):
  """The workdir cannot be used (a file, not writable, or busy with another run)."""


def prepare(workdir: str) -> str:
  """Creates the workdir and checks that this process can write into it; returns its path."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory; pass another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create workdir {workdir}: {e.strerror or e}; pass another --workdir") from e
  _check_writable(workdir)
  return workdir


def _check_writable(workdir: str) -> None:
  """os.access for the permission bits, plus a real write (root, read-only mounts, full quotas)."""
  try:
    with tempfile.TemporaryFile(dir=workdir, prefix=".write_test_") as f:
      f.write(b"x")
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    reason = e.strerror or str(e)
  else:
    reason = None if os.access(workdir, os.W_OK | os.X_OK) else "permission denied"
  if reason:
    raise WorkdirError(f"workdir {workdir} is not writable ({reason}); pass another --workdir")


def _holder(path: str) -> tuple[int, str]:
  """(pid, host) written in a lock file; (0, '?') if it is empty or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      pid, _, host = f.read().strip().partition(" ")
    return int(pid), host or "?"
  except (OSError, ValueError):
    return 0, "?"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's live process.
  return True


def _busy_holder(path: str) -> str:
  """The holder of a held lock; a dead PID means a child it forked (data workers) holds it."""
  pid, host = _holder(path)
  if not pid:
    return "another process (starting up; its PID is not written yet)"
  orphaned = host == socket.gethostname() and pid and not _alive(pid)
  return f"process {pid} on {host}" + (" (exited; a child process of it still holds the lock)" if orphaned else "")


def _describe(pid: int, host: str) -> str:
  """Says whether a stale lock's PID is dead, when that can be known (same host)."""
  if host != socket.gethostname():
    return f"process {pid} on {host}"
  return f"process {pid} on {host} ({'still running' if _alive(pid) else 'no longer running'})"


def _acquire(path: str, workdir: str) -> int:
  """An fd holding the flock of `path`; raises WorkdirError naming the holder if it is busy."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirError(f"workdir {workdir} is in use by {_busy_holder(path)} (lock {path}); "
                         "wait for that run to end, or pass another --workdir") from None
    except OSError as e:  # ENOLCK / EOPNOTSUPP: a filesystem without locks.
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
        os.close(fd)
        raise
      logging.warning("Cannot lock %s (%s); not guarding the workdir against a second run.", path, e.strerror)
      return fd
    try:  # The previous holder may have unlinked the file after we opened it: lock the new one.
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[str]:
  """Holds DIR/.lock for the duration of a run; a busy workdir raises WorkdirError at once."""
  workdir = prepare(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  fd = _acquire(path, workdir)
  try:
    pid, host = _holder(path)
    if pid:  # Nobody holds it but it names a process: that run ended without releasing it.
      logging.warning("Taking over the stale lock %s of %s.", path, _describe(pid, host))
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    yield workdir
  finally:
    with contextlib.suppress(OSError):
      os.unlink(path)  # Before unlocking: a waiter that opened this inode then retries the new file.
    os.close(fd)
