"""Supervised classification loop in the style of flax `examples/`: `train_and_evaluate`.

Resumable: a re-run with the same workdir restores the newest checkpoint (state and data
iterator position) and ends with the parameters an uninterrupted run would have.
"""
import dataclasses
import json
import math
import os
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jax_resnets import config_lib, models
from jax_resnets.data import pipeline, sources
from jax_resnets.models import torchvision_import
from jax_resnets.training import checkpointing, freeze, optim, parallel, preemption, steps, summary
from jax_resnets.training.state import TrainState, create_train_state


class NonFiniteLoss(RuntimeError):
  """The loss became NaN/inf; nothing was saved past the last good checkpoint."""


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

  @property
  def local_batch_size(self) -> int:
    return self.config.batch_size // jax.process_count()


def image_shape(ds_cfg) -> tuple[int, int, int]:
  size = ds_cfg.get("image_size") or sources.spec(ds_cfg).image_size
  return (size, size, 3)


def data_parallel(config: ml_collections.ConfigDict) -> parallel.DataParallel:
  """The device mapping of `config.parallel` over `config.num_devices` (0: all), batch checked."""
  devices = jax.devices()[:config.num_devices] if config.num_devices else None
  dp = parallel.DataParallel(config.parallel, devices)
  if config.batch_size % dp.num_devices:
    raise config_lib.ConfigError(
        f"config error: batch_size={config.batch_size} (not divisible by the {dp.num_devices} devices)")
  return dp


def optimizer_plan(config: ml_collections.ConfigDict):
  """(steps_per_epoch, total_steps, schedule, tx) from the training split's size and `config.optim`."""
  steps_per_epoch = pipeline.num_examples(config.dataset, config.dataset.train_split) // config.batch_size
  if steps_per_epoch == 0:
    raise config_lib.ConfigError(f"config error: batch_size={config.batch_size} (larger than the training split)")
  total_steps = config.get("num_train_steps") or config.num_epochs * steps_per_epoch
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps)
  return steps_per_epoch, total_steps, schedule, optim.create_optimizer(config.optim, schedule)


def build(config: ml_collections.ConfigDict, workdir: str, model=None) -> Run:
  """Model, optimizer, data, checkpoints; restores the newest checkpoint if there is one."""
  dp = data_parallel(config).compile_steps(config.label_smoothing)
  model = model or models.build_model(config.model, sources.spec(config.dataset).num_classes,
                                      bn_axis_name=steps.AXIS, backend=config.backend)
  steps_per_epoch, total_steps, schedule, tx = optimizer_plan(config)
  state = create_train_state(jax.random.key(config.seed), model, image_shape(config.dataset), tx)
  state = init_and_freeze(config, state)
  train_iter = pipeline.train_iterator(config.dataset, config.batch_size // jax.process_count(),
                                       config.seed, jax.process_index(), jax.process_count())
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint)
  state, train_iter = ckpt.restore_latest(state, train_iter)
  return Run(config, workdir, dp, state, schedule, train_iter, ckpt, summary.Writer(workdir),
             steps_per_epoch, total_steps)


def init_and_freeze(config: ml_collections.ConfigDict, state: TrainState) -> TrainState:
  """`config.init.checkpoint` weights (if any) and `config.freeze` (default: all trainable)."""
  if config.get("init") and config.init.get("checkpoint"):
    state = torchvision_import.init_from_checkpoint(state, config.init.checkpoint, config.model)
  state = freeze.apply_to_state(state, config.get("freeze", "full"))
  trainable, total = freeze.param_counts(state.params, config.get("freeze", "full"))
  logging.info("Parameters: %d trainable of %d (freeze=%s).", trainable, total, config.get("freeze", "full"))
  return state


def evaluate(run: Run, state, split: str):
  """Mean metrics over the real rows of `split`, and the eval step's per-example outputs (a
  pytree: the logits for the core step) of every example, in order."""
  totals, outs, masks = {}, [], []
  for batch in pipeline.eval_batches(run.config.dataset, split, run.local_batch_size,
                                     jax.process_index(), jax.process_count()):
    sums, out = run.dp.eval_step(state, run.dp.shard(batch))
    for k, v in run.dp.host_metrics(sums).items():
      totals[k] = totals.get(k, 0.0) + v
    outs.append(jax.tree.map(run.dp.host_sharded, out))
    masks.append(batch["mask"])
  outs, masks = jax.tree.map(lambda *xs: np.concatenate(xs), *outs), np.concatenate(masks)
  if jax.process_count() > 1:  # Each process holds one contiguous block of the split.
    outs, masks = multihost_utils.process_allgather((outs, masks), tiled=True)
  count = totals.pop("count")
  metrics = {k: v / count if count else float("nan") for k, v in totals.items()}
  return metrics, jax.tree.map(lambda x: x[masks > 0], outs)


def check_finite(metrics: dict, step: int, run: Run) -> None:
  if not all(math.isfinite(v) for v in metrics.values()):
    run.ckpt.wait()  # The last good checkpoint may still be in flight (async save): land it.
    last = run.ckpt.latest.latest_step()
    raise NonFiniteLoss(f"non-finite training loss at step {step} ({metrics}); stopped without saving, "
                        f"last good checkpoint: step {last} in {run.workdir}/checkpoints")


