"""Random-access sources: real tfds ArrayRecord data or the synthetic twins.

`spec(ds_cfg)` holds the per-dataset constants (classes, image size, normalisation);
`make_source(ds_cfg, split)` returns an object with `__len__` and `__getitem__`.
"""
import concurrent.futures
import dataclasses
import functools
import os
import time

import ml_collections
import numpy as np
from absl import logging

from jax_resnets.data import synthetic


class DataError(RuntimeError):
  """A dataset problem the user can fix (missing files, bad split): one clear line."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  num_classes: int
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  synthetic_sizes: dict  # split -> number of synthetic examples
  coarse_classes: int = 0


SPECS = {
    "cifar10": DatasetSpec(10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           {"train": 50000, "test": 10000}),
    "cifar100": DatasetSpec(100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            {"train": 50000, "test": 10000}, coarse_classes=20),
    # CelebA (aligned 178x218, resized to dataset.image_size); label = dataset.label_attribute.
    "celeb_a": DatasetSpec(2, 64, (0.506, 0.426, 0.383), (0.311, 0.290, 0.290),
                           {"train": 162770, "validation": 19867, "test": 19962}),
    # Faces (VGGFace2 subset, HW2P2 layout): classes = identities of classification/train (from
    # the prepared data; synthetic twin: dataset.num_classes or 50). Verification splits too.
    "faces": DatasetSpec(0, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), {
        "train": 2000, "dev": 250, "test": 250, "known": 250, "unknown_dev": 250, "unknown_test": 250}),
    # Any DIR/<split>/<class>/<image> tree (dataset.root); classes = folders of the train split.
    "image_folder": DatasetSpec(0, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), {}),
}
SYNTHETIC_IDENTITIES = 50


def spec(ds_cfg: ml_collections.ConfigDict) -> DatasetSpec:
  if ds_cfg.name not in SPECS:
    raise DataError(f"dataset.name: unknown dataset {ds_cfg.name!r} (known: {', '.join(SPECS)})")
  if ds_cfg.name in ("faces", "image_folder"):
    return dataclasses.replace(SPECS[ds_cfg.name], num_classes=_num_classes(
        ds_cfg.name, bool(ds_cfg.synthetic), ds_cfg.get("num_classes") or 0, ds_cfg.get("root"),
        ds_cfg.train_split, ds_cfg.data_dir))
  return SPECS[ds_cfg.name]


@functools.lru_cache(maxsize=32)
def _num_classes(name: str, is_synthetic: bool, override: int, root, train_split: str, data_dir) -> int:
  """Classes of the datasets whose class count comes from the data itself."""
  if override:
    return override
  if name == "image_folder":
    from jax_resnets.data import image_folder  # pylint: disable=g-import-not-at-top
    return len(image_folder.class_names(root, train_split))
  if is_synthetic:
    return SYNTHETIC_IDENTITIES
  return int(prepared_builder(name, data_dir).info.metadata["num_classes"])


def make_source(ds_cfg: ml_collections.ConfigDict, split: str):
  s = spec(ds_cfg)
  if ds_cfg.name == "image_folder":
    from jax_resnets.data import image_folder  # pylint: disable=g-import-not-at-top
    return image_folder.ImageFolderSource(ds_cfg.get("root"), split, ds_cfg.train_split,
                                          ds_cfg.get("on_corrupt") or "skip")
  if ds_cfg.synthetic and ds_cfg.name == "faces":
    from jax_resnets.data import synthetic_faces  # pylint: disable=g-import-not-at-top
    return synthetic_faces.SyntheticFaces(
        num_examples=_synthetic_size(ds_cfg, split, s), num_identities=s.num_classes,
        image_size=ds_cfg.get("image_size") or s.image_size, split=split, seed=ds_cfg.get("synthetic_seed", 0))
  if not ds_cfg.synthetic and ds_cfg.name == "celeb_a":
    return CelebALabels(tfds_source(ds_cfg.name, split, ds_cfg.data_dir),
                        ds_cfg.get("label_attribute") or "Blond_Hair")
  if ds_cfg.synthetic and ds_cfg.name == "celeb_a":
    return synthetic_celeba(ds_cfg, split, s)
  if ds_cfg.synthetic:
    sizes = {**s.synthetic_sizes, **dict(ds_cfg.get("synthetic_sizes") or {})}
    if split not in sizes:
      raise DataError(f"dataset split {split!r} does not exist for synthetic {ds_cfg.name} "
                      f"(splits: {', '.join(sizes)})")
    return synthetic.SyntheticClassification(
        num_examples=sizes[split], num_classes=s.num_classes, image_size=s.image_size,
        split=split, seed=ds_cfg.get("synthetic_seed", 0), coarse_classes=s.coarse_classes)
  return tfds_source(ds_cfg.name, split, ds_cfg.data_dir)


def synthetic_celeba(ds_cfg: ml_collections.ConfigDict, split: str, s: DatasetSpec):
  """The CelebA twin at `dataset.image_size`, labelled by `dataset.label_attribute`."""
  sizes = {**s.synthetic_sizes, **dict(ds_cfg.get("synthetic_sizes") or {})}
  if split not in sizes:
    raise DataError(f"dataset split {split!r} does not exist for synthetic celeb_a (splits: {', '.join(sizes)})")
  try:
    return synthetic.SyntheticCelebA(
        num_examples=sizes[split], image_size=ds_cfg.get("image_size") or s.image_size, split=split,
        seed=ds_cfg.get("synthetic_seed", 0), label_attribute=ds_cfg.get("label_attribute") or "Blond_Hair")
  except ValueError as e:
    raise DataError(str(e)) from e


def _synthetic_size(ds_cfg: ml_collections.ConfigDict, split: str, s: DatasetSpec) -> int:
  sizes = {**s.synthetic_sizes, **dict(ds_cfg.get("synthetic_sizes") or {})}
  if split not in sizes:
    raise DataError(f"dataset split {split!r} does not exist for synthetic {ds_cfg.name} "
                    f"(splits: {', '.join(sizes)})")
  return sizes[split]


@dataclasses.dataclass(frozen=True)
class CelebALabels:
  """Adds `label` = attributes[label_attribute] to the real CelebA records (schema: celeba.py)."""
  source: object
  label_attribute: str = "Blond_Hair"

  def __post_init__(self):
    from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
    if self.label_attribute not in celeba.ATTRIBUTES:
      raise DataError(f"dataset.label_attribute: unknown CelebA attribute {self.label_attribute!r}")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
    element = self.source[index]
    label = element["attributes"][celeba.ATTRIBUTES.index(self.label_attribute)]
    return {**element, "label": np.int32(label)}


@dataclasses.dataclass(frozen=True)
class TextAsStr:
  """tfds returns Text features as bytes; the synthetic twins and image_folder use str."""
  source: object

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in self.source[index].items()}


CACHE_MODES = ("auto", "memory", "none")
CACHE_LIMIT_BYTES = 2 * 2**30  # `dataset.cache=auto` holds a split whose decoded size is below this.


def _numeric_bytes(element: dict) -> int:
  return sum(np.asarray(v).nbytes for v in element.values() if not isinstance(v, (str, bytes)))


def should_cache(ds_cfg: ml_collections.ConfigDict, source) -> bool:
  """`dataset.cache`: 'memory' always, 'none' never; 'auto' when the decoded split is small.

  auto caches real data (tfds ArrayRecord, image_folder) whose decoded size, estimated as the
  first element's numeric bytes times the split length, is below CACHE_LIMIT_BYTES (2 GiB):
  CIFAR's 50k 32x32 train split is 150 MB, real CelebA's 162k 218x178 images ~19 GB are not.
  Those sources decode a PNG/JPEG on every read, every epoch; held decoded, a read is a slice.
  The synthetic twins are never cached by auto: they decode nothing (an element is computed from
  (seed, split, index) in microseconds), so a cache would only cost memory and start-up time.
  """
  mode = ds_cfg.get("cache") or "auto"
  if mode not in CACHE_MODES:
    raise DataError(f"dataset.cache={mode!r} (known: {', '.join(CACHE_MODES)})")
  if mode != "auto" or len(source) == 0:
    return mode == "memory" and len(source) > 0
  if ds_cfg.synthetic and ds_cfg.name != "image_folder":
    return False
  return _numeric_bytes(source[0]) * len(source) < CACHE_LIMIT_BYTES


def _column(values: list) -> np.ndarray:
  """One field of every element, stacked; strings as a str/bytes array; ragged arrays (image_folder
  images of different sizes) as an object array of arrays."""
  if all(isinstance(v, (str, bytes)) for v in values):
    return np.array(values)
  arrays = [np.asarray(v) for v in values]
  if all(a.shape == arrays[0].shape and a.dtype == arrays[0].dtype for a in arrays):
    column = np.stack(arrays)
  else:
    column = np.empty(len(arrays), object)
    column[:] = arrays
  column.flags.writeable = False  # An in-place edit downstream would silently change the cache.
  return column


@dataclasses.dataclass(frozen=True, eq=False)
class InMemorySource:
  """A split read once: field -> array with one row per element (picklable for grain workers)."""
  columns: dict

  def __len__(self) -> int:
    return len(next(iter(self.columns.values())))

  def __getitem__(self, index: int) -> dict:
    out = {}
    for k, column in self.columns.items():
      value = column[int(index)]
      out[k] = value.item() if column.dtype.kind in "US" else value  # np.str_ -> str, as the source gave.
    return out


def read_into_memory(source, what: str) -> InMemorySource:
  """Every element of `source` decoded once (threads: decoding releases the GIL), then stacked."""
  t0 = time.time()
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    elements = list(pool.map(source.__getitem__, range(len(source))))
  nbytes = sum(_numeric_bytes(e) for e in elements)
  columns = {k: _column([e[k] for e in elements]) for k in elements[0]}
  logging.info("dataset cache: %s held decoded in memory: %d elements, %.1f MiB, read in %.1f s",
               what, len(source), nbytes / 2**20, time.time() - t0)
  return InMemorySource(columns)


def default_data_dir(data_dir: str | None) -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


# Datasets written by our builders (jax_resnets/data/builders): read from data_dir/name/OUR_VERSION.
OUR_BUILDERS = ("cifar10", "cifar100", "celeb_a", "faces")
OUR_VERSION = "1.0.0"


def prepared_builder(name: str, data_dir: str | None):
  """A read-only tfds builder over data_dir/name/OUR_VERSION (no builder class, no download)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = default_data_dir(data_dir)
  path = os.path.join(data_dir, name, OUR_VERSION)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    raise DataError(
        f"dataset {name!r} is not prepared: expected {path}/dataset_info.json; run `python -m "
        f"jax_resnets.data.prepare {name} --data_dir={data_dir} --manual_dir=RAW` "
        f"(or use --config.dataset.synthetic=True)")
  return tfds.builder_from_directory(path)


def tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` over prepared ArrayRecord files; never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if name in OUR_BUILDERS:
    builder = prepared_builder(name, data_dir)
    if split not in builder.info.splits:
      raise DataError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(builder.info.splits)})")
    return TextAsStr(builder.as_data_source(split))
  data_dir = default_data_dir(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for an unknown or missing dataset.
    raise DataError(f"cannot open dataset {name!r} in {data_dir}: {e}") from e
  if not builder.is_prepared():
    raise DataError(
        f"dataset {name!r} is not prepared in {data_dir}; run `python -m jax_resnets.data.prepare "
        f"{name} --data_dir={data_dir}` (or use --config.dataset.synthetic=True)")
  if split not in builder.info.splits:
    raise DataError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(builder.info.splits)})")
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
