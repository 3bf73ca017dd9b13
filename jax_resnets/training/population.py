"""A population of K models of one config trained as ONE jitted program, vmapped over seeds.

Model k uses seed `seeds[k]` for its initialisation and its data order. Every leaf of the
`PopulationState` has a leading model axis; the train step is `jax.vmap` of a pure
single-model step (no collectives: batch norm is per model), with the global step and the
batch shape shared, so all models run in one XLA program. With several devices and K
divisible by their number, the model axis is split over them (`jax.shard_map`).

Gradual magnitude pruning (compression/pruning.py) is built in: each model has a final
sparsity (0 = dense) and masks; masks are updated on the schedule's update steps, and
gradients and parameters are multiplied by them, so pruned weights stay exactly zero.
Frozen parameters (e.g. a backbone under an adapter) get `optax.set_to_zero` updates.
"""
import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_resnets.studies.celeba_cie import pruning
from jax_resnets.config_lib import ConfigError
from jax_resnets.data import pipeline
from jax_resnets.training import optim, steps
from jax_resnets.training.loop import NonFiniteLoss

MODELS = "models"


class PopulationState(flax.struct.PyTreeNode):
  """Per-model training state; every leaf has a leading model axis [K, ...]."""
  params: Any
  batch_stats: Any
  opt_state: Any
  masks: Any
  final_sparsity: jax.Array


def trainable_labels(params, prefixes: Sequence[str]):
  """'train' / 'frozen' per leaf: with `prefixes`, only paths starting with one of them train."""
  def label(path, _):
    name = pruning.path_name(path)
    return "train" if not prefixes or any(name.startswith(p) for p in prefixes) else "frozen"
  return jax.tree_util.tree_map_with_path(label, params)


def count_trainable(params, prefixes: Sequence[str]) -> int:
  labels = jax.tree.leaves(trainable_labels(params, prefixes))
  return sum(int(x.size) for x, l in zip(jax.tree.leaves(params), labels) if l == "train")


def make_optimizer(optim_cfg: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int,
                   trainable: Sequence[str] = ()):
  """optax chain from `config.optim` (training/optim.py); frozen params get zero updates."""
  tx = optim.create_optimizer(optim_cfg, optim.learning_rate_schedule(optim_cfg, steps_per_epoch, total_steps))
  if not trainable:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               functools.partial(trainable_labels, prefixes=tuple(trainable)))


