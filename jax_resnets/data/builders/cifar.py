"""CIFAR-10/100 from the official python-pickle batches (never downloads).

manual_dir must hold cifar-10-python.tar.gz / cifar-100-python.tar.gz as downloaded from
https://www.cs.toronto.edu/~kriz/cifar.html (batches are read straight from the archive), or
what they unpack to: `cifar-10-batches-py/` (data_batch_1..5, test_batch) / `cifar-100-python/`
(train, test).
Features: image uint8 [32, 32, 3] (PNG), label, id (index in split); CIFAR-100 also
coarse_label (the 20 superclasses).
"""
import contextlib
import os
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from jax_resnets.data import builders
from jax_resnets.data.sources import DataError

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def read_batch(f) -> dict:
  """One pickled batch (a binary file object) -> {'images': uint8 [N, 32, 32, 3], 'labels'/'fine'/'coarse': int}."""
  raw = pickle.load(f, encoding="bytes")
  data = np.asarray(raw[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  out = {"images": data}
  for key in (b"labels", b"fine_labels", b"coarse_labels"):
    if key in raw:
      out[key.decode()] = np.asarray(raw[key], np.int64)
  return out


@contextlib.contextmanager
def open_member(source: str, folder: str, name: str):
  """Binary file `folder/name` of the unpacked folder `source`, or read in place from the
  tar.gz `source`; a damaged or foreign archive is one DataError line."""
  if os.path.isdir(source):
    with open(os.path.join(source, name), "rb") as f:
      yield f
    return
  with builders.damaged(source), tarfile.open(source, "r:gz") as tar:
    try:
      member = tar.extractfile(f"{folder}/{name}")
    except KeyError:
      raise DataError(f"{source} has no {folder}/{name}; is it the python version of CIFAR from {_URL}?") from None
    yield member


class _Cifar(builders.LocalCode, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared CIFAR builder; subclasses set the raw files and label keys."""
  VERSION = tfds.core.Version(builders.VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put the python version of CIFAR from {_URL} (the .tar.gz) into manual_dir."
  DOWNLOAD: builders.Download
  FILES: dict = {}  # split -> raw batch files inside DOWNLOAD.unpacked
  NUM_CLASSES = 10
  LABEL_KEY = "labels"

  @classmethod
  def downloads(cls) -> list:
    return [cls.DOWNLOAD]

  def _features(self) -> dict:
    return {"image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            "id": tfds.features.Scalar(np.int32)}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(self._features()),
                                 homepage=_URL, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    source = builders.check_files(os.fspath(dl_manager.manual_dir), self.downloads())[self.DOWNLOAD.unpacked]
    return {split: self._generate_examples(source, names) for split, names in self.FILES.items()}

  def _example(self, batch: dict, i: int, index: int) -> dict:
    return {"image": builders.png_bytes(batch["images"][i]), "label": int(batch[self.LABEL_KEY][i]),
            "id": index}

  def _generate_examples(self, source, names):
    index = 0
    for name in names:
      with open_member(source, self.DOWNLOAD.unpacked, name) as f:
        batch = read_batch(f)
      for i in range(len(batch["images"])):
        yield index, self._example(batch, i, index)
        index += 1


class Cifar10(_Cifar, skip_registration=True):
  name = "cifar10"
  DOWNLOAD = builders.Download("cifar-10-batches-py", "cifar-10-python.tar.gz", f"CIFAR-10 python version, {_URL}")
  FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class Cifar100(_Cifar, skip_registration=True):
  """CIFAR-100: `label` is the fine class (100), `coarse_label` the superclass (20)."""
  name = "cifar100"
  DOWNLOAD = builders.Download("cifar-100-python", "cifar-100-python.tar.gz", f"CIFAR-100 python version, {_URL}")
  FILES = {"train": ["train"], "test": ["test"]}
  NUM_CLASSES = 100
  LABEL_KEY = "fine_labels"

  def _features(self) -> dict:
    return {**super()._features(), "coarse_label": tfds.features.ClassLabel(num_classes=20)}

  def _example(self, batch: dict, i: int, index: int) -> dict:
    return {**super()._example(batch, i, index), "coarse_label": int(batch["coarse_labels"][i])}
