"""One per-device step, two ways to map it over devices: shard_map (default) or pmap.

`DataParallel` hides the difference from the loop: `replicate` / `unreplicate` move the
train state, `shard` places a host batch, `train_step` / `eval_step` are the compiled
mapped steps, `host_*` bring metrics and sharded outputs back as numpy.

A population (`num_models` > 0) is the same per-device step vmapped over a leading model axis
of the state and the batch ([K, B, ...], each model its own data stream); devices split the
batch axis as for one model, and evaluation batches are shared by all models.
"""
import functools
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_resnets.training import population, steps

MODES = ("shard_map", "pmap")


class DataParallel:

  def __init__(self, mode: str = "shard_map", devices=None, num_models: int = 0,
               per_model: Callable = lambda fn: fn):
    if mode not in MODES:
      raise ValueError(f"parallel: unknown mode {mode!r} (known: {', '.join(MODES)})")
    if num_models and mode != "shard_map":
      raise ValueError("parallel: populations run under shard_map (set parallel=shard_map)")
    self.mode, self.num_models, self.per_model = mode, num_models, per_model
    self.devices = list(devices or jax.devices())
    self.mesh = Mesh(np.array(self.devices), (steps.AXIS,))
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    # Where the per-device batch axis is: after the model axis in a population's train batches.
    self._batch_spec = P(None, steps.AXIS) if num_models else P(steps.AXIS)

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def map(self, fn, out_specs, donate_state: bool = False, batch_spec=None):
    """Maps per-device `fn(state, batch, ...)` (state replicated, batch split on its batch axis)."""
    donate = (0,) if donate_state else ()
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=steps.AXIS, devices=self.local_devices, donate_argnums=donate)
    mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), batch_spec or self._batch_spec),
                           out_specs=out_specs, check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)

  def over_models(self, fn, in_axes=(0, 0)):
    """`fn` for every model of a population (the backend's `per_model` wrapping, then vmap)."""
    return population.over_models(fn, self.per_model, in_axes) if self.num_models else fn

  def compile_steps(self, train_step=None, eval_step=steps.eval_step, label_smoothing: float = 0.0):
    """The mapped train step (default: steps.train_step) and eval step; returns self."""
    train_step = train_step or functools.partial(steps.train_step, label_smoothing=label_smoothing)
    self.train_step = self.map(self.over_models(train_step), (P(), P()), donate_state=True)
    outputs = P(None, steps.AXIS) if self.num_models else P(steps.AXIS)
    self.eval_step = self.map(self.over_models(eval_step, (0, None)), (P(), outputs), batch_spec=P(steps.AXIS))
    return self

  def replicate(self, tree):
    if self.mode == "pmap":
      n = len(self.local_devices)  # pmap places the stacked host copies, one per device.
      return jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), jax.device_get(tree))
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def unreplicate(self, tree):
    if self.mode == "pmap":  # Host copy of device 0's replica: valid in any process count.
      return jax.device_get(jax.tree.map(lambda x: x[0], tree))
    return tree

  def shard(self, batch: dict, spec=None):
    """Host-local numpy batch -> device batch (global array / leading device axis)."""
    if self.mode == "pmap":
      n = len(self.local_devices)
      return jax.tree.map(lambda x: np.reshape(x, (n, -1, *x.shape[1:])), batch)
    sharding = NamedSharding(self.mesh, spec or self._batch_spec)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

  def shard_eval(self, batch: dict):
    """An evaluation batch: split over devices on axis 0 (shared by a population's models)."""
    return self.shard(batch, P(steps.AXIS))

  def host_metrics(self, metrics) -> dict:
    """name -> float, or [K] numpy values for a population."""
    host = jax.device_get(self.unreplicate(metrics))
    return {k: np.asarray(v, np.float64) if self.num_models else float(v) for k, v in host.items()}

  def host_sharded(self, x) -> np.ndarray:
    """A batch-sharded output -> numpy with this process's rows on the batch axis (axis 1 in a
    population: [K, B, ...])."""
    if self.mode == "pmap":
      x = np.asarray(x)
      return x.reshape(-1, *x.shape[2:])
    axis = 1 if self.num_models else 0
    return np.concatenate([np.asarray(s.data) for s in x.addressable_shards], axis=axis)
