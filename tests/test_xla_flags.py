"""xla_flags.configure: the CPU flags, the eval-only variant, and the user's own choice kept."""
import os
import subprocess
import sys

import pytest

from jax_resnets.cpu import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.mark.parametrize("eval_only, value", [(False, "-individual_convolution"),
                                              (True, "-individual_convolution,-reduce")])
def test_configure_appends_the_cpu_flag(monkeypatch, eval_only, value):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.delenv("JAX_RESNETS_DEFAULT_XLA_FLAGS", raising=False)
  xla_flags.configure(eval_only=eval_only)
  assert xla_flags.os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", f"{YNN}={value}"]


def test_configure_keeps_the_users_value_and_honours_opt_out(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"{YNN}=-dot")
  xla_flags.configure(eval_only=True)
  assert xla_flags.os.environ["XLA_FLAGS"] == f"{YNN}=-dot"
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("JAX_RESNETS_DEFAULT_XLA_FLAGS", "0")
  xla_flags.configure()
  assert xla_flags.os.environ["XLA_FLAGS"] == ""


_HEAP = """
import ctypes, sys
import numpy as np
from jax_resnets.cpu import xla_flags
print(xla_flags.tune_malloc() if sys.argv[1] == "tuned" else False)
class MallInfo2(ctypes.Structure):  # glibc >= 2.33
  _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
buffer = np.ones(16 << 20, np.float32)  # 64 MB, as XLA:CPU's per-step buffers
held = libc.mallinfo2()
del buffer
freed = libc.mallinfo2()
print(held.hblkhd >> 20, freed.arena >> 20)  # MB in mmap'd blocks while held; heap MB after free
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tuned_malloc_keeps_large_buffers_in_the_heap():
  def run(mode):
    out = subprocess.run([sys.executable, "-c", _HEAP, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": "", "JAX_RESNETS_MALLOC_TUNING": "1"}).stdout.split()
    return out[0], int(out[1]), int(out[2])
  tuned, mmapped, heap_after_free = run("tuned")
  # Tuned: the 64 MB come from the heap and stay there after free (the next step reuses its pages).
  assert tuned == "True" and mmapped == 0 and heap_after_free >= 64
  _, mmapped, heap_after_free = run("default")
  # glibc's defaults: mmap'd, and unmapped on free (the next step faults the pages in again).
  assert mmapped >= 64 and heap_after_free < 64


def test_allocator_names(monkeypatch):
  monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
  assert xla_flags.allocator() == "tcmalloc"
  monkeypatch.setenv("LD_PRELOAD", "")
  assert xla_flags.allocator() in ("glibc", "glibc (tuned)")
