"""grain input pipelines over random-access sources (tfds ArrayRecord or synthetic twins).

Train: shuffle (reseeded each epoch) -> repeat -> resize + augment -> batch (drop remainder)
-> this process's share of each global batch -> MixUp/CutMix (if configured) -> optional worker processes. The iterator is a grain `DatasetIterator`,
whose state the checkpoint manager saves, so a resumed run continues at the same example.
With `dataset.augment_on` resolving to 'device' (data/device_augment.py) train batches are resized,
un-augmented uint8 images and the train step crops, flips and normalises them.
Eval: no shuffle, a contiguous block per process padded to full batches with `mask == 0` rows.
A split's source is held decoded in memory when `dataset.cache` says so (sources.should_cache).
"""
import collections
import dataclasses
from typing import Any

import grain
import ml_collections
from absl import flags
import numpy as np

from jax_resnets.data import augment, device_augment, sources


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Element -> model-ready element: centre-crop + resize to `image_size` (0: keep), augment
  (train only), scale, normalise (`normalize=False`: keep uint8, the train step normalises on the
  device). String fields (file names) are dropped: they cannot go to devices; read them from
  `sources.make_source(...)[id]`."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augmentations: tuple[str, ...] = ()
  image_size: int = 0
  normalize: bool = True

  def __call__(self, element: dict, rng: np.random.Generator | None = None) -> dict:
    image = element["image"]
    if self.image_size:
      image = augment.center_crop_resize(image, self.image_size)
    if rng is not None:
      image = augment.apply(self.augmentations, image, rng)
    if self.normalize:
      image = (image.astype(np.float32) / 255.0 - np.float32(self.mean)) / np.float32(self.std)
      image = image.astype(np.float32)
    numeric = {k: v for k, v in element.items() if not isinstance(v, (str, bytes))}
    return {**numeric, "image": image}


def _preprocess(ds_cfg: ml_collections.ConfigDict, train: bool) -> Preprocess:
  spec = sources.spec(ds_cfg)
  unknown = [a for a in ds_cfg.augment if a not in augment.AUGMENTATIONS] if train else []
  if unknown:
    raise sources.DataError(f"dataset.augment: unknown augmentation {unknown[0]!r} "
                            f"(known: {', '.join(augment.AUGMENTATIONS)})")
  size = ds_cfg.get("image_size") or spec.image_size
  if train and device_augment.placement(ds_cfg) == "device":  # Crop, flip, normalise in the train step.
    return Preprocess(spec.mean, spec.std, (), size, normalize=False)
  return Preprocess(spec.mean, spec.std, tuple(ds_cfg.augment) if train else (), size)


_HELD: collections.OrderedDict = collections.OrderedDict()  # (split, config) -> InMemorySource
_HELD_MAX = 4  # Train + eval splits of one run (and a study's extra splits): each evaluation reuses them.


def split_source(ds_cfg: ml_collections.ConfigDict, split: str):
  """`sources.make_source(ds_cfg, split)`, held decoded in memory when `dataset.cache` says so
  (read once per process: every evaluation of the split reuses it)."""
  key = (split, ds_cfg.to_json_best_effort(sort_keys=True))
  if key in _HELD:
    _HELD.move_to_end(key)
    return _HELD[key]
  source = sources.make_source(ds_cfg, split)
  if not sources.should_cache(ds_cfg, source):
    return source
  _HELD[key] = sources.read_into_memory(source, f"{ds_cfg.name}/{split}")
  while len(_HELD) > _HELD_MAX:
    _HELD.popitem(last=False)
  return _HELD[key]


def mix_batch(ds_cfg: ml_collections.ConfigDict) -> augment.MixBatch | None:
  """The configured MixUp/CutMix batch transform, or None when both alphas are 0."""
  mixup, cutmix = ds_cfg.get("mixup_alpha") or 0.0, ds_cfg.get("cutmix_alpha") or 0.0
  if mixup <= 0 and cutmix <= 0:
    return None
  prob = ds_cfg.get("mix_prob")
  return augment.MixBatch(sources.spec(ds_cfg).num_classes, mixup, cutmix, 1.0 if prob is None else prob)


def _multiprocess(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  if num_workers <= 0:
    return ds
  if not flags.FLAGS.is_parsed():  # grain workers read absl flags; allow use outside absl.app.
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=num_workers))


def read_options(ds_cfg: ml_collections.ConfigDict) -> grain.ReadOptions:
  """`dataset.read_threads` threads making batches ahead, two batches each (0: on demand)."""
  threads = ds_cfg.get("read_threads", 1)
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


def train_iterator(ds_cfg: ml_collections.ConfigDict, local_batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1, source=None) -> grain.DatasetIterator:
  """Infinite, checkpointable iterator of training batches for this process (of `dataset.train_split`,
  or of `source`, e.g. the training folds of a cross-validation)."""
  source = split_source(ds_cfg, ds_cfg.train_split) if source is None else source
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds.random_map(_preprocess(ds_cfg, train=True), seed=seed)
  # Global batch b is local batches b*P .. b*P+P-1, one per process: any process count
  # trains on exactly the global batches (and augmentations) of a single process.
  ds = ds.batch(local_batch_size, drop_remainder=True)
  if (mix := mix_batch(ds_cfg)) is not None:  # Before the slice: keyed by the global position.
    ds = ds.random_map(mix, seed=seed + 1)
  ds = ds[process_index::process_count]
  return iter(_multiprocess(ds.to_iter_dataset(read_options(ds_cfg)), ds_cfg.num_workers))


def eval_batches(ds_cfg: ml_collections.ConfigDict, split: str, local_batch_size: int,
                 process_index: int = 0, process_count: int = 1, source=None) -> grain.MapDataset:
  """Finite dataset of full eval batches with `mask` (iterate it once per evaluation) of `split`
  (or of `source`, e.g. a held-out fold).

  Process p reads the contiguous block p of the split, padded with `mask == 0` rows so that
  every process runs the same number of batches and the blocks concatenate in order.
  """
  source = split_source(ds_cfg, split) if source is None else source
  per_process = -(-len(source) // process_count)
  start = min(len(source), process_index * per_process)
  stop = min(len(source), start + per_process)
  length = -(-per_process // local_batch_size) * local_batch_size
  ds = grain.MapDataset.source(MaskedShard(source, start, stop, length))
  return ds.map(_preprocess(ds_cfg, train=False)).batch(local_batch_size, drop_remainder=True)


@dataclasses.dataclass(frozen=True)
class MaskedShard:
  """Rows [start, stop) of `source` with `mask` 1, then copies of row 0 with `mask` 0 up to `length`."""
  source: Any
  start: int
  stop: int
  length: int

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    real = self.start + index < self.stop
    element = self.source[self.start + index if real else 0]
    return {**element, "mask": np.float32(real)}


def num_examples(ds_cfg: ml_collections.ConfigDict, split: str) -> int:
  return len(sources.make_source(ds_cfg, split))


def denormalize(images: Any, ds_cfg: ml_collections.ConfigDict) -> np.ndarray:
  """Model-ready float images -> uint8, for image summaries; uint8 batches (augment_on=device:
  not yet augmented) are returned as they are."""
  if np.asarray(images).dtype == np.uint8:
    return np.asarray(images)
  spec = sources.spec(ds_cfg)
  x = (np.asarray(images) * np.float32(spec.std) + np.float32(spec.mean)) * 255.0
  return np.clip(x, 0, 255).astype(np.uint8)
