"""bfloat16 compute (`model.dtype=bfloat16`) gives the float32 forward to bf16 precision.

Same parameters, same input, the backend the process resolves (`auto`: xla on a GPU, the CPU
backend here): a wrong cast (params kept in bf16, BN statistics or the softmax in bf16, a layer
silently skipped under bf16) moves the logits far more than bf16 rounding (8 mantissa bits,
~0.4% per op, ~1-3% after 18 layers). Run by benchmarks/gpu_check.sh on the GPU too.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_resnets import config_lib
from jax_resnets.models import registry

TOLERANCE = 0.05  # ||bf16 - f32|| / ||f32|| of the logits.


def build(dtype: str):
  cfg = config_lib.base_config().model
  cfg.update(depth=18, stem="cifar", width=4, dtype=dtype)
  return registry.build_model(cfg, 10, backend="auto")


@pytest.mark.parametrize("train", [False, True])
def test_bf16_forward_is_close_to_f32(train):
  """Eval mode (running statistics) and train mode (batch statistics)."""
  x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  f32, bf16 = build("float32"), build("bfloat16")
  variables = jax.jit(lambda k: f32.init(k, x[:1], train=False))(jax.random.key(0))
  stats = jax.tree.map(lambda v: v + 0.1, variables["batch_stats"])  # Non-trivial running statistics.
  variables = {**variables, "batch_stats": stats}

  def logits(model):
    if train:
      out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    else:
      out = model.apply(variables, x, train=False)
    return out[0]

  a, b = jax.jit(lambda: logits(f32))(), jax.jit(lambda: logits(bf16))()
  assert b.dtype == jnp.float32  # Logits come back in float32 for the loss.
  assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
  a, b = np.asarray(a), np.asarray(b)
  assert np.all(np.isfinite(b))
  error = np.linalg.norm(b - a) / np.linalg.norm(a)
  print(f"train={train}: relative error {error:.4f}")
  assert error < TOLERANCE, error
  assert error > 0  # bf16 really computed in bf16 (not silently float32).
