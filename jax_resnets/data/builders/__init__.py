"""tfds builders of ours: read hand-downloaded raw files from a manual dir, write ArrayRecord.

They never download (tfds' own cifar10/celeb_a builders would). Preparation needs neither
TensorFlow nor network: images are encoded with PIL (CIFAR: PNG, lossless) or kept as the
original JPEG bytes (CelebA, faces), so a read decodes exactly the pixels PIL decodes from
the raw file. Records keep the raw files' order (`disable_shuffling`); grain shuffles.

Run through `python -m jax_resnets.data.prepare <name> --data_dir=... --manual_dir=...`.
"""
import io

import numpy as np
from PIL import Image

from jax_resnets.data.sources import DataError

VERSION = "1.0.0"


def check_files(manual_dir: str, expected: dict) -> None:
  """Raises one DataError line naming every expected raw file that is missing."""
  import os  # pylint: disable=g-import-not-at-top
  missing = [f for f in expected if not os.path.exists(os.path.join(manual_dir, f))]
  if missing:
    raise DataError(f"missing raw files in manual_dir={manual_dir}: {', '.join(missing)} "
                    f"({'; '.join(expected[f] for f in missing)})")


def png_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="png")
  return buf.getvalue()


class CorruptImages:
  """Checks that raw image files decode; reports a bad one by path, skips it or stops."""

  def __init__(self, on_corrupt: str = "skip"):
    if on_corrupt not in ("skip", "error"):
      raise DataError(f"on_corrupt={on_corrupt!r} (must be 'skip' or 'error')")
    self.on_corrupt, self.skipped = on_corrupt, []

  def ok(self, path: str) -> bool:
    from absl import logging  # pylint: disable=g-import-not-at-top
    try:
      with Image.open(path) as im:
        im.convert("RGB").load()
      return True
    except (OSError, ValueError, SyntaxError) as e:
      if self.on_corrupt == "error":
        raise DataError(f"corrupt image {path}: {e}") from e
      self.skipped.append(path)
      logging.warning("skipping corrupt image %s (%s); %d skipped so far", path, e, len(self.skipped))
      return False


class _ClassProperty(property):
  def __get__(self, obj, objtype=None):
    return self.fget.__get__(None, objtype)()


def _code_path(cls):
  import inspect  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(inspect.getfile(cls))


class LocalCode:
  """Builder mixin: `code_path` from the class's file. (tfds 4.9.10 otherwise imports
  `importlib_resources`, which it only declares for Python < 3.9, for builders in a package.)"""
  code_path = _ClassProperty(classmethod(_code_path))


def builder_classes() -> dict:
  """dataset name -> builder class (imports tfds)."""
  from jax_resnets.data.builders import celeb_a, cifar, faces  # pylint: disable=g-import-not-at-top
  return {"cifar10": cifar.Cifar10, "cifar100": cifar.Cifar100, "celeb_a": celeb_a.CelebA,
          "faces": faces.Faces}
