"""A population: K models of one config, seeds `seeds[k]`, trained as ONE program by the core loop.

The state is the core `TrainState` with a leading model axis on every leaf, initialised by the
same `create_train_state` as a single run (vmapped over the seeds' keys: model k starts from the
weights a run with seed `seeds[k]` starts from), and the train step is `jax.vmap` of the core
`steps.train_step` (`parallel.DataParallel(num_models=K)`). Model k reads its own data stream
(shuffled and augmented with its seed); `PopulationIterator` stacks the K streams into
[K, B, ...] batches and is checkpointed with them, so a population resumes like any run.
"""
import json
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_resnets.data import pipeline
from jax_resnets.training.state import TrainState, create_train_state, init_key


AXIS = "models"  # The vmapped model axis of a population's steps (over_models).


def init(seeds: Sequence[int], model, image_shape: tuple[int, ...], tx) -> TrainState:
  """The K models' initial states, stacked: model k is `create_train_state(init_key(seeds[k]), ...)`."""
  keys = jnp.stack([init_key(s) for s in seeds])
  # Not one outer jit: create_train_state's own jits (model.init, tx.init) batch into separate
  # programs, so every level of a study (same model, an optimizer state that differs only in
  # values, e.g. pruning's final sparsity) reuses the compiled model init.
  return jax.vmap(lambda k: create_train_state(k, model, image_shape, tx))(keys)


def over_models(fn: Callable, per_model: Callable = lambda f: f, in_axes=(0, None)) -> Callable:
  """`fn` for every model of a population: the backend's `per_model` wrapping, then vmap over the
  model axis `AXIS` (0 in `in_axes`; None: shared by all models, e.g. evaluation images)."""
  return jax.vmap(per_model(fn), in_axes=in_axes, axis_name=AXIS)


def same_for_all_models(predicate: jax.Array) -> jax.Array:
  """A predicate every model of a population shares (e.g. "is this a pruning step"), unbatched.

  Under vmap a batched predicate turns `lax.cond` into a select that runs both branches on every
  call; reduced over `AXIS` it stays one branch. Outside a population it is returned as it is."""
  try:
    return jax.lax.pmax(predicate.astype(jnp.int32), AXIS) > 0
  except NameError:  # Not traced under over_models: no model axis.
    return predicate


class PopulationIterator:
  """[K, B, ...] batches from one grain iterator per model; checkpointable with grain's handler
  (`get_state` / `set_state` bytes), so the K data positions are saved with the state."""

  KEYS = ("image", "label")

  def __init__(self, iterators: Sequence):
    self.iterators = list(iterators)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batches = [next(it) for it in self.iterators]
    return {k: np.stack([b[k] for b in batches]) for k in self.KEYS}

  def get_state(self) -> bytes:
    return json.dumps([it.get_state() for it in self.iterators]).encode()

  def set_state(self, state: bytes) -> None:
    states = json.loads(state)
    if len(states) != len(self.iterators):
      raise ValueError(f"data state of {len(states)} models, the population has {len(self.iterators)}")
    for it, s in zip(self.iterators, states):
      it.set_state(s)

  def start_prefetch(self) -> None:
    """grain's checkpoint handler calls this after a restore; the iterators read on demand."""


def train_iterator(ds_cfg, local_batch_size: int, seeds: Sequence[int], process_index: int = 0,
                   process_count: int = 1, source=None) -> PopulationIterator:
  return PopulationIterator([pipeline.train_iterator(ds_cfg, local_batch_size, int(s), process_index,
                                                     process_count, source) for s in seeds])


def model_slice(tree, k: int):
  """Model k's part of a population pytree (numpy)."""
  return jax.tree.map(lambda x: np.asarray(x)[k], jax.device_get(tree))
