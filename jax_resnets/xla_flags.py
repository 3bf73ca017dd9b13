"""XLA flags that measurably help on CPU (see shared notes and BUILD_NOTES.md).

Must run before JAX initialises its backend; entry points call `configure()` first.
"""
import os

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
