"""Pure per-device train and eval steps.

Each runs on one device's shard of the global batch and averages across the mapped axis
`batch` with `lax.pmean` / `lax.psum`; `parallel.DataParallel` runs them under
`jax.shard_map` (default) or `jax.pmap`. BatchNorm statistics are synchronised over the
same axis, so N devices compute exactly what one device computes on the global batch.
"""
import jax
import jax.numpy as jnp
import optax
from jax import lax

AXIS = "batch"


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy; `labels` are class ids or soft targets (MixUp)."""
  targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def hard_labels(labels: jax.Array) -> jax.Array:
  return labels if labels.ndim == 1 else jnp.argmax(labels, -1)


def device_mean(tree):
  """`lax.pmean` over `batch`; on a one-device mesh the identity (XLA:CPU otherwise copies every
  gradient: 6-7 ms per ResNet-18 step, BUILD_NOTES.md)."""
  return tree if lax.axis_size(AXIS) == 1 else lax.pmean(tree, AXIS)


def train_step(state, batch: dict, label_smoothing: float = 0.0, loss_fn=None):
  """One SGD step on this device's shard; gradients and BN stats pmean'd over `batch`.

  `loss_fn(logits, aux, batch) -> per-example loss` replaces the softmax cross-entropy
  (e.g. the hierarchy study's parent + child loss on `aux` outputs of the model).
  """
  objective = loss_fn or (lambda logits, _, b: cross_entropy(logits, b["label"], label_smoothing))

  def loss_and_aux(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    (logits, aux), updates = state.apply_fn(variables, batch["image"], train=True, mutable=["batch_stats"])
    loss = objective(logits, aux, batch).mean()
    return loss, (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(state.params)
  grads, batch_stats, loss = device_mean((grads, batch_stats, loss))
  new_state = state.apply_gradients(grads, batch_stats, value=loss)
  accuracy = device_mean(jnp.mean(jnp.argmax(logits, -1) == hard_labels(batch["label"])))
  return new_state, {"loss": loss, "accuracy": accuracy}


def eval_step(state, batch: dict):
  """Returns (psum'd metric sums over real rows, this shard's logits)."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits, _ = state.apply_fn(variables, batch["image"], train=False)
  mask = batch["mask"]
  sums = {
      "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
      "accuracy": jnp.sum((jnp.argmax(logits, -1) == hard_labels(batch["label"])) * mask),
      "count": jnp.sum(mask),
  }
  return lax.psum(sums, AXIS), logits
