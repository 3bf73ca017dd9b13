"""The one training loop, in the style of flax `examples/`: `build` + `train_and_evaluate`.

Every study trains through it: a single model, or a population (`seeds`: K models vmapped in one
program, training/population.py), with the same orbax checkpoints (latest with the data-iterator
position, best-k), SIGTERM save (exit 143), NaN check, progress line and TensorBoard. Studies
customise it by arguments (model, train step, optimizer wrapper, a state transform, epoch-end
validation and early stopping), never by copies.

Resumable: a re-run with the same workdir restores the newest checkpoint (state and data
iterator position) and ends with the parameters an uninterrupted run would have.
"""
import dataclasses
import functools
import json
import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jax_resnets import backend, config_lib, models
from jax_resnets.data import device_augment, pipeline, sources
from jax_resnets.models import torchvision_import
from jax_resnets.training import checkpointing, freeze, optim, parallel, population, preemption, steps, summary
from jax_resnets.training.state import TrainState, create_train_state, init_key


class NonFiniteLoss(RuntimeError):
  """The loss or the parameters became NaN/inf; nothing was saved past the last good checkpoint."""


@dataclasses.dataclass
class Run:
  """Everything one training run holds, built once from the config."""
  config: ml_collections.ConfigDict
  workdir: str
  dp: parallel.DataParallel
  state: TrainState
  schedule: Callable
  train_iter: object
  ckpt: checkpointing.Checkpointer
  writer: summary.Writer
  steps_per_epoch: int
  total_steps: int
  seeds: tuple[int, ...] = ()  # A population's seeds (empty: one model, seed config.seed).

  @property
  def images_per_step(self) -> int:
    """Training images one global step consumes (every model of a population reads its own)."""
    return self.config.batch_size * max(len(self.seeds), 1)

  @property
  def local_batch_size(self) -> int:
    return self.config.batch_size // jax.process_count()


def image_shape(ds_cfg) -> tuple[int, int, int]:
  size = ds_cfg.get("image_size") or sources.spec(ds_cfg).image_size
  return (size, size, 3)


def data_parallel(config: ml_collections.ConfigDict, num_models: int = 0) -> parallel.DataParallel:
  """The device mapping of `config.parallel` over `config.num_devices` (0: all), batch checked."""
  devices = jax.devices()[:config.num_devices] if config.num_devices else None
  try:
    dp = parallel.DataParallel(config.parallel, devices, num_models,
                               backend.resolve(config.get("backend", "auto")).per_model)
  except ValueError as e:
    raise config_lib.ConfigError(f"config error: {e}") from e
  if config.batch_size % dp.num_devices:
    raise config_lib.ConfigError(
        f"config error: batch_size={config.batch_size} (not divisible by the {dp.num_devices} devices)")
  return dp


def optimizer_plan(config: ml_collections.ConfigDict, num_train: int | None = None):
  """(steps_per_epoch, total_steps, schedule, tx) from the training set's size and `config.optim`."""
  if num_train is None:
    num_train = pipeline.num_examples(config.dataset, config.dataset.train_split)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise config_lib.ConfigError(f"config error: batch_size={config.batch_size} (larger than the training split)")
  total_steps = config.get("num_train_steps") or config.num_epochs * steps_per_epoch
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps)
  return steps_per_epoch, total_steps, schedule, optim.create_optimizer(config.optim, schedule)


