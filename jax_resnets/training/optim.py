"""Optimizers and learning-rate schedules from `config.optim`, all built from optax."""
import jax
import ml_collections
import numpy as np
import optax


# Keys of one optimizer or schedule only: a config sets them where it uses that optimizer or
# schedule (e.g. `config.optim.update(schedule="step", decay_epochs=(30,))`); these are the defaults.
FAMILY_DEFAULTS = {
    "b1": 0.9, "b2": 0.999,  # adamw
    "decay_epochs": (30,), "decay_factor": 0.1,  # step
    "restart_epochs": 10, "restart_mult": 2,  # cosine_restarts
    "plateau_factor": 0.1, "plateau_patience": 5, "plateau_accumulation_steps": 100,  # plateau
}


def _get(cfg: ml_collections.ConfigDict, key: str):
  return cfg.get(key, FAMILY_DEFAULTS[key])


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
  """Returns an optax schedule: step -> learning rate.

  `cfg.schedule`: constant | cosine (linear warmup then cosine to 0) | step (multiply by
  `decay_factor` at each epoch in `decay_epochs`) | cosine_restarts (SGDR: first cycle
  `restart_epochs`, each next one `restart_mult` times longer) | plateau (constant here;
  the reduce-on-plateau scale is in the optimizer chain).
  """
  lr, warmup = cfg.learning_rate, int(cfg.warmup_epochs * steps_per_epoch)
  if cfg.schedule in ("constant", "plateau"):
    base = optax.constant_schedule(lr)
  elif cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1), 0.0)
  elif cfg.schedule == "step":
    base = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch): _get(cfg, "decay_factor") for e in _get(cfg, "decay_epochs")})
  elif cfg.schedule == "cosine_restarts":
    cycles, length, covered = [], _get(cfg, "restart_epochs") * steps_per_epoch, 0
    while covered < total_steps:
      cycles.append(dict(init_value=lr, peak_value=lr, decay_steps=int(length), warmup_steps=0, end_value=0.0))
      covered, length = covered + int(length), length * _get(cfg, "restart_mult")
    base = optax.sgdr_schedule(cycles)
  else:
    raise ValueError(f"optim.schedule: unknown schedule {cfg.schedule!r} "
                     "(known: constant, cosine, step, cosine_restarts, plateau)")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), base], [warmup])
  return base


def create_optimizer(cfg: ml_collections.ConfigDict, schedule, weight_decay_mask=None):
  """SGD (momentum, nesterov; L2 weight decay as torch) or AdamW; optional reduce-on-plateau.

  `weight_decay_mask`: pytree of bools (True = decayed), e.g. to spare frozen parameters.
  """
  if cfg.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=weight_decay_mask),
        optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, b1=_get(cfg, "b1"), b2=_get(cfg, "b2"), weight_decay=cfg.weight_decay, mask=weight_decay_mask)
  else:
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r} (known: sgd, adamw)")
  if cfg.schedule == "plateau":
    tx = optax.chain(tx, optax.contrib.reduce_on_plateau(
        factor=_get(cfg, "plateau_factor"), patience=_get(cfg, "plateau_patience"), accumulation_size=_get(cfg, "plateau_accumulation_steps")))
  return tx


def plateau_scale(opt_state) -> float:
  """Current reduce-on-plateau multiplier (1.0 if the chain has none)."""
  is_plateau = lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)
  for leaf in jax.tree.leaves(opt_state, is_leaf=is_plateau):
    if is_plateau(leaf):
      return float(np.mean(leaf.scale))  # A population's scales: their mean.
  return 1.0
