"""orbax checkpoints: the latest state + data-iterator position, and best-k by a metric.

`DIR/checkpoints/<step>/{state,data}`: periodic, `keep` newest, what a re-run resumes from.
`DIR/best/<step>/state`: params + batch_stats of the best `best_k` evaluations by
`best_metric`, for evaluation and for starting later stages.
"""
import contextlib
import os

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or read; the message says which and what is intact."""


def _state_tree(state) -> dict:
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "rng": state.rng}


class Checkpointer:

  def __init__(self, workdir: str, cfg):
    self.best_metric = cfg.best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, create=True),
        item_names=("state", "data"))
    self.best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.best_k, create=True, best_fn=lambda m: m[self.best_metric],
            best_mode=cfg.best_mode),
        item_names=("state",))

  def save(self, step: int, state, data_iterator) -> None:
    with self._writing(step):
      self.latest.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_state_tree(state)),
          data=grain.checkpoint.CheckpointSave(data_iterator)))

  def save_best(self, step: int, state, metrics: dict) -> None:
    tree = {"params": state.params, "batch_stats": state.batch_stats}
    with self._writing(step):
      self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)), metrics=metrics)

  @contextlib.contextmanager
  def _writing(self, step: int):
    """Turns a failed write (disk full, permissions; also a failed earlier async write) into one line."""
    try:
      yield
    except OSError as e:
      raise CheckpointError(
          f"cannot write the checkpoint of step {step} in {self.latest.directory}: "
          f"{e.strerror or e}; earlier checkpoints are intact: steps {self.latest.all_steps()}") from e

  def restore_latest(self, state, data_iterator):
    """(state, iterator) from the newest readable checkpoint, or the inputs if there is none.

    A damaged newest checkpoint (truncated or corrupted files) is skipped with a warning
    and the previous one is used; if none is readable, CheckpointError says so.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
    for step in steps:
      try:
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
      except Exception as e:  # pylint: disable=broad-except  (tensorstore/orbax/json raise many types)
        logging.warning("Checkpoint of step %d in %s is unreadable (%s: %s); trying the previous one.",
                        step, self.latest.directory, type(e).__name__, str(e).splitlines()[0][:200])
        continue
      logging.info("Resumed from %s at step %d.", self.latest.directory, step)
      return state.replace(**restored["state"]), restored["data"]
    if steps:
      raise CheckpointError(f"no readable checkpoint in {self.latest.directory} (steps {steps} are damaged); "
                            "move that directory away to start afresh")
    return state, data_iterator

  def wait(self) -> None:
    with self._writing(-1):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore_best(workdir: str, cfg, tree) -> tuple[int, dict]:
  """(step, `{"params", "batch_stats"}`) of a run's best checkpoint by `cfg.best_metric`, read-only.

  `tree` gives the structure, shapes and shardings (arrays or ShapeDtypeStructs).
  """
  directory = os.path.join(os.path.abspath(workdir), "best")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no best checkpoint: {directory} does not exist (written by a training run)")
  manager = ocp.CheckpointManager(directory, item_names=("state",), options=ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0, best_fn=lambda m: m[cfg.best_metric],
      best_mode=cfg.best_mode))
  try:
    step = manager.best_step()
    if step is None:
      raise FileNotFoundError(f"no best checkpoint in {directory} (no finished step directory there)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  finally:
    manager.close()
  return step, restored["state"]


def read_latest(workdir: str) -> tuple[dict, int]:
  """(the saved state tree {params, batch_stats, ...}, its step) of `workdir`'s newest checkpoint, read
  as saved (e.g. to start a later stage or a frozen backbone from an earlier run)."""
  path = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(path, item_names=("state", "data")) if os.path.isdir(path) else None
  step = manager.latest_step() if manager else None
  if step is None:
    raise FileNotFoundError(f"{workdir} has no checkpoint (expected {path}/<step>/state from a finished run)")
  try:
    saved = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  finally:
    manager.close()
  return saved, step