def build(config: ml_collections.ConfigDict, workdir: str, model=None, seeds: Sequence[int] = (),
          train_step: Callable | None = None, eval_step: Callable = steps.eval_step,
          tx_wrap: Callable | None = None, prepare_state: Callable | None = None, train_source=None) -> Run:
  """Model, optimizer, data, checkpoints; restores the newest checkpoint if there is one.

  seeds: train a population of len(seeds) models (seed k: init and data order), else one model.
  train_step / eval_step: per-device steps (default: steps.train_step with config.label_smoothing).
  tx_wrap: fn(tx) -> tx around the trainable parameters' optimizer (e.g. pruning).
  prepare_state: fn(fresh state) -> state before any restore (pretrained weights, extra state).
  train_source: train on these rows instead of `dataset.train_split` (e.g. cross-validation folds).
  """
  dp = data_parallel(config, len(seeds)).compile_steps(with_input_fn(config, train_step), eval_step)
  model = model or models.build_model(config.model, sources.spec(config.dataset).num_classes,
                                      bn_axis_name=steps.AXIS, backend=config.get("backend", "auto"))
  num_train = None if train_source is None else len(train_source)
  steps_per_epoch, total_steps, schedule, tx = optimizer_plan(config, num_train)
  tx = freeze.optimizer(tx_wrap(tx) if tx_wrap else tx, config.freeze)
  apply_fn = freeze.frozen_batch_norm(model.apply, config.freeze)
  local_batch, shape = config.batch_size // jax.process_count(), image_shape(config.dataset)
  if seeds:
    state = population.init(seeds, model, shape, tx)
    train_iter = population.train_iterator(config.dataset, local_batch, seeds, jax.process_index(),
                                           jax.process_count(), train_source)
  else:
    state = create_train_state(init_key(config.seed), model, shape, tx)
    train_iter = pipeline.train_iterator(config.dataset, local_batch, config.seed, jax.process_index(),
                                         jax.process_count(), train_source)
  state = init_weights(config, state.replace(apply_fn=apply_fn))
  state = prepare_state(state) if prepare_state else state
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint, config)
  state, train_iter = ckpt.restore_latest(state, train_iter, all_finite)  # Verified: checksums, finite.
  return Run(config, workdir, dp, state, schedule, train_iter, ckpt, summary.Writer(workdir),
             steps_per_epoch, total_steps, tuple(int(s) for s in seeds))


def with_input_fn(config: ml_collections.ConfigDict, train_step: Callable | None) -> Callable:
  """The train step (default: steps.train_step with config.label_smoothing), given the device
  augmentation as `input_fn` when the train batches are uint8 (dataset.augment_on resolves to
  device); a study's step is a partial of steps.train_step, so it takes the argument too."""
  step = train_step or functools.partial(steps.train_step, label_smoothing=config.label_smoothing)
  if device_augment.placement(config.dataset) != "device":
    return step
  return functools.partial(step, input_fn=device_augment.from_config(config.dataset))


def init_weights(config: ml_collections.ConfigDict, state: TrainState) -> TrainState:
  """`config.init.checkpoint` weights (if any); `config.freeze` checked and logged."""
  if config.get("init") and config.init.get("checkpoint"):
    state = torchvision_import.init_from_checkpoint(state, config.init.checkpoint, config.model)
  freeze.check(state.params, config.freeze)
  trainable, total = freeze.param_counts(state.params, config.freeze)
  logging.info("Parameters: %d trainable of %d (freeze=%s).", trainable, total, config.freeze)
  return state


def evaluate(run: Run, state, split: str, source=None):
  """Mean metrics over the real rows of `split` (or `source`): floats, or [K] arrays for a
  population; and the eval step's per-example outputs (logits, ...) of every example, in order
  (a population's with a leading model axis)."""
  totals, outs, masks = {}, [], []
  for batch in pipeline.eval_batches(run.config.dataset, split, run.local_batch_size,
                                     jax.process_index(), jax.process_count(), source):
    sums, out = run.dp.eval_step(state, run.dp.shard_eval(batch))
    for k, v in run.dp.host_metrics(sums).items():
      totals[k] = totals.get(k, 0.0) + v
    outs.append(jax.tree.map(run.dp.host_sharded, out))
    masks.append(batch["mask"])
  axis = 1 if run.seeds else 0
  outs = jax.tree.map(lambda *xs: np.concatenate(xs, axis), *outs)
  masks = np.concatenate(masks)
  if jax.process_count() > 1:  # Each process holds one contiguous block of the split.
    outs, masks = multihost_utils.process_allgather((outs, masks), tiled=True)
  count = totals.pop("count")
  metrics = {k: v / np.maximum(count, 1) for k, v in totals.items()}
  return metrics, jax.tree.map(lambda x: np.compress(masks > 0, x, axis), outs)


def population_summary(values: dict) -> dict:
  """Scalars for logs: a population's [K] metrics as their mean, plus `<name>_std` across models."""
  out = {}
  for k, v in values.items():
    v = np.asarray(v, np.float64)
    out[k] = float(v.mean())
    if v.ndim:
      out[f"{k}_std"] = float(v.std())
  return out


