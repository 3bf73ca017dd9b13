"""TensorBoard event files via tensorboardX (no TensorFlow in the training path).

clu's metric writers import TensorFlow at import time, so the project writes events
with tensorboardX directly; only process 0 writes.
"""
import errno
import json

from absl import logging
import jax
import ml_collections
import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summary


class Writer:
  """Scalars, image grids, text and hparams into `workdir` (no-op off process 0)."""

  def __init__(self, workdir: str):
    self._tb = SummaryWriter(logdir=workdir) if jax.process_index() == 0 else None

  def scalars(self, step: int, values: dict) -> None:
    if self._tb:
      for k, v in values.items():
        self._tb.add_scalar(k, float(v), step)

  def image_grid(self, step: int, tag: str, images: np.ndarray, columns: int = 8) -> None:
    """uint8 NHWC images -> one grid image."""
    if not self._tb:
      return
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, im in enumerate(images):
      grid[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w] = im
    self._tb.add_image(tag, grid, step, dataformats="HWC")

  def text(self, step: int, tag: str, text: str) -> None:
    if self._tb:
      self._tb.add_text(tag, text, step)

  def hparams(self, config: ml_collections.ConfigDict, metric_tags: tuple[str, ...]) -> None:
    """The config as TensorBoard hparams (flattened keys) and as text."""
    if not self._tb:
      return
    flat = flatten(config.to_dict())
    exp, ssi, sei = hparams_summary(flat, {tag: 0.0 for tag in metric_tags})
    for summary in (exp, ssi, sei):
      self._tb.file_writer.add_summary(summary)
    self.text(0, "config", "```\n" + json.dumps(config.to_dict(), indent=2, default=str) + "\n```")

  def flush(self) -> None:
    """Events to disk. A full disk is logged, not raised: the checkpoint written next names it
    (CheckpointError with the intact steps), which is the error a user needs."""
    if not self._tb:
      return
    try:
      self._tb.flush()
    except OSError as e:
      if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise
      logging.warning("TensorBoard events not flushed: %s", e.strerror)

  def close(self) -> None:
    if self._tb:
      self._tb.close()


def flatten(d: dict, prefix: str = "") -> dict:
  """Nested dict -> {"a.b": scalar-or-str}; sequences become strings."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    elif isinstance(v, (bool, int, float, str)):
      out[key] = v
    else:
      out[key] = str(v)
  return out