@dataclasses.dataclass
class Population:
  """Compiled init / train / eval functions for populations of `model`."""
  model: Any
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  prune_cfg: ml_collections.ConfigDict | None = None
  label_smoothing: float = 0.0
  # {'params': ..., 'batch_stats': ...} with a leading model axis, overlaid on model k's fresh
  # variables under `pretrained_prefix` (model k gets entry k mod its length): a frozen backbone.
  pretrained: dict | None = None
  pretrained_prefix: str = "backbone"

  def __post_init__(self):
    # Traced in models_in_parallel: every conv goes to oneDNN, which runs the models in parallel.
    self.train_step = per_model(self._model_step, in_axes=(0, 0, None), donate_argnums=0)
    self._init = jax.jit(self._model_init)
    self._logits = {}

  def _model_init(self, rng, final_sparsity):
    variables = self.model.init(rng, jnp.zeros((1, *self.image_shape), jnp.float32), train=False)
    params = variables["params"]
    return PopulationState(params, variables.get("batch_stats", {}), self.tx.init(params),
                           pruning.initial_masks(params), final_sparsity)

  def init(self, seeds: Sequence[int], final_sparsity: Sequence[float]) -> PopulationState:
    """Initialises model k from `seeds[k]` (one compiled single-model init, called K times).

    Keys use the 'rbg' PRNG (XLA RngBitGenerator): compiling a ResNet init with threefry
    took 43-72 s on the shared 2-core CPU against 15 s with rbg (BUILD_NOTES_cie.md).
    """
    states = [self._overlay(self._init(jax.random.key(int(s), impl="rbg"), jnp.float32(f)), k)
              for k, (s, f) in enumerate(zip(seeds, final_sparsity))]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

  def _overlay(self, state: PopulationState, k: int) -> PopulationState:
    """Copies pretrained model k's variables into `state`; keys the model lacks (e.g. a stage it
    does not use) are skipped, a shape mismatch or no match at all is a ConfigError."""
    if not self.pretrained:
      return state
    new, matched = {}, 0
    for collection in ("params", "batch_stats"):
      flat = flax.traverse_util.flatten_dict(getattr(state, collection), sep="/")
      src = flax.traverse_util.flatten_dict(self.pretrained.get(collection, {}), sep="/")
      for key, value in src.items():
        target = f"{self.pretrained_prefix}/{key}"
        if target in flat and flat[target].shape != value.shape[1:]:
          raise ConfigError(f"config error: pretrained {collection}/{key} has shape {value.shape[1:]}, the "
                            f"model's {target} {flat[target].shape} (model.width/depth differ from the checkpoint's)")
        if target in flat:
          flat[target], matched = jnp.asarray(value[k % value.shape[0]]), matched + 1
      new[collection] = flax.traverse_util.unflatten_dict(flat, sep="/")
    if not matched:
      raise ConfigError(f"config error: no pretrained variable matches the model's {self.pretrained_prefix}/*")
    return state.replace(params=new["params"], batch_stats=new["batch_stats"])

  def _model_step(self, st: PopulationState, batch: dict, step):
    """One step of one model; `step` (shared, unbatched) = steps completed so far."""
    masks = st.masks
    if self.prune_cfg is not None:
      schedule = pruning.schedule_from_config(self.prune_cfg, st.final_sparsity)
      masks = pruning.update_masks(st.params, masks, step, schedule, self.prune_cfg.scope)
    params = pruning.apply_masks(st.params, masks)

    def loss_fn(p):
      (logits, _), upd = self.model.apply({"params": p, "batch_stats": st.batch_stats}, batch["image"],
                                          train=True, mutable=["batch_stats"])
      loss = steps.cross_entropy(logits, batch["label"], self.label_smoothing).mean()
      return loss, (logits, upd.get("batch_stats", st.batch_stats))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.tx.update(pruning.apply_masks(grads, masks), st.opt_state, params)
    params = pruning.apply_masks(optax.apply_updates(params, updates), masks)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == steps.hard_labels(batch["label"]))
    return st.replace(params=params, batch_stats=batch_stats, opt_state=opt_state, masks=masks), {
        "loss": loss, "accuracy": accuracy}

  def logits(self, variables, images, apply_fn: Callable | None = None):
    """[K, B, C] logits of every model (variables with a leading model axis) on shared images."""
    apply_fn = apply_fn or self.model.apply
    if apply_fn not in self._logits:
      self._logits[apply_fn] = per_model(lambda v, x: apply_fn(v, x, train=False)[0])
    return self._logits[apply_fn](variables, images)


def per_model(fn: Callable, in_axes: tuple = (0, None), donate_argnums=(), wrap: Callable = lambda f: f) -> Callable:
  """jit of `fn` for every model of a population: vmapped over the model axis (0 in `in_axes`; the
  first argument has it) of its arguments, the others (None, e.g. images) the same for all;
  traced in `models_in_parallel` and split over devices (`over_devices`)."""
  fn = jax.vmap(wrap(fn), in_axes=in_axes)
  specs = tuple(P() if axis is None else P(MODELS) for axis in in_axes)
  return jax.jit(over_devices(fn, specs), donate_argnums=donate_argnums)


def _models_mesh(num_models: int) -> Mesh | None:
  """All devices along the model axis, when there are several and K divides evenly over them."""
  n = jax.device_count()
  return None if n == 1 or num_models % n else Mesh(np.array(jax.devices()), (MODELS,))


def shard_models(tree, num_models: int):
  """Places the model axis over all devices when K divides evenly (else leaves it as is)."""
  mesh = _models_mesh(num_models)
  return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, P(MODELS)))


def over_devices(fn: Callable, in_specs: tuple) -> Callable:
  """`fn` (vmapped over models: leading axis K of its first argument and its outputs) with each
  device computing its share of the models (`jax.shard_map`), where `_models_mesh` has a mesh."""
  def run(*args):
    mesh = _models_mesh(jax.tree.leaves(args[0])[0].shape[0])
    if mesh is None:
      return fn(*args)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(MODELS), check_vma=False)(*args)
  return run


@dataclasses.dataclass(frozen=True)
class Subset:
  """Rows `indices` of a random-access source (e.g. the training folds of k-fold CV); picklable."""
  source: Any
  indices: tuple

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return self.source[self.indices[index]]


