"""The CPU backend (`config.backend=cpu`, or `auto` on a CPU): faster ops with stock flax's values.

Reached only through `jax_resnets.backend`. `fast_ops` holds the ops (oneDNN convs and batch
norms through `onednn`, one matmul per kernel tap on small maps, a scatter-free max-pool
backward), `xla_flags` the process settings (XLA flags; glibc malloc tuning, opt-in). Measured
in docs/performance.md.
"""
import flax.linen as nn

from jax_resnets.cpu import fast_ops, onednn, xla_flags


def _norm_relu(module, x):
  """relu(bn(x)) in one oneDNN op where `module` (fast_ops.BatchNorm) can; else flax's."""
  return module(x, relu=True) if isinstance(module, fast_ops.BatchNorm) else nn.relu(module(x))


def _per_model(fn):
  """Traced in `models_in_parallel`: a population's convs and batch norms run on oneDNN, the
  models in parallel, one core each."""
  return fast_ops.models_in_parallel()(fn)


def available() -> bool:
  return onednn.available()


def configure_process(eval_only: bool = False) -> None:
  xla_flags.configure(eval_only)


def _backend():
  from jax_resnets import backend  # pylint: disable=g-import-not-at-top  (backend imports this lazily)
  return backend.Backend("cpu", conv=fast_ops.AutoConv, norm=fast_ops.BatchNorm, pool=fast_ops.max_pool_3x3_s2,
                         norm_relu=_norm_relu, per_model=_per_model)


BACKEND = _backend()
