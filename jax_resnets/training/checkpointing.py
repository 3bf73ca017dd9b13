"""orbax checkpoints: the latest state + data-iterator position, and best-k by a metric.

`DIR/checkpoints/<step>/{state,data,integrity,config}`: periodic, `keep` newest, what a re-run
resumes from. `integrity` holds a crc32 per array of `state` (tensorstore reads flipped bytes back
without complaint), `config` the run's flattened config (a re-run under another config is refused
before anything is restored, see `check_config`).
`DIR/best/<step>/state`: params + batch_stats of the best `best_k` evaluations by
`best_metric`, for evaluation and for starting later stages.
"""
import contextlib
import errno
import os
import zlib
from typing import Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jax_resnets import config_lib
from jax_resnets.training import summary

# Config keys the saved arrays' shapes or tree structure depend on: never resumable across a change.
STRUCTURAL_KEYS = ("model", "dataset.name", "dataset.image_size", "dataset.num_classes", "dataset.root",
                   "batch_size", "cie.num_seeds", "head", "hierarchy.grouping", "hierarchy.num_parents",
                   "freeze", "optim.name")
# Config keys that change neither the arrays nor what the training computes: never compared. The CIE
# keys pick and score levels after training (adding a level must not refuse the trained ones).
IGNORED_KEYS = ("log_every_steps", "dataset.num_workers", "dataset.data_dir", "dataset.read_threads", "dataset.cache", "backend",
                "parallel", "num_devices", "checkpoint.keep", "resume_with_changes",
                "distributed.coordinator_address", "distributed.process_id", "cie.sparsities", "cie.quantization",
                "cie.taxicab_top_fraction", "cie.calibration_examples", "cie.fold_batchnorm", "cie.grid_level")


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or read; the message says which and what is intact."""


class ConfigChanged(config_lib.ConfigError):
  """A re-run's config differs from the one its checkpoints were written with."""


class _Damaged(ValueError):
  """A checkpoint read back, but not as written (checksum) or not finite."""


# tensorstore's ValueError: "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']".
_DISK_FULL = ("No space left on device", "Disk quota exceeded", "os_error_code='28'", "os_error_code='122'")


def disk_full(error: BaseException) -> bool:
  """A full disk or quota, from the OS (OSError) or tensorstore/orbax (ValueError with its text).

  Follows __cause__ / __context__: orbax re-raises a failed async write wrapped in other types.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(marker in str(error) for marker in _DISK_FULL):
      return True
    error = error.__cause__ or error.__context__
  return False


def checksums(tree) -> dict[str, int]:
  """crc32 of each array's bytes, by tree path: what `integrity` stores and a restore must match."""
  host = jax.device_get(tree)
  return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
          for path, x in jax.tree_util.tree_flatten_with_path(host)[0]}


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_record(config) -> dict:
  """The config as saved with each checkpoint: flat `{"a.b": value}`, JSON-safe (summary.flatten)."""
  return summary.flatten(config.to_dict())


def _state_tree(state) -> dict:
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "rng": state.rng}


def check_config(saved: dict, config, where: str) -> None:
  """Raises ConfigChanged (one line) if `config` differs from the `saved` record in a structural
  key, or in any compared key without `resume_with_changes`; else warns about what changed."""
  current = config_record(config)
  changed = sorted(k for k in set(saved) | set(current)
                   if saved.get(k, "<absent>") != current.get(k, "<absent>") and not _matches(k, IGNORED_KEYS))
  if not changed:
    return

  def describe(keys):
    return ", ".join(f"{k} ({saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r})" for k in keys)

  structural = [k for k in changed if _matches(k, STRUCTURAL_KEYS)]
  if structural:
    others = [k for k in changed if k not in structural]
    raise ConfigChanged(
        f"config error: the checkpoints in {where} were written with other shape-defining values: "
        f"{describe(structural)}{f' (also changed: {describe(others)})' if others else ''}; this run cannot "
        "resume from them: use the saved values or another --workdir")
  listing = describe(changed)
  if not config.get("resume_with_changes", False):
    raise ConfigChanged(
        f"config error: the checkpoints in {where} were written with other values: {listing}; pass "
        "--config.resume_with_changes=True to resume with the new values, or use another --workdir")
  logging.warning("Resuming %s with changed config (resume_with_changes=True): %s", where, listing)


