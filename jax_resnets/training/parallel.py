"""One per-device step, two ways to map it over devices: shard_map (default) or pmap.

`DataParallel` hides the difference from the loop: `replicate` / `unreplicate` move the
train state, `shard` places a host batch, `train_step` / `eval_step` are the compiled
mapped steps, `host` brings replicated metrics and sharded outputs back as numpy.
"""
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_resnets.training import steps

MODES = ("shard_map", "pmap")


class DataParallel:

  def __init__(self, mode: str = "shard_map", devices=None):
    if mode not in MODES:
      raise ValueError(f"parallel: unknown mode {mode!r} (known: {', '.join(MODES)})")
    self.mode = mode
    self.devices = list(devices or jax.devices())
    self.mesh = Mesh(np.array(self.devices), (steps.AXIS,))
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def map(self, fn, out_specs, donate_state: bool = False):
    """Maps per-device `fn(state, batch, ...)` (state replicated, batch split on axis 0)."""
    donate = (0,) if donate_state else ()
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=steps.AXIS, devices=self.local_devices, donate_argnums=donate)
    mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), P(steps.AXIS)), out_specs=out_specs,
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)

  def compile_steps(self, label_smoothing: float = 0.0):
    self.train_step = self.map(functools.partial(steps.train_step, label_smoothing=label_smoothing),
                               (P(), P()), donate_state=True)
    self.eval_step = self.map(steps.eval_step, (P(), P(steps.AXIS)))
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

  def shard(self, batch: dict):
    """Host-local numpy batch -> device batch (global array / leading device axis)."""
    if self.mode == "pmap":
      n = len(self.local_devices)
      return jax.tree.map(lambda x: np.reshape(x, (n, -1, *x.shape[1:])), batch)
    sharding = NamedSharding(self.mesh, P(steps.AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

  def host_metrics(self, metrics) -> dict:
    return {k: float(v) for k, v in jax.device_get(self.unreplicate(metrics)).items()}

  def host_sharded(self, x) -> np.ndarray:
    """A batch-sharded output -> numpy with the global batch on axis 0 (this process's rows)."""
    if self.mode == "pmap":
      x = np.asarray(x)
      return x.reshape(-1, *x.shape[2:])
    return np.concatenate([np.asarray(s.data) for s in x.addressable_shards])
