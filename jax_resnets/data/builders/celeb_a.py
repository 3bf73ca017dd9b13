"""CelebA (aligned and cropped) from the hand-downloaded files (never downloads).

manual_dir must hold, from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html:
  img_align_celeba.zip (JPEGs read straight from the zip) or its unpacked img_align_celeba/,
  list_attr_celeba.txt, list_eval_partition.txt
and optionally identity_CelebA.txt. Schema: jax_resnets/data/celeba.py (the pipeline adds
`label` from `dataset.label_attribute` at read time). The JPEG bytes are stored unchanged.
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from jax_resnets.data import builders, celeba
from jax_resnets.data.sources import DataError

_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGES = builders.Download("img_align_celeba", "img_align_celeba.zip", f"Img/img_align_celeba.zip from {_URL}")
FILES = [IMAGES, builders.Download("list_attr_celeba.txt", about="Anno/list_attr_celeba.txt"),
         builders.Download("list_eval_partition.txt", about="Eval/list_eval_partition.txt")]


def read_attributes(path: str) -> dict:
  """list_attr_celeba.txt -> {file name: int32[40] 0/1 in celeba.ATTRIBUTES order}."""
  with open(path) as f:
    lines = f.read().splitlines()
  header = lines[1].split()
  if sorted(header) != sorted(celeba.ATTRIBUTES):
    raise DataError(f"{path}: line 2 must name the 40 CelebA attributes, got {len(header)} names")
  order = [header.index(name) for name in celeba.ATTRIBUTES]
  out = {}
  for line in lines[2:]:
    if line.strip():
      name, *values = line.split()
      out[name] = (np.asarray(values, np.int32)[order] > 0).astype(np.int32)
  return out


def read_pairs(path: str) -> list[tuple[str, int]]:
  """'<file> <int>' lines (partition or identity files), in file order."""
  with open(path) as f:
    return [(p[0], int(p[1])) for p in (line.split() for line in f) if len(p) == 2]


class CelebA(builders.LocalCode, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images, the 40 attributes, identity (-1 if identity_CelebA.txt is absent), official splits."""
  name = "celeb_a"
  VERSION = tfds.core.Version(builders.VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Download from {_URL}: " + "; ".join(f"{d.label()} ({d.about})" for d in FILES)
  on_corrupt = "skip"

  @classmethod
  def downloads(cls) -> list:
    return FILES

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, homepage=_URL, disable_shuffling=True,
                                 features=tfds.features.FeaturesDict({
                                     "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                                     "attributes": tfds.features.Tensor(shape=(40,), dtype=np.int32),
                                     "identity": tfds.features.Scalar(np.int32),
                                     "file_name": tfds.features.Text(),
                                     "id": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    images = builders.open_tree(builders.check_files(root, FILES)[IMAGES.unpacked], at=IMAGES.unpacked + "/")
    attributes = read_attributes(os.path.join(root, "list_attr_celeba.txt"))
    id_path = os.path.join(root, "identity_CelebA.txt")
    identities = dict(read_pairs(id_path)) if os.path.exists(id_path) else {}
    partition = read_pairs(os.path.join(root, "list_eval_partition.txt"))
    checker = builders.CorruptImages(self.on_corrupt)
    files = {split: [f for f, p in partition if p == code] for split, code in celeba.PARTITIONS.items()}
    return {split: self._generate_examples(split, images, names, attributes, identities, checker)
            for split, names in files.items() if names}  # (A subset may lack a partition.)

  def _generate_examples(self, split, images, files, attributes, identities, checker):
    index, skipped = 0, []
    for name in files:
      if name not in attributes:
        raise DataError(f"{name} is in list_eval_partition.txt but not in list_attr_celeba.txt")
      data = checker.load(images / name)
      if data is None:
        skipped.append(str(images / name))
        continue
      yield index, {"image": data, "attributes": attributes[name], "identity": identities.get(name, -1),
                    "file_name": name, "id": index}
      index += 1
    if not index and skipped:
      raise builders.all_unreadable(split, skipped)
