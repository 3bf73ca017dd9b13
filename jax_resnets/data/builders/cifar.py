"""CIFAR-10/100 from the official python-pickle batches (never downloads).

manual_dir must hold `cifar-10-batches-py/` (data_batch_1..5, test_batch) or
`cifar-100-python/` (train, test), as extracted from cifar-10-python.tar.gz /
cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html).
Features: image uint8 [32, 32, 3] (PNG), label, id (index in split); CIFAR-100 also
coarse_label (the 20 superclasses).
"""
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

from jax_resnets.data import builders

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def read_batch(path: str) -> dict:
  """One pickled batch -> {'images': uint8 [N, 32, 32, 3], 'labels'/'fine'/'coarse': int}."""
  with open(path, "rb") as f:
    raw = pickle.load(f, encoding="bytes")
  data = np.asarray(raw[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  out = {"images": data}
  for key in (b"labels", b"fine_labels", b"coarse_labels"):
    if key in raw:
      out[key.decode()] = np.asarray(raw[key], np.int64)
  return out


class _Cifar(builders.LocalCode, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared CIFAR builder; subclasses set the raw files and label keys."""
  VERSION = tfds.core.Version(builders.VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Extract the python version of CIFAR from {_URL} into manual_dir."
  FILES: dict = {}  # split -> raw files, relative to manual_dir
  NUM_CLASSES = 10
  LABEL_KEY = "labels"

  @classmethod
  def required_files(cls) -> dict:
    return {f: f"from {_URL}" for files in cls.FILES.values() for f in files}

  def _features(self) -> dict:
    return {"image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            "id": tfds.features.Scalar(np.int32)}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(self._features()),
                                 homepage=_URL, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    builders.check_files(root, self.required_files())
    return {split: self._generate_examples([os.path.join(root, f) for f in files])
            for split, files in self.FILES.items()}

  def _example(self, batch: dict, i: int, index: int) -> dict:
    return {"image": builders.png_bytes(batch["images"][i]), "label": int(batch[self.LABEL_KEY][i]),
            "id": index}

  def _generate_examples(self, paths):
    index = 0
    for path in paths:
      batch = read_batch(path)
      for i in range(len(batch["images"])):
        yield index, self._example(batch, i, index)
        index += 1


class Cifar10(_Cifar, skip_registration=True):
  name = "cifar10"
  FILES = {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
           "test": ["cifar-10-batches-py/test_batch"]}


class Cifar100(_Cifar, skip_registration=True):
  """CIFAR-100: `label` is the fine class (100), `coarse_label` the superclass (20)."""
  name = "cifar100"
  FILES = {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]}
  NUM_CLASSES = 100
  LABEL_KEY = "fine_labels"

  def _features(self) -> dict:
    return {**super()._features(), "coarse_label": tfds.features.ClassLabel(num_classes=20)}

  def _example(self, batch: dict, i: int, index: int) -> dict:
    return {**super()._example(batch, i, index), "coarse_label": int(batch["coarse_labels"][i])}
