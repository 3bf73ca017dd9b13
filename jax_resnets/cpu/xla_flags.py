"""Process settings that measurably help on CPU: XLA flags and glibc malloc's (docs/performance.md).

Must run before JAX initialises its backend; entry points call `configure()` first.
"""
import ctypes
import os

_YNN = "--xla_cpu_experimental_ynn_fusion_type"
# Keeps convolutions off XLA:CPU's YNNPACK fusion path: 1.4-1.56x train and eval here.
CPU_FLAGS = (f"{_YNN}=-individual_convolution",)
# Eval-only processes (jax_resnets.evaluate): also no YNNPACK "reduce" fusions, which otherwise pull
# the last stages' convs, the global pool and fc into one slow YNNPACK graph: CIFAR ResNet-18
# eval +13% (b256). Not for training: BatchNorm's reductions need them (train -30% without).
EVAL_ONLY_CPU_FLAGS = (f"{_YNN}=-individual_convolution,-reduce",)


def configure(eval_only: bool = False) -> None:
  """Tunes glibc malloc (`tune_malloc`), and appends the CPU flags to XLA_FLAGS unless the user
  already set them (or opts out with JAX_RESNETS_DEFAULT_XLA_FLAGS=0)."""
  tune_malloc()
  if os.environ.get("JAX_RESNETS_DEFAULT_XLA_FLAGS", "1") == "0":
    return
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in (EVAL_ONLY_CPU_FLAGS if eval_only else CPU_FLAGS) if f.split("=")[0] not in current]
  os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


_ALLOCATORS = ("tcmalloc", "jemalloc")
# mallopt parameters (glibc malloc.h): no mmap'd blocks, never trim the heap (-1: `man mallopt`;
# a 2 GiB threshold still trimmed, and the next steps faulted 0.9 GB in again), one arena.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_MALLOPTS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
_tuned = False


def tune_malloc() -> bool:
  """Makes glibc malloc keep the memory XLA:CPU frees, so the next step does not fault it in again.

  XLA:CPU frees its large buffers after every step; glibc hands blocks over its mmap threshold
  back to the kernel (and trims its heaps), so each ResNet-18 CIFAR step took ~190k page faults.
  With mmap off, no trimming and one arena, a train step is ~13% faster (CIFAR b128 66 -> 76
  img/s). The price is memory: the heap fragments and keeps what it grew to (CIFAR b128 train: peak
  RSS 1.9 GiB stock, ~4.5 GiB tuned). Measured in docs/performance.md (malloc).
  Linux + glibc only, not under a preloaded tcmalloc / jemalloc; opt-in: JAX_RESNETS_MALLOC_TUNING=1. Returns whether it is (now) tuned."""
  global _tuned
  if _tuned or os.environ.get("JAX_RESNETS_MALLOC_TUNING", "0") != "1" or allocator() != "glibc":
    return _tuned
  try:
    libc = ctypes.CDLL("libc.so.6")
    _tuned = all(libc.mallopt(param, value) == 1 for param, value in _MALLOPTS)
  except (OSError, AttributeError):  # not glibc
    _tuned = False
  return _tuned


def allocator() -> str:
  """The malloc this process runs with: a preloaded tcmalloc / jemalloc, glibc's (tuned or not)."""
  preload = os.environ.get("LD_PRELOAD", "")
  name = next((a for a in _ALLOCATORS if a in preload), "glibc")
  return f"{name} (tuned)" if name == "glibc" and _tuned else name
