"""The CPU backend (`config.backend=cpu`, or `auto` on a CPU): faster ops with stock flax's values.

Reached only through `jax_resnets.backend`. `fast_ops` holds the ops (oneDNN convs and batch
norms through `onednn`, one matmul per kernel tap on small maps, a scatter-free max-pool
backward), `xla_flags` the process settings (XLA flags; glibc malloc tuning, opt-in). Measured
in docs/performance.md. The submodules are imported on use: the process settings must be
applicable before JAX (and its allocations) start.
"""
import functools


def _norm_relu(module, x):
  """relu(bn(x)) in one oneDNN op where `module` (fast_ops.BatchNorm) can; else flax's."""
  from jax_resnets.cpu import fast_ops  # pylint: disable=g-import-not-at-top
  if isinstance(module, fast_ops.BatchNorm):
    return module(x, relu=True)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.relu(module(x))


def _per_model(fn):
  """Traced in `models_in_parallel`: a population's convs and batch norms run on oneDNN, the
  models in parallel, one core each."""
  from jax_resnets.cpu import fast_ops  # pylint: disable=g-import-not-at-top
  return fast_ops.models_in_parallel()(fn)


def available() -> bool:
  from jax_resnets.cpu import onednn  # pylint: disable=g-import-not-at-top
  return onednn.available()


def configure_process(eval_only: bool = False) -> None:
  from jax_resnets.cpu import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.configure(eval_only)


@functools.cache
def backend():
  """The `jax_resnets.backend.Backend` of the CPU ops."""
  from jax_resnets import backend as backend_lib  # pylint: disable=g-import-not-at-top
  from jax_resnets.cpu import fast_ops  # pylint: disable=g-import-not-at-top
  return backend_lib.Backend("cpu", conv=fast_ops.AutoConv, norm=fast_ops.BatchNorm, pool=fast_ops.max_pool_3x3_s2,
                             norm_relu=_norm_relu, per_model=_per_model)
