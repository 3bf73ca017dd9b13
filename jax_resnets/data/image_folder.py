"""Generic `root/<split>/<class>/<image>` source, read with PIL + numpy (no TensorFlow).

`--config.dataset.name=image_folder --config.dataset.root=DIR`. Classes are the sorted
folder names of the train split (so every split shares one label map). A corrupt image
is logged with its path and a running count, and skipped: the next readable image of the
split takes its place, so batches stay full and shapes fixed (an eval pass then counts that
neighbour twice). With `dataset.on_corrupt='error'` it stops the run naming the file.
"""
import dataclasses
import os

import numpy as np
from absl import logging
from PIL import Image

from jax_resnets.data.sources import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm")
_SKIPPED: set[str] = set()  # Corrupt files skipped in this process.


def _split_dir(root: str | None, split: str) -> str:
  if not root:
    raise DataError("dataset.root is not set (image_folder reads DIR/<split>/<class>/<image>)")
  path = os.path.join(os.path.expanduser(root), split)
  if not os.path.isdir(path):
    raise DataError(f"image_folder split {split!r} is missing: expected folder {path}")
  return path


def class_names(root: str | None, split: str) -> list[str]:
  """Sorted class folder names of root/split."""
  path = _split_dir(root, split)
  names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
  if not names:
    raise DataError(f"image_folder split folder {path} has no <class> sub-folders")
  return names


def list_images(root: str | None, split: str, classes: list[str]) -> list[tuple[str, int]]:
  """[(path, label)] sorted by class then file; an empty class folder is a DataError."""
  path, index = _split_dir(root, split), {c: i for i, c in enumerate(classes)}
  out = []
  for name in class_names(root, split):
    if name not in index:
      raise DataError(f"class folder {os.path.join(path, name)} is not a class of the train split")
    files = sorted(f for f in os.listdir(os.path.join(path, name)) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise DataError(f"empty class folder (no images): {os.path.join(path, name)}")
    out += [(os.path.join(path, name, f), index[name]) for f in files]
  return out


def load_rgb(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


@dataclasses.dataclass
class ImageFolderSource:
  """Random access {'image' uint8 HWC, 'label', 'id', 'file_name'} over root/split/<class>/<image>."""
  root: str | None
  split: str
  train_split: str = "train"
  on_corrupt: str = "skip"

  def __post_init__(self):
    if self.on_corrupt not in ("skip", "error"):
      raise DataError(f"dataset.on_corrupt={self.on_corrupt!r} (must be 'skip' or 'error')")
    self.items = list_images(self.root, self.split, class_names(self.root, self.train_split))

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict:
    for offset in range(len(self.items)):
      i = (int(index) + offset) % len(self.items)
      path, label = self.items[i]
      try:
        image = load_rgb(path)
      except (OSError, ValueError, SyntaxError) as e:
        if self.on_corrupt == "error":
          raise DataError(f"corrupt image {path}: {e}") from e
        _SKIPPED.add(path)
        logging.warning("skipping corrupt image %s (%s); %d skipped so far in this process", path, e, len(_SKIPPED))
        continue
      return {"image": image, "label": np.int32(label), "id": np.int32(i), "file_name": os.path.basename(path)}
    raise DataError(f"no readable image in image_folder split {self.split!r} of {self.root}")
