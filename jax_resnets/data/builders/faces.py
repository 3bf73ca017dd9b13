"""VGGFace2 subset in the Kaggle 11-785 HW2P2 layout (never downloads).

manual_dir holds the Kaggle data, as downloaded (any *.zip holding this tree, at its top or
in one folder; read straight from the zip) or unpacked:
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
import io
import os

import numpy as np
import tensorflow_datasets as tfds

from jax_resnets.data import builders
from jax_resnets.data.sources import DataError

NO_MATCH = "n000000"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CLASS_SPLITS = {"train": "classification/train", "dev": "classification/dev", "test": "classification/test"}
TREE = builders.Download(CLASS_SPLITS["train"], "*.zip",
                         "the Kaggle 11-785 HW2P2 data as one .zip of any name (its tree at the top or in one "
                         "folder): classification/{train,dev,test}/<identity>/*.jpg, verification/known/<identity>/"
                         "*.jpg, verification/{unknown_dev,unknown_test}/*.jpg, verification_dev.csv",
                         marker=CLASS_SPLITS["train"] + "/")


def is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder) -> list:
  """Image files right in a tree folder (pathlib.Path / zipfile.Path), sorted by name."""
  return [folder / f for f in builders.walk(folder)[""] if is_image(f)]


def sub_folders(tree: dict) -> list[str]:
  """Sorted names of the first-level folders of a `builders.walk` tree."""
  return sorted(d for d in tree if d and "/" not in d)


def list_class_tree(split_dir) -> list[tuple]:
  """[(file, identity)] of split_dir/<identity>/<image>, sorted; empty class -> DataError."""
  tree, out = builders.walk(split_dir), []
  for identity in sub_folders(tree):
    files = [split_dir / identity / f for f in tree[identity] if is_image(f)]
    if not files:
      raise DataError(f"empty class folder (no images): {split_dir / identity}")
    out += [(f, identity) for f in files]
  if not out:
    raise DataError(f"no <class>/<image> files under {split_dir}")
  return out


def read_verification_csv(text: str) -> dict:
  """verification_dev.csv contents -> {image file name: identity}; a header row is skipped."""
  rows = [r for r in csv.reader(io.StringIO(text)) if len(r) >= 2]
  if rows and not is_image(rows[0][0]):
    rows = rows[1:]
  return {os.path.basename(r[0].strip()): r[1].strip() for r in rows}


class Faces(builders.LocalCode, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Face identification / verification splits: train, dev, test, known, unknown_dev, unknown_test."""
  name = "faces"
  VERSION = tfds.core.Version(builders.VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the Kaggle 11-785 HW2P2 .zip (classification/, verification/) in manual_dir."
  on_corrupt = "skip"

  @classmethod
  def downloads(cls) -> list:
    return [TREE]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True, metadata=tfds.core.MetadataDict(),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.Scalar(np.int32), "identity": tfds.features.Text(),
            "file_name": tfds.features.Text(), "id": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    found = builders.check_files(manual_dir, [TREE])[TREE.unpacked]
    root = builders.open_tree(manual_dir if os.path.isdir(found) else found, marker=TREE.marker)
    checker, out = builders.CorruptImages(self.on_corrupt), {}
    train = list_class_tree(root / CLASS_SPLITS["train"])
    classes = sorted({identity for _, identity in train})
    self.info.metadata.update(num_classes=len(classes))
    for split, rel in CLASS_SPLITS.items():
      if (root / rel).is_dir():
        out[split] = self._labelled(split, root / rel, list_class_tree(root / rel), classes, checker)
    known_dir = root / "verification" / "known"
    known = sub_folders(builders.walk(known_dir)) if known_dir.is_dir() else []
    if known:
      out["known"] = self._labelled("known", known_dir, list_class_tree(known_dir), known, checker)
    for split in ("unknown_dev", "unknown_test"):
      split_dir = root / "verification" / split
      if split_dir.is_dir():
        truth = self._dev_truth(root) if split == "unknown_dev" else {}
        items = [(f, truth.get(f.name, NO_MATCH if truth else "")) for f in list_images(split_dir)]
        out[split] = self._labelled(split, split_dir, items, known, checker)
    return out

  def _dev_truth(self, root) -> dict:
    for path in (root / "verification" / "verification_dev.csv", root / "verification_dev.csv"):
      if path.exists():
        return read_verification_csv(builders.read_bytes(path).decode("utf-8-sig"))
    raise DataError(f"verification/unknown_dev exists but verification_dev.csv is missing in {root / 'verification'}")

  def _labelled(self, split, split_dir, items, classes, checker):
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted({c for _, c in items if c and c != NO_MATCH and c not in index})
    if missing:
      raise DataError(f"{split_dir}: identities not among the reference classes: {', '.join(missing[:5])}")
    return self._generate_examples(split, items, index, checker)

  def _generate_examples(self, split, items, index, checker):
    i, skipped = 0, []
    for path, identity in items:
      data = checker.load(path)
      if data is None:
        skipped.append(str(path))
        continue
      yield i, {"image": data, "label": index.get(identity, -1), "identity": identity,
                "file_name": path.name, "id": i}
      i += 1
    if not i and skipped:
      raise builders.all_unreadable(split, skipped)
