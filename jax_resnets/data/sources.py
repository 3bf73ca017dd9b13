"""Random-access sources: real tfds ArrayRecord data or the synthetic twins.

`spec(ds_cfg)` holds the per-dataset constants (classes, image size, normalisation);
`make_source(ds_cfg, split)` returns an object with `__len__` and `__getitem__`.
"""
import dataclasses
import os

import ml_collections

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
}


def spec(ds_cfg: ml_collections.ConfigDict) -> DatasetSpec:
  if ds_cfg.name not in SPECS:
    raise DataError(f"dataset.name: unknown dataset {ds_cfg.name!r} (known: {', '.join(SPECS)})")
  return SPECS[ds_cfg.name]


def make_source(ds_cfg: ml_collections.ConfigDict, split: str):
  s = spec(ds_cfg)
  if ds_cfg.synthetic and ds_cfg.name == "celeb_a":
    return synthetic_celeba(ds_cfg, split, s)
  if ds_cfg.synthetic:
    sizes = {**s.synthetic_sizes, **dict(ds_cfg.get("synthetic_sizes") or {})}
    if split not in sizes:
      raise DataError(f"dataset split {split!r} does not exist for synthetic {ds_cfg.name} "
                      f"(splits: {', '.join(sizes)})")
    return synthetic.SyntheticClassification(
        num_examples=sizes[split], num_classes=s.num_classes, image_size=s.image_size,
        split=split, seed=ds_cfg.synthetic_seed, coarse_classes=s.coarse_classes)
  return tfds_source(ds_cfg.name, split, ds_cfg.data_dir)


def synthetic_celeba(ds_cfg: ml_collections.ConfigDict, split: str, s: DatasetSpec):
  """The CelebA twin at `dataset.image_size`, labelled by `dataset.label_attribute`."""
  sizes = {**s.synthetic_sizes, **dict(ds_cfg.get("synthetic_sizes") or {})}
  if split not in sizes:
    raise DataError(f"dataset split {split!r} does not exist for synthetic celeb_a (splits: {', '.join(sizes)})")
  try:
    return synthetic.SyntheticCelebA(
        num_examples=sizes[split], image_size=ds_cfg.get("image_size") or s.image_size, split=split,
        seed=ds_cfg.synthetic_seed, label_attribute=ds_cfg.get("label_attribute") or "Blond_Hair")
  except ValueError as e:
    raise DataError(str(e)) from e


def tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` over prepared ArrayRecord files; never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
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