@jax.jit
def all_finite(tree) -> jax.Array:
  """One fused reduction: every leaf of `tree` finite (the NaN guard's parameter check)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_finite(metrics: dict, step: int, run: Run, state) -> None:
  """Stops on a non-finite loss or parameter, before anything past the last good checkpoint is saved."""
  ok_metrics = all(np.all(np.isfinite(v)) for v in metrics.values())
  if ok_metrics and bool(all_finite(state.params)):
    return
  run.ckpt.wait()  # The last good checkpoint may still be in flight (async save): land it.
  what = "training loss" if not ok_metrics else "parameters"
  raise NonFiniteLoss(f"non-finite {what} at step {step} ({population_summary(metrics)}); stopped without "
                      f"saving, last good checkpoint: step {run.ckpt.latest.latest_step()} in {run.workdir}/checkpoints")


class Meter:
  """Averages per-step device metrics on the host and measures throughput of completed steps."""

  def __init__(self, run: Run, start_step: int):
    self.run, self.buffer, self.t0, self.step0 = run, [], None, start_step
    self.eval_seconds = 0.0  # The last evaluation's duration, for the ETA.
    self.train_seconds = 0.0  # Completed train steps only: no compilation, evaluation or checkpoints.

  def add(self, metrics) -> None:
    self.buffer.append(metrics)

  def start(self, step: int) -> None:
    """Starts the throughput clock once `step` (which compiled the step) has completed; its metrics
    stay in the averages."""
    jax.block_until_ready(self.buffer)
    self.t0, self.step0 = time.time(), step

  def flush(self, step: int, state) -> dict:
    """Writes averaged train metrics + throughput; prints a progress line."""
    run = self.run
    values = [run.dp.host_metrics(m) for m in self.buffer]  # Blocks: the steps have completed.
    now, self.buffer = time.time(), []
    per_model = {k: np.mean([v[k] for v in values], axis=0) for k in values[0]}
    check_finite(per_model, step, run, state)
    out = {f"train/{k}": v for k, v in population_summary(per_model).items()}
    out["train/learning_rate"] = float(run.schedule(step)) * optim.plateau_scale(run.dp.unreplicate(state.opt_state))
    if self.t0 is not None and step > self.step0:
      self.train_seconds += now - self.t0
      self.log_progress(step, (step - self.step0) / (now - self.t0), out)
    run.writer.scalars(step, out)
    self.t0, self.step0 = now, step
    return out

  def log_progress(self, step: int, sps: float, out: dict) -> None:
    run = self.run
    images = sps * run.images_per_step
    out.update({"train/steps_per_sec": sps, "train/img_per_sec": images})
    evals_left = math.ceil(run.total_steps / run.steps_per_epoch) - step // run.steps_per_epoch
    eta = (run.total_steps - step) / sps + evals_left * self.eval_seconds
    logging.info("step %d/%d epoch %.2f loss %.4f acc %.3f | %.2f steps/s %.0f img/s | ETA %dm%02ds",
                 step, run.total_steps, step / run.steps_per_epoch, out["train/loss"],
                 out.get("train/accuracy", float("nan")), sps, images, eta // 60, eta % 60)


def end_of_epoch(run: Run, state, step: int, meter: Meter, validate: Callable) -> dict:
  """Train summary, validation, best-k and latest checkpoints, events flushed."""
  train = meter.flush(step, state) if meter.buffer else {}
  t0 = time.time()
  metrics = population_summary(validate(run, state))
  meter.eval_seconds = time.time() - t0
  run.writer.scalars(step, metrics)
  logging.info("epoch %d: %s", math.ceil(step / run.steps_per_epoch),
               " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if not k.endswith("_std")))
  run.writer.flush()  # Before the checkpoint exists: a kill -9 loses no more of the curves than of it.
  host_state = run.dp.unreplicate(state)
  run.ckpt.save_best(step, host_state, metrics)
  run.ckpt.save(step, host_state, run.train_iter)
  if meter.t0 is not None:
    meter.t0 = time.time()  # Throughput and train time leave out validation and checkpoints.
  return {**train, **metrics}


def eval_split_metrics(run: Run, state) -> dict:
  """The default validation: loss and accuracy on `dataset.eval_split`, as `eval/*`."""
  metrics, _ = evaluate(run, state, run.config.dataset.eval_split)
  return {f"eval/{k}": v for k, v in metrics.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, run: Run | None = None,
                       validate: Callable = eval_split_metrics,
                       on_epoch_end: Callable[[int, dict], bool] | None = None,
                       hooks: Sequence[Callable[[int], None]] = ()) -> dict:
  """Trains to the configured steps (resuming if possible); writes results.json; returns it.

  run: a Run the caller built (`build` with its own model, steps, ...); default: build(config, workdir).
  validate(run, state) -> {name: value}: the epoch-end metrics (default: eval split loss/accuracy).
  on_epoch_end(step, metrics) -> True to stop early (e.g. patience on a validation metric).
  hooks: called with each step number after its train step was dispatched.
  """
  preemption.install_sigterm_handler()
  run, t_start = run or build(config, workdir), time.time()
  start = int(np.max(jax.device_get(run.state.step)))
  if start >= run.total_steps and os.path.exists(os.path.join(workdir, "results.json")):
    return already_finished(run, workdir)
  if start == 0:
    run.writer.hparams(config, ("eval/accuracy", "eval/loss"))
  state, meter, last = run.dp.replicate(run.state), Meter(run, start), {}
  for step in range(start + 1, run.total_steps + 1):
    batch = next(run.train_iter)
    if step == 1:
      images = batch["image"][0] if run.seeds else batch["image"]
      run.writer.image_grid(0, "train/batch", pipeline.denormalize(images[:16], config.dataset))
    state, metrics = run.dp.train_step(state, run.dp.shard(batch))
    meter.add(metrics)
    if meter.t0 is None:  # Exclude compilation from throughput.
      meter.start(step)
    for hook in hooks:
      hook(step)
    run.state = state
    if step % run.steps_per_epoch == 0 or step == run.total_steps:
      last = end_of_epoch(run, state, step, meter, validate)
      if on_epoch_end and on_epoch_end(step, last):
        logging.info("early stop at step %d", step)
        break
    elif step % config.log_every_steps == 0:
      meter.flush(step, state)
    if preemption.stop_requested() and step < run.total_steps:
      preempt(run, state, step, meter)
  return finish(run, state, last, start, time.time() - t_start, validate, meter.train_seconds)


def preempt(run: Run, state, step: int, meter: Meter) -> None:
  """SIGTERM: the step's metrics, a checkpoint, then Preempted (the CLI exits 143)."""
  if meter.buffer:
    meter.flush(step, state)
  run.ckpt.save(step, run.dp.unreplicate(state), run.train_iter)
  run.writer.flush()  # Before waiting on the write: a failed save still leaves the curves on disk.
  run.ckpt.wait()
  run.writer.close()
  raise preemption.Preempted(f"stopped at step {step}; checkpoint saved in {run.workdir}/checkpoints; "
                             "re-run the same command to resume")