class Checkpointer:

  def __init__(self, workdir: str, cfg, run_config=None):
    """cfg: `config.checkpoint`; run_config: the run's config, saved with each checkpoint and
    compared on restore (None: neither)."""
    self.best_metric, self.run_config, self.damaged = cfg.best_metric, run_config, set()
    self.latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, create=True),
        item_names=("state", "data", "integrity", "config"))
    self.best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.best_k, create=True, best_fn=lambda m: m[self.best_metric],
            best_mode=cfg.best_mode),
        item_names=("state",))

  def save(self, step: int, state, data_iterator) -> None:
    """Saves the state, iterator position, checksums and config; replaces damaged checkpoints first
    (orbax skips a step not newer than its newest, so they would stay and be skipped on every re-run)."""
    tree = _state_tree(state)
    items = dict(state=ocp.args.StandardSave(tree), data=grain.checkpoint.CheckpointSave(data_iterator),
                 integrity=ocp.args.JsonSave({"crc32": checksums(tree)}))
    if self.run_config is not None:
      items["config"] = ocp.args.JsonSave(config_record(self.run_config))
    with self._writing(step):
      self._drop_damaged()
      self.latest.save(step, args=ocp.args.Composite(**items))

  def _drop_damaged(self) -> None:
    for step in sorted(self.damaged & set(self.latest.all_steps())):
      logging.warning("Deleting the damaged checkpoint of step %d in %s (it is written again).",
                      step, self.latest.directory)
      self.latest.delete(step)
    self.damaged.clear()

  def save_best(self, step: int, state, metrics: dict) -> None:
    tree = {"params": state.params, "batch_stats": state.batch_stats}
    with self._writing(step):
      self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)), metrics=metrics)

  @contextlib.contextmanager
  def _writing(self, step: int):
    """Turns a failed write (disk full, permissions; also a failed earlier async write) into one line."""
    try:
      yield
    except (OSError, ValueError) as e:  # tensorstore reports a full disk as ValueError.
      if not isinstance(e, OSError) and not disk_full(e):
        raise
      reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
      if disk_full(e) and "No space left on device" not in reason:
        reason = f"No space left on device ({reason})"
      raise CheckpointError(
          f"cannot write the checkpoint of step {step} in {self.latest.directory}: "
          f"{reason}; earlier checkpoints are intact: steps {self.latest.all_steps()}") from e

  def restore_latest(self, state, data_iterator, all_finite: Callable | None = None):
    """(state, iterator) from the newest intact checkpoint, or the inputs if there is none.

    The newest checkpoint's config is compared with the run's first (check_config). A damaged
    checkpoint (unreadable, checksum mismatch, or non-finite where `all_finite(tree)` says so) is
    skipped with a warning naming it, the previous one is used, and the next save replaces it;
    if none is intact, CheckpointError says so.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
    config_checked = False
    for step in steps:
      try:
        config_checked = config_checked or self._check_config(step)
        restored = self._restore_verified(step, abstract, data_iterator, all_finite)
      except ConfigChanged:
        self.close()
        raise
      except Exception as e:  # pylint: disable=broad-except  (tensorstore/orbax/json raise many types)
        logging.warning("Checkpoint of step %d in %s is unreadable or damaged (%s: %s); trying the previous one.",
                        step, self.latest.directory, type(e).__name__, _first_line(e))
        self.damaged.add(step)
        continue
      logging.info("Resumed from %s at step %d.", self.latest.directory, step)
      return state.replace(**restored["state"]), restored["data"]
    if steps:
      raise CheckpointError(f"no readable checkpoint in {self.latest.directory} (steps {steps} are damaged); "
                            "move that directory away to start afresh")
    return state, data_iterator

  def _has(self, step: int, item: str) -> bool:
    """Checkpoints written before `integrity` / `config` existed lack them: not checked."""
    return os.path.isdir(os.path.join(str(self.latest.directory), str(step), item))

  def _check_config(self, step: int) -> bool:
    """check_config against `step`'s saved config; False if there is nothing to compare."""
    if self.run_config is None or not self._has(step, "config"):
      return False
    saved = self.latest.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    check_config(saved, self.run_config, str(self.latest.directory))
    return True

  def _restore_verified(self, step: int, abstract, data_iterator, all_finite: Callable | None):
    """Restores `step`; raises _Damaged if its arrays differ from their checksums or are not finite."""
    items = dict(state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(data_iterator))
    if self._has(step, "integrity"):
      items["integrity"] = ocp.args.JsonRestore()
    restored = self.latest.restore(step, args=ocp.args.Composite(**items))
    if "integrity" in items:
      expected, actual = restored["integrity"]["crc32"], checksums(restored["state"])
      bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
      if bad:
        raise _Damaged(f"{len(bad)} arrays differ from their saved checksums, e.g. {bad[0]}")
    if all_finite is not None and not bool(all_finite(restored["state"])):
      raise _Damaged("non-finite values in the saved state (saved so, e.g. by a diverged run)")
    return restored

  def wait(self) -> None:
    with self._writing(-1):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:200] if lines else type(error).__name__


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
