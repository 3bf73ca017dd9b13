"""Crop + flip on the device equal the host's; uint8 train batches; the decoded-image cache."""
import dataclasses
import math
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P
from PIL import Image

from jax_resnets import config_lib
from jax_resnets.data import device_augment, pipeline, sources
from jax_resnets.training import loop, steps
from tests import fakes
from testutils import tiny_config

MEAN, STD = sources.SPECS["cifar10"].mean, sources.SPECS["cifar10"].std


class FixedRng:
  """Stands in for np.random.Generator in the host augmentations: a chosen offset and flip."""

  def __init__(self, dy: int, dx: int, flip: bool):
    self.offset, self.flip = np.array([dy, dx]), flip

  def integers(self, low, high, size):
    return self.offset

  def random(self):
    return 0.0 if self.flip else 0.9


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _dataset(**kw):
  cfg = config_lib.base_config().dataset
  cfg.update(synthetic=True, synthetic_sizes={"train": 24, "test": 8}, **kw)
  return cfg


@pytest.mark.parametrize("dy,dx,flip", [(0, 0, False), (8, 8, True), (3, 7, True), (4, 4, False), (8, 1, False)])
def test_fixed_crop_and_flip_equal_the_host_path(dy, dx, flip):
  image = _images(1)[0]
  host = pipeline.Preprocess(MEAN, STD, ("crop", "flip"))({"image": image}, FixedRng(dy, dx, flip))["image"]
  device = device_augment.crop(jnp.asarray(image[None]), jnp.array([dy]), jnp.array([dx]))
  device = device_augment.normalize(device_augment.flip(device, jnp.array([flip])), MEAN, STD)
  np.testing.assert_allclose(np.asarray(device[0]), host, rtol=0, atol=1e-6)


def _coordinates(n: int) -> np.ndarray:
  """n copies of an image whose pixel (y, x) holds (y + 1, x + 1, 0): a crop's offset is readable."""
  yy, xx = np.mgrid[:32, :32]
  image = np.stack([yy + 1, xx + 1, np.zeros_like(yy)], -1).astype(np.uint8)
  return np.broadcast_to(image, (n, 32, 32, 3))


def test_draws_cover_every_offset_and_flip_half_the_time():
  n = 4096
  cropped = np.asarray(device_augment.augment(jnp.asarray(_coordinates(n)), jax.random.key(0), ("crop",)))
  offsets = cropped[:, 4, 4, :2].astype(int) - 1  # Output (4, 4) is padded (dy + 4, dx + 4) = input (dy, dx).
  assert {tuple(o) for o in offsets} == {(y, x) for y in range(9) for x in range(9)}
  flipped = np.asarray(device_augment.augment(jnp.asarray(_coordinates(n)), jax.random.key(1), ("flip",)))
  rate = np.mean(flipped[:, 0, 0, 1] == 32)  # Column 0 holds x = 31 after a flip.
  assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / n)
  assert len({tuple(o) for o in offsets[:16]}) > 4, "examples of one batch share offsets"


@dataclasses.dataclass
class _State:
  key: jax.Array
  step: int


def test_keys_differ_across_steps_seeds_and_from_dropout():
  def keys(seed, step):
    return jax.random.key_data(steps.augment_rng(_State(jax.random.key(seed), jnp.int32(step))))
  assert not np.array_equal(keys(0, 1), keys(0, 2))
  assert not np.array_equal(keys(0, 1), keys(1, 1))
  dropout = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), 0)  # step_rng on device 0.
  assert not np.array_equal(keys(0, 1), jax.random.key_data(dropout))


def test_devices_take_their_rows_of_the_global_draw():
  # Four devices augment exactly as one does on the global batch, and each device's rows differ.
  images, key = jnp.asarray(_coordinates(32)), jax.random.key(3)
  augment = lambda x, shard=(0, 1): device_augment.augment(x, key, ("crop", "flip"), shard=shard)
  one = augment(images)
  mesh = Mesh(np.array(jax.devices()[:4]), (steps.AXIS,))
  four = jax.jit(jax.shard_map(lambda x: augment(x, steps.shard()), mesh=mesh, in_specs=P(steps.AXIS),
                               out_specs=P(steps.AXIS), check_vma=False))(images)
  np.testing.assert_array_equal(np.asarray(four), np.asarray(one))
  per_device = np.asarray(one).reshape(4, 8, -1)
  assert not np.array_equal(per_device[0], per_device[1])


def test_works_under_vmap_over_a_model_axis():
  images = jnp.asarray(np.stack([_images(6, seed=s) for s in range(3)]))
  keys = jax.random.split(jax.random.key(5), 3)
  augment = device_augment.DeviceAugment(("crop", "flip"), MEAN, STD)
  together = jax.jit(jax.vmap(augment))(images, keys)
  assert together.shape == (3, 6, 32, 32, 3) and together.dtype == jnp.float32
  for k in range(3):
    np.testing.assert_allclose(np.asarray(together[k]), np.asarray(augment(images[k], keys[k])), atol=1e-6)


