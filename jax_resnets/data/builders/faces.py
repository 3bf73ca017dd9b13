"""VGGFace2 subset in the Kaggle 11-785 HW2P2 layout (never downloads).

manual_dir (the extracted Kaggle data) holds:
  classification/{train,dev,test}/<identity>/*.jpg
  verification/known/<identity>/*.jpg
  verification/unknown_dev/*.jpg + verification_dev.csv (image,identity; n000000 = no match)
  verification/unknown_test/*.jpg
classification/train is required; the other splits are written when present. Features:
image (JPEG bytes unchanged), label (classification splits: index of the identity among the
sorted train identities; known/unknown_dev: index among the sorted known identities, -1 for
no match; unknown_test: -1), identity (folder/CSV name), file_name (as in the Kaggle CSVs), id.
"""
import csv
import os

import numpy as np
import tensorflow_datasets as tfds

from jax_resnets.data import builders
from jax_resnets.data.sources import DataError

NO_MATCH = "n000000"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CLASS_SPLITS = {"train": "classification/train", "dev": "classification/dev", "test": "classification/test"}


def is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def list_class_tree(split_dir: str) -> list[tuple[str, str]]:
  """[(relative file path, identity)] of split_dir/<identity>/<image>, sorted; empty class -> DataError."""
  out = []
  for identity in sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d))):
    files = sorted(f for f in os.listdir(os.path.join(split_dir, identity)) if is_image(f))
    if not files:
      raise DataError(f"empty class folder (no images): {os.path.join(split_dir, identity)}")
    out += [(os.path.join(identity, f), identity) for f in files]
  if not out:
    raise DataError(f"no <class>/<image> files under {split_dir}")
  return out


def read_verification_csv(path: str) -> dict:
  """verification_dev.csv -> {image file name: identity}; a header row is skipped."""
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if len(r) >= 2]
  if rows and not is_image(rows[0][0]):
    rows = rows[1:]
  return {os.path.basename(r[0].strip()): r[1].strip() for r in rows}


class Faces(builders.LocalCode, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Face identification / verification splits: train, dev, test, known, unknown_dev, unknown_test."""
  name = "faces"
  VERSION = tfds.core.Version(builders.VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract the Kaggle 11-785 HW2P2 data (classification/, verification/) into manual_dir."
  on_corrupt = "skip"

  @classmethod
  def required_files(cls) -> dict:
    return {CLASS_SPLITS["train"]: "the HW2P2 classification/train/<identity>/*.jpg tree"}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True, metadata=tfds.core.MetadataDict(),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.Scalar(np.int32), "identity": tfds.features.Text(),
            "file_name": tfds.features.Text(), "id": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    builders.check_files(root, self.required_files())
    checker, out = builders.CorruptImages(self.on_corrupt), {}
    train = list_class_tree(os.path.join(root, CLASS_SPLITS["train"]))
    classes = sorted({identity for _, identity in train})
    self.info.metadata.update(num_classes=len(classes))
    for split, rel in CLASS_SPLITS.items():
      if os.path.isdir(os.path.join(root, rel)):
        out[split] = self._labelled(os.path.join(root, rel), list_class_tree(os.path.join(root, rel)), classes, checker)
    known_dir = os.path.join(root, "verification", "known")
    known = sorted(d for d in os.listdir(known_dir)) if os.path.isdir(known_dir) else []
    if known:
      out["known"] = self._labelled(known_dir, list_class_tree(known_dir), known, checker)
    for split in ("unknown_dev", "unknown_test"):
      split_dir = os.path.join(root, "verification", split)
      if os.path.isdir(split_dir):
        truth = self._dev_truth(root) if split == "unknown_dev" else {}
        files = sorted(f for f in os.listdir(split_dir) if is_image(f))
        items = [(f, truth.get(f, NO_MATCH if truth else "")) for f in files]
        out[split] = self._labelled(split_dir, items, known, checker)
    return out

  def _dev_truth(self, root: str) -> dict:
    for path in (os.path.join(root, "verification", "verification_dev.csv"), os.path.join(root, "verification_dev.csv")):
      if os.path.exists(path):
        return read_verification_csv(path)
    raise DataError(f"verification/unknown_dev exists but verification_dev.csv is missing in {root}/verification")

  def _labelled(self, split_dir, items, classes, checker):
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted({c for _, c in items if c and c != NO_MATCH and c not in index})
    if missing:
      raise DataError(f"{split_dir}: identities not among the reference classes: {', '.join(missing[:5])}")
    return self._generate_examples(split_dir, items, index, checker)

  def _generate_examples(self, split_dir, items, index, checker):
    i = 0
    for rel, identity in items:
      path = os.path.join(split_dir, rel)
      if checker.ok(path):
        yield i, {"image": path, "label": index.get(identity, -1), "identity": identity,
                  "file_name": os.path.basename(rel), "id": i}
        i += 1
