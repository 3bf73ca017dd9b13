r"""Start N JAX processes of one run on this machine (testing and small clusters).

  python launch/local.py --num_processes=2 -- \
      --config=configs/cifar10_resnet34.py:synthetic --workdir=/tmp/r34_2proc

Each process runs `python -m jax_resnets.main <args>` with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set (see jax_resnets/training/distributed.py). If
one process fails the others are stopped; the exit status is the first non-zero one.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(num_processes: int, args: list[str], env: dict | None = None) -> int:
  port = free_port()
  procs = []
  for i in range(num_processes):
    penv = {**(env or os.environ), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": str(num_processes), "JAX_PROCESS_ID": str(i)}
    procs.append(subprocess.Popen([sys.executable, "-m", "jax_resnets.main", *args], cwd=ROOT, env=penv))
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [c for c in codes if c not in (None, 0)]
      if failed:
        for p in procs:
          if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        for p in procs:
          p.wait()
        return failed[0]
      if all(c == 0 for c in codes):
        return 0
      time.sleep(0.2)
  except KeyboardInterrupt:
    for p in procs:
      p.send_signal(signal.SIGTERM)
    return 130


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for jax_resnets.main (after --)")
  ns = parser.parse_args()
  args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
  sys.exit(launch(ns.num_processes, args))


if __name__ == "__main__":
  main()
