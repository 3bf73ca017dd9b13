"""The pure per-device train and eval steps every study trains with.

Each runs on one device's shard of the global batch and averages across the mapped axis
`batch` with `lax.pmean` / `lax.psum`; `parallel.DataParallel` runs them under
`jax.shard_map` (default) or `jax.pmap`, and a population is `jax.vmap` of the same step over
a leading model axis (`population.py`). BatchNorm statistics are synchronised over the
same axis, so N devices compute exactly what one device computes on the global batch.

Studies customise the step by arguments, never by copies:
  loss_fn(logits, aux, batch, batch_stats) -> (mean loss, {name: metric})   the objective;
  after_update(new_state, outputs, batch) -> new_state                      e.g. center-loss centers.
`loop.build` adds input_fn(images, key, shard) -> model-ready images (data/device_augment.py) when
the train batches hold uint8 images to augment and normalise on the device.
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
  gradient: 6-7 ms per ResNet-18 step)."""
  return tree if lax.axis_size(AXIS) == 1 else lax.pmean(tree, AXIS)


def classification_loss(label_smoothing: float = 0.0):
  """The default objective: mean softmax cross-entropy (+ label smoothing)."""
  def loss_fn(logits, aux, batch, batch_stats):
    del aux, batch_stats
    return cross_entropy(logits, batch["label"], label_smoothing).mean(), {}
  return loss_fn


def step_rng(state) -> jax.Array:
  """A key per (run seed, step, device): dropout differs across steps and devices, and a resumed
  run draws what an uninterrupted one would."""
  return jax.random.fold_in(jax.random.fold_in(state.key, state.step), lax.axis_index(AXIS))


# The augmentation key's stream: no device index reaches it, so it never equals a dropout key.
AUGMENT_STREAM = 2**31 - 1


def augment_rng(state) -> jax.Array:
  """A key per (run seed, step), the same on every device: device augmentation draws for the whole
  global batch with it, so N devices augment as one does (each takes its rows: `shard` below)."""
  return jax.random.fold_in(jax.random.fold_in(state.key, state.step), AUGMENT_STREAM)


def shard() -> tuple:
  """(this device's index, device count) on the mapped axis `batch`."""
  return lax.axis_index(AXIS), lax.axis_size(AXIS)


def train_step(state, batch: dict, label_smoothing: float = 0.0, loss_fn=None, after_update=None, input_fn=None):
  """One optimizer step on this device's shard; gradients, BN stats and metrics pmean'd over `batch`.

  input_fn: None (batch["image"] is model-ready) or fn(images, key, shard) -> model-ready images,
  applied first so the objective and `after_update` see the images the model saw."""
  objective = loss_fn or classification_loss(label_smoothing)
  if input_fn is not None:
    batch = {**batch, "image": input_fn(batch["image"], augment_rng(state), shard())}

  def loss_and_aux(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    (logits, aux), updates = state.apply_fn(variables, batch["image"], train=True, mutable=["batch_stats"],
                                            rngs={"dropout": step_rng(state)})
    loss, parts = objective(logits, aux, batch, state.batch_stats)
    return loss, (logits, aux, updates.get("batch_stats", state.batch_stats), parts)

  (loss, (logits, aux, batch_stats, parts)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(state.params)
  grads, batch_stats, loss, parts = device_mean((grads, batch_stats, loss, parts))
  new_state = state.apply_gradients(grads, batch_stats, value=loss)
  if after_update is not None:
    new_state = after_update(new_state, {"logits": logits, **aux}, batch)
  metrics = {"loss": loss, **parts}
  if logits is not None:
    metrics["accuracy"] = device_mean(jnp.mean(jnp.argmax(logits, -1) == hard_labels(batch["label"])))
  return new_state, metrics


def eval_step(state, batch: dict):
  """(psum'd metric sums over real, labelled rows; this shard's {logits, features, label})."""
  logits, aux = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["image"],
                               train=False)
  labels = hard_labels(batch["label"])
  valid = batch["mask"] * (labels >= 0)
  sums = {"accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) * valid), "count": jnp.sum(valid),
          "loss": jnp.sum(cross_entropy(logits, jnp.maximum(batch["label"], 0)) * valid)}
  return lax.psum(sums, AXIS), {"logits": logits, **{k: v for k, v in aux.items() if k == "features"},
                                 "label": batch["label"]}
