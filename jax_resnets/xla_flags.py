"""XLA flags that measurably help on CPU (see shared notes and BUILD_NOTES.md).

Must run before JAX initialises its backend; entry points call `configure()` first.
"""
import os
import sys

_YNN = "--xla_cpu_experimental_ynn_fusion_type"
# Keeps convolutions off XLA:CPU's YNNPACK fusion path: 1.4-1.56x train and eval here.
CPU_FLAGS = (f"{_YNN}=-individual_convolution",)
# Eval-only processes (jax_resnets.evaluate): also no YNNPACK "reduce" fusions, which otherwise pull
# the last stages' convs, the global pool and fc into one slow YNNPACK graph: CIFAR ResNet-18
# eval +13% (b256). Not for training: BatchNorm's reductions need them (train -30% without).
EVAL_ONLY_CPU_FLAGS = (f"{_YNN}=-individual_convolution,-reduce",)


def configure(eval_only: bool = False) -> None:
  """Appends the CPU flags to XLA_FLAGS unless the user already set them (or opts out)."""
  if os.environ.get("JAX_RESNETS_DEFAULT_XLA_FLAGS", "1") == "0":
    return
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in (EVAL_ONLY_CPU_FLAGS if eval_only else CPU_FLAGS) if f.split("=")[0] not in current]
  os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


_ALLOCATORS = ("tcmalloc", "jemalloc")
_TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def allocator() -> str:
  """The malloc this process runs with: a preloaded tcmalloc / jemalloc, else glibc's."""
  preload = os.environ.get("LD_PRELOAD", "")
  return next((a for a in _ALLOCATORS if a in preload), "glibc")


def allocator_hint() -> str | None:
  """On Linux with glibc's malloc, how to run with tcmalloc: XLA:CPU frees and re-maps its large
  buffers every step, ~190k page faults per CIFAR ResNet-18 step; tcmalloc keeps them, training
  is about 15% faster (BUILD_NOTES.md, Performance, attempt 28). None when there is nothing to say."""
  if not sys.platform.startswith("linux") or allocator() != "glibc":
    return None
  how = (f"LD_PRELOAD={_TCMALLOC}" if os.path.exists(_TCMALLOC)
         else "apt install libtcmalloc-minimal4, then LD_PRELOAD=" + _TCMALLOC)
  return f"CPU training runs about 15% faster with tcmalloc: {how} python -m ..."