class Meter:
  """Averages per-step device metrics on the host and measures throughput."""

  def __init__(self, run: Run, start_step: int):
    self.run, self.buffer, self.t0, self.step0 = run, [], None, start_step

  def add(self, metrics) -> None:
    self.buffer.append(metrics)

  def flush(self, step: int) -> dict:
    """Writes averaged train metrics + throughput; prints a progress line."""
    run, now = self.run, time.time()
    values = [run.dp.host_metrics(m) for m in self.buffer]
    self.buffer = []
    out = {f"train/{k}": float(np.mean([v[k] for v in values])) for k in values[0]}
    check_finite(out, step, run)
    out["train/learning_rate"] = float(run.schedule(step)) * optim.plateau_scale(
        run.dp.unreplicate(run.state.opt_state))
    if self.t0 is not None and step > self.step0:
      sps = (step - self.step0) / (now - self.t0)
      out.update({"train/steps_per_sec": sps, "train/img_per_sec": sps * run.config.batch_size})
      eta = (run.total_steps - step) / sps
      logging.info("step %d/%d epoch %.2f loss %.4f acc %.3f | %.2f steps/s %.0f img/s | ETA %dm%02ds",
                   step, run.total_steps, step / run.steps_per_epoch, out["train/loss"],
                   out["train/accuracy"], sps, sps * run.config.batch_size, eta // 60, eta % 60)
    run.writer.scalars(step, out)
    self.t0, self.step0 = now, step
    return out


def end_of_epoch(run: Run, state, step: int, meter: Meter) -> dict:
  """Train summary, evaluation, best-k and latest checkpoints."""
  train = meter.flush(step) if meter.buffer else {}
  metrics, _ = evaluate(run, state, run.config.dataset.eval_split)
  eval_metrics = {f"eval/{k}": v for k, v in metrics.items()}
  run.writer.scalars(step, eval_metrics)
  logging.info("epoch %d eval: %s", step // run.steps_per_epoch,
               " ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()))
  host_state = run.dp.unreplicate(state)
  run.ckpt.save_best(step, host_state, eval_metrics)
  run.ckpt.save(step, host_state, run.train_iter)
  return {**train, **eval_metrics}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Sequence[Callable[[int], None]] = (), run: Run | None = None) -> dict:
  """Trains to `num_epochs` (resuming if possible); writes results.json; returns it."""
  preemption.install_sigterm_handler()
  # `run`: a Run the caller built (own model, train step or initial state); default: build().
  run, t_start = run or build(config, workdir), time.time()
  start = int(run.state.step)
  if start == 0:
    run.writer.hparams(config, ("eval/accuracy", "eval/loss"))
  state, meter, last = run.dp.replicate(run.state), Meter(run, start), {}
  for step in range(start + 1, run.total_steps + 1):
    batch = next(run.train_iter)
    if step == 1:
      run.writer.image_grid(0, "train/batch", pipeline.denormalize(batch["image"][:16], config.dataset))
    state, metrics = run.dp.train_step(state, run.dp.shard(batch))
    meter.add(metrics)
    if meter.t0 is None:  # Exclude compilation from throughput.
      jax.block_until_ready(metrics)
      meter.t0, meter.step0, meter.buffer = time.time(), step, []
    for hook in hooks:
      hook(step)
    run.state = state
    if step % run.steps_per_epoch == 0 or step == run.total_steps:
      last = end_of_epoch(run, state, step, meter)
    elif step % config.log_every_steps == 0:
      meter.flush(step)
    if preemption.stop_requested() and step < run.total_steps:
      if meter.buffer:
        meter.flush(step)
      run.ckpt.save(step, run.dp.unreplicate(state), run.train_iter)
      run.ckpt.wait()
      raise preemption.Preempted(f"stopped at step {step}; checkpoint saved in {workdir}/checkpoints; "
                                 "re-run the same command to resume")
  return finish(run, state, last, start, time.time() - t_start)


def finish(run: Run, state, last: dict, start: int, wall: float) -> dict:
  """Final evaluation (if none ran this time), results.json, flush and close."""
  if not last:
    metrics, _ = evaluate(run, state, run.config.dataset.eval_split)
    last = {f"eval/{k}": v for k, v in metrics.items()}
  run.ckpt.wait()
  steps_run = run.total_steps - start
  results = {
      "final": last,
      "steps": run.total_steps,
      "steps_this_run": steps_run,
      "wall_time_s": wall,
      "steps_per_sec": steps_run / wall if steps_run else None,
      "num_params": models.parameter_count(run.dp.unreplicate(state).params),
      "trainable_params": freeze.param_counts(run.dp.unreplicate(state).params,
                                              run.config.get("freeze", "full"))[0],
      "config": run.config.to_dict(),
  }
  if jax.process_index() == 0:
    with open(os.path.join(run.workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2, default=str)
  run.writer.close()
  run.ckpt.close()
  return results
