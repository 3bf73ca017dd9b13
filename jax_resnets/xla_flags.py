"""XLA flags that measurably help on CPU (see shared notes and BUILD_NOTES.md).

Must run before JAX initialises its backend; entry points call `configure()` first.
"""
import os

# Keeps convolutions off XLA:CPU's YNNPACK fusion path: 1.4-1.56x train and eval here.
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def configure() -> None:
  """Appends the CPU flags to XLA_FLAGS unless the user already set them (or opts out)."""
  if os.environ.get("JAX_RESNETS_DEFAULT_XLA_FLAGS", "1") == "0":
    return
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in CPU_FLAGS if f.split("=")[0] not in current]
  os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