def already_finished(run: Run, workdir: str) -> dict:
  """A re-run of a finished run: says so, leaves results.json (and any report) as they were."""
  logging.info("%s: this run has finished (step %d); results.json is kept as it was.", workdir, run.total_steps)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  run.writer.close()
  run.ckpt.close()
  return {**results, "already_finished": True}


def finish(run: Run, state, last: dict, start: int, wall: float, validate: Callable, train_seconds: float) -> dict:
  """Final validation (if none ran this time), results.json, flush and close."""
  if not last:
    last = population_summary(validate(run, state))
  run.ckpt.wait()
  host = jax.device_get(run.dp.unreplicate(state))
  params = population.model_slice(host.params, 0) if run.seeds else host.params
  steps_run = int(np.max(host.step)) - start
  results = {
      "final": last,
      "steps": int(np.max(host.step)),
      "steps_this_run": steps_run,
      "wall_time_s": wall,
      "train_time_s": train_seconds,  # completed train steps, without compilation, evaluation, checkpoints
      # Input pipeline included: what a step benchmark's img/s is compared with (the first step,
      # whose compilation is left out of train_time_s, is not counted).
      "train_img_per_sec": (steps_run - 1) * run.images_per_step / train_seconds if train_seconds > 0 else None,
      "steps_per_sec": steps_run / wall if steps_run else None,
      "num_params": models.parameter_count(params),
      "trainable_params": freeze.param_counts(params, run.config.freeze)[0],
      "seeds": list(run.seeds) or [run.config.seed],
      "config": run.config.to_dict(),
  }
  if jax.process_index() == 0:
    with open(os.path.join(run.workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2, default=str)
  run.writer.close()
  run.ckpt.close()
  return results
