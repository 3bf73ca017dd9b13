"""Cooperative stop: SIGTERM (or `request_stop()`) asks the loop to checkpoint and exit."""
import signal
import threading

_STOP = threading.Event()


class Preempted(Exception):
  """Raised by the loop after it saved a checkpoint because a stop was requested."""


def request_stop(*_) -> None:
  _STOP.set()


def stop_requested() -> bool:
  return _STOP.is_set()


def install_sigterm_handler() -> None:
  _STOP.clear()
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, request_stop)