def test_device_mode_yields_uint8_batches_that_normalise_to_the_host_batches():
  device = next(pipeline.train_iterator(_dataset(augment=(), augment_on="device"), 4, seed=0))
  host = next(pipeline.train_iterator(_dataset(augment=(), augment_on="host"), 4, seed=0))
  assert device["image"].dtype == np.uint8 and device["image"].shape == (4, 32, 32, 3)
  np.testing.assert_allclose(np.asarray(device_augment.normalize(device["image"], MEAN, STD)), host["image"],
                             atol=1e-6)
  np.testing.assert_array_equal(pipeline.denormalize(device["image"], _dataset()), device["image"])
  eval_batch = next(iter(pipeline.eval_batches(_dataset(augment_on="device"), "test", 4)))
  assert eval_batch["image"].dtype == np.float32  # Evaluation stays host-normalised.


def test_auto_placement_and_config_errors():
  assert device_augment.placement(_dataset(augment=("crop", "flip"))) == "device"
  assert device_augment.placement(_dataset(augment=("crop", "flip", "color_jitter"))) == "host"
  assert device_augment.placement(_dataset(augment=("crop", "flip"), mixup_alpha=0.2)) == "host"
  assert device_augment.placement(_dataset(augment=("crop", "flip"), augment_on="host")) == "host"
  config = config_lib.base_config()
  config.dataset.update(augment=("crop", "flip", "color_jitter"), augment_on="device")
  with pytest.raises(config_lib.ConfigError, match="config error: dataset.augment_on='device'.*color_jitter"):
    config_lib.validate(config)
  config.dataset.update(augment=("flip",), cutmix_alpha=1.0)
  with pytest.raises(config_lib.ConfigError, match="dataset.augment_on.*MixUp/CutMix"):
    config_lib.validate(config)
  config.dataset.update(cutmix_alpha=0.0, cache="disk")
  with pytest.raises(config_lib.ConfigError, match="config error: dataset.cache='disk'"):
    config_lib.validate(config)


def _image_folder(root) -> None:
  rng = np.random.default_rng(0)
  for split, counts in {"train": (3, 4), "test": (2, 1)}.items():
    for label, count in enumerate(counts):
      os.makedirs(os.path.join(root, split, f"c{label}"))
      for i in range(count):  # Sizes differ: the cache keeps ragged images too.
        image = fakes.smooth_image(rng, 12 + i, 10)
        Image.fromarray(image).save(os.path.join(root, split, f"c{label}", f"{i}.png"))


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_memory_cache_gives_the_same_batches_as_none(tmp_path, augment_on):
  _image_folder(tmp_path)
  cfgs = {c: config_lib.base_config().dataset for c in ("none", "memory")}
  for cache, cfg in cfgs.items():
    cfg.update(name="image_folder", root=str(tmp_path), image_size=8, cache=cache, augment_on=augment_on)
  held = pipeline.split_source(cfgs["memory"], "train")
  assert isinstance(held, sources.InMemorySource) and len(held) == 7
  assert held[4]["file_name"] == sources.make_source(cfgs["none"], "train")[4]["file_name"] == "1.png"
  assert isinstance(pickle.loads(pickle.dumps(held))[0]["file_name"], str)  # grain workers get a copy.
  assert not isinstance(pipeline.split_source(cfgs["none"], "train"), sources.InMemorySource)
  its = [pipeline.train_iterator(cfgs[c], 2, seed=1) for c in ("none", "memory")]
  for _ in range(5):  # Crosses the 3-batch epoch.
    a, b = next(its[0]), next(its[1])
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  evals = [list(pipeline.eval_batches(cfgs[c], "test", 2)) for c in ("none", "memory")]
  for a, b in zip(*evals):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_auto_caches_small_real_splits_not_the_synthetic_twins(tmp_path):
  cfg = _dataset()
  assert not sources.should_cache(cfg, sources.make_source(cfg, "train"))
  assert not isinstance(pipeline.split_source(cfg, "train"), sources.InMemorySource)
  _image_folder(tmp_path)
  folder = config_lib.base_config().dataset
  folder.update(name="image_folder", root=str(tmp_path))
  assert isinstance(pipeline.split_source(folder, "train"), sources.InMemorySource)


def test_tiny_training_run_with_device_augmentation(tmp_path):
  config = tiny_config(num_train_steps=3, log_every_steps=1)
  config.dataset.update(augment=("crop", "flip"), augment_on="device")
  assert isinstance(loop.with_input_fn(config, None).keywords["input_fn"], device_augment.DeviceAugment)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["steps"] == 3
  assert np.isfinite(results["final"]["train/loss"]) and np.isfinite(results["final"]["eval/loss"])
