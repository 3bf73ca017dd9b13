"""TrainState: step, params, batch_stats, optax opt_state, a dropout key (a pure pytree)."""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # uint32 key data (orbax-friendly); steps.step_rng derives each step's key
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def apply_gradients(self, grads, batch_stats, value=None) -> "TrainState":
    """One optax update; `value` (the loss) feeds transformations such as reduce-on-plateau."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, value=value)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)

  @property
  def key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.rng)


def init_key(seed: int) -> jax.Array:
  """The one place a seed becomes a key: a model trained alone and model k of a population with
  the same seed start from the same weights."""
  return jax.random.key(int(seed))


def create_train_state(rng: jax.Array, model, image_shape: tuple[int, ...], tx) -> TrainState:
  # Jitted: an eager init dispatches every op separately (measured 2x slower start-up).
  init_rng, dropout_rng = jax.random.split(rng)
  variables = jax.jit(functools.partial(model.init, train=False))(init_rng, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=jax.jit(tx.init)(params), rng=jax.random.key_data(dropout_rng),
                    apply_fn=model.apply, tx=tx)