def subset_iterator(ds_cfg: ml_collections.ConfigDict, source, batch_size: int, seed: int):
  """pipeline.train_iterator's recipe (shuffle, repeat, preprocess + augment, batch) over `source`."""
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds.random_map(pipeline._preprocess(ds_cfg, train=True), seed=seed)  # pylint: disable=protected-access
  return iter(ds.batch(batch_size, drop_remainder=True).to_iter_dataset(pipeline.read_options(ds_cfg)))


def population_batches(ds_cfg: ml_collections.ConfigDict, batch_size: int, seeds: Sequence[int], source=None):
  """Infinite iterator of {'image': [K, B, H, W, C], 'label': [K, B]}: one grain stream per seed.

  `source`: train on these rows instead of `dataset.train_split` (k-fold cross-validation).
  """
  if source is None:
    iters = [pipeline.train_iterator(ds_cfg, batch_size, int(s)) for s in seeds]
  else:
    iters = [subset_iterator(ds_cfg, source, batch_size, int(s)) for s in seeds]
  while True:
    batches = [next(it) for it in iters]
    yield {k: np.stack([b[k] for b in batches]) for k in ("image", "label")}


def variables_of(state: PopulationState) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def train(pop: Population, ds_cfg: ml_collections.ConfigDict, seeds: Sequence[int], final_sparsity: float,
          total_steps: int, batch_size: int, log: Callable[[int, dict], None] | None = None,
          log_every: int = 50, source=None) -> PopulationState:
  """Trains len(seeds) models together for `total_steps`; `log(step, {name: [K] values})`."""
  state = shard_models(pop.init(seeds, [final_sparsity] * len(seeds)), len(seeds))
  batches, buffer = population_batches(ds_cfg, batch_size, seeds, source), []
  for step in range(total_steps):
    batch = shard_models(next(batches), len(seeds))
    state, metrics = pop.train_step(state, batch, step)
    buffer.append(metrics)
    if log and ((step + 1) % log_every == 0 or step + 1 == total_steps):
      host = jax.device_get(buffer)
      mean = {f"train/{k}": np.mean([m[k] for m in host], axis=0) for k in host[0]}
      if not all(np.isfinite(v).all() for v in mean.values()):
        raise NonFiniteLoss(f"non-finite training loss at step {step + 1} (seeds {list(seeds)}): {mean}")
      log(step + 1, mean)
      buffer = []
  return state


def benchmark(num_models: int, width: int, image_size: int, batch_size: int, steps: int, prune: bool = True) -> dict:
  """Seconds per step of K models vmapped in one program vs K one-model programs in turn.

  Random batches (no input pipeline), compile excluded, ResNet-18 with the pruning schedule.
  """
  import time  # pylint: disable=g-import-not-at-top
  from jax_resnets import config_lib  # pylint: disable=g-import-not-at-top
  from jax_resnets.models import registry  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  cfg.model.width = width
  prune_cfg = ml_collections.ConfigDict(dict(begin_step=0, end_step=steps, frequency=max(steps // 4, 1),
                                             scope="per_tensor")) if prune else None
  pop = Population(registry.build_model(cfg.model, 2), make_optimizer(cfg.optim, steps, steps),
                   (image_size, image_size, 3), prune_cfg)
  rng = np.random.default_rng(0)
  out = {}
  for name, groups in (("vmapped", [list(range(num_models))]), ("one_by_one", [[k] for k in range(num_models)])):
    states = [pop.init(g, [0.9] * len(g)) for g in groups]
    batches = [{"image": rng.normal(size=(len(g), batch_size, image_size, image_size, 3)).astype(np.float32),
                "label": rng.integers(0, 2, (len(g), batch_size)).astype(np.int32)} for g in groups]
    for i, g in enumerate(groups):  # Compile (and warm up) each program shape once.
      states[i], m = pop.train_step(states[i], batches[i], 0)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
      for i in range(len(groups)):
        states[i], m = pop.train_step(states[i], batches[i], step)
    jax.block_until_ready((states, m))
    out[f"{name}_s_per_step"] = (time.perf_counter() - t0) / steps
  out["speedup"] = out["one_by_one_s_per_step"] / out["vmapped_s_per_step"]
  return out


if __name__ == "__main__":
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description="Population training: vmapped vs one model at a time.")
  for flag, default in (("models", 4), ("width", 8), ("image_size", 32), ("batch_size", 32), ("steps", 20)):
    parser.add_argument(f"--{flag}", type=int, default=default)
  a = parser.parse_args()
  print(json.dumps({"device": str(jax.devices()[0]), **vars(a),
                    **benchmark(a.models, a.width, a.image_size, a.batch_size, a.steps)}))
