"""Freeze modes for fine-tuning: which parameters train, and frozen batch norm.

`config.freeze`:
  full         everything trains (the default; nothing below changes a run).
  head_only    only `fc` (linear probe / feature extraction).
  final_block  `layer4` and `fc`.
  "a,b,..."    any comma-separated (or, from Python, a sequence of) trainable prefixes,
               torchvision-style or flax-style: "layer3.5,layer4,fc" / "layer3/5".

Frozen parameters get no update and no weight decay: the optimizer is wrapped in
`optax.multi_transform` whose frozen branch is `optax.set_to_zero()` (the inner optimizer,
weight decay included, never sees them and keeps no momentum for them). Prefixes match
whole path components: "layer3.1" selects layer3/1/... but not layer3/10/.... Frozen batch-norm
layers run in inference mode during training too: they normalise with their running
statistics and do not update them, so a frozen backbone computes the same features in
training and evaluation and its BN statistics stay exactly as loaded.
"""
from typing import Sequence

import flax.linen as nn
import jax
import optax

from jax_resnets.config_lib import ConfigError

MODES = {"full": None, "head_only": ("fc",), "final_block": ("layer4", "fc")}


def trainable_prefixes(freeze: str | Sequence[str]) -> tuple[tuple[str, ...], ...] | None:
  """Mode or prefixes -> prefixes as path tuples (None: everything trains)."""
  if isinstance(freeze, str):
    if freeze in MODES:
      freeze = MODES[freeze]
      if freeze is None:
        return None
    else:
      freeze = [p for p in freeze.split(",") if p.strip()]
  prefixes = tuple(tuple(p.strip().replace("/", ".").split(".")) for p in freeze)
  if not prefixes:
    raise ConfigError(f"config error: freeze={freeze!r} (a mode: {', '.join(MODES)}, or trainable prefixes)")
  return prefixes


def is_trainable(path: Sequence[str], prefixes) -> bool:
  return prefixes is None or any(tuple(path[:len(p)]) == p for p in prefixes)


def path_names(path) -> tuple[str, ...]:
  """A pytree key path as names: ('layer3', '1', 'conv1', 'kernel')."""
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def path_str(path) -> str:
  """A pytree key path as 'layer3/1/conv1/kernel'."""
  return "/".join(path_names(path))


def trainable_mask(params, freeze) -> dict:
  """Pytree of bools like `params`: True where the parameter trains."""
  prefixes = trainable_prefixes(freeze)
  return jax.tree_util.tree_map_with_path(lambda p, _: is_trainable(path_names(p), prefixes), params)


def check(params, freeze) -> None:
  """ConfigError if a prefix matches no parameter (a typo would silently freeze everything)."""
  prefixes = trainable_prefixes(freeze)
  paths = [path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  for prefix in prefixes or ():
    if not any(path[:len(prefix)] == prefix for path in paths):
      raise ConfigError(f"config error: freeze={freeze!r}: prefix {'.'.join(prefix)!r} matches no parameter "
                        "(names as torchvision's: conv1, bn1, layer1 ... layer4.2, fc)")


def param_counts(params, freeze) -> tuple[int, int]:
  """(trainable, total) parameter counts."""
  sizes = [int(x.size) for x in jax.tree.leaves(params)]
  mask = jax.tree.leaves(trainable_mask(params, freeze))
  return sum(n for n, m in zip(sizes, mask) if m), sum(sizes)


def optimizer(tx: optax.GradientTransformation, freeze) -> optax.GradientTransformation:
  """`tx` for trainable parameters, zero updates (no decay, no state) for frozen ones."""
  prefixes = trainable_prefixes(freeze)
  if prefixes is None:
    return tx
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda p, _: "train" if is_trainable(path_names(p), prefixes) else "frozen", params)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def frozen_batch_norm(apply_fn, freeze):
  """Wraps `model.apply` so that BN layers under frozen prefixes run in inference mode."""
  prefixes = trainable_prefixes(freeze)
  if prefixes is None:
    return apply_fn

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (isinstance(module, nn.BatchNorm) and context.method_name == "__call__"
        and not module.use_running_average and not is_trainable(module.path, prefixes)):
      inference = module.clone(parent=None, use_running_average=True)
      return inference.apply(module.variables, *args, **kwargs)
    return next_fun(*args, **kwargs)

  def apply(variables, *args, **kwargs):
    with nn.intercept_methods(interceptor):
      return apply_fn(variables, *args, **kwargs)

  return apply
