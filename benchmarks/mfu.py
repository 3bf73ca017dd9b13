"""Peak FLOP/s of common GPUs, the denominator of MFU (bench.py --mfu); no side effects on import."""
import re

# Dense peak TFLOP/s (no sparsity) by `jax.devices()[0].device_kind` pattern, first match wins:
# (bfloat16 tensor cores, TF32 tensor cores, plain float32). JAX's default matmul/conv precision
# lets XLA use TF32 for float32 on Ampere and later, so a float32 step is measured against TF32.
# From NVIDIA's datasheets (SXM unless named; GeForce: bf16 with float32 accumulation).
PEAK_TFLOPS = (
    (r"H200 NVL", (835.0, 417.5, 60.0)),
    (r"H200", (989.4, 494.7, 66.9)),
    (r"H100 NVL", (835.0, 417.5, 60.0)),
    (r"H100 PCIe", (756.0, 378.0, 51.2)),
    (r"H100", (989.4, 494.7, 66.9)),
    (r"A100", (312.0, 156.0, 19.5)),
    (r"\bL4\b", (121.0, 60.0, 30.3)),
    (r"RTX 4090", (165.2, 82.6, 82.6)),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak FLOP/s of the device for `dtype` steps, or None when the device is not in PEAK_TFLOPS."""
  for pattern, (bf16, tf32, _) in PEAK_TFLOPS:
    if re.search(pattern, device_kind):
      return (bf16 if dtype == "bfloat16" else tf32) * 1e12
  return None
