"""TrainState: step, params, batch_stats, optax opt_state (a pure pytree)."""
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
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def apply_gradients(self, grads, batch_stats, value=None) -> "TrainState":
    """One optax update; `value` (the loss) feeds transformations such as reduce-on-plateau."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, value=value)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def create_train_state(rng: jax.Array, model, image_shape: tuple[int, ...], tx) -> TrainState:
  # Jitted: an eager init dispatches every op separately (measured 2x slower start-up).
  variables = jax.jit(functools.partial(model.init, train=False))(rng, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    apply_fn=model.apply, tx=tx)
