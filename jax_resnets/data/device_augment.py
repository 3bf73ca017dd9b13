"""Random crop + horizontal flip on the device, inside the jitted train step (`dataset.augment_on`).

The host then ships resized, un-augmented uint8 images (4x fewer bytes than float32) and the train
step turns them into model-ready float32 with the semantics of the host path: per example, zero
pad by 4 and crop back to the image size (`augment.pad_and_random_crop`), flip horizontally with
probability 1/2 (`augment.random_horizontal_flip`), in the configured order, then /255 and the
dataset's mean/std (`pipeline.Preprocess`). Padding happens on uint8 before normalising, as on
the host, so a padded pixel is 0 (i.e. -mean/std after normalising), not 0 after normalising.

The draws are made for the whole global batch from a key of (seed, step) and each device takes
its own rows, so N devices augment exactly as one device does on the global batch (the sync-BN
guarantee of training/steps.py still holds) and a resumed run draws what an uninterrupted one would.
Pure jax.numpy: works under `jax.vmap` over a population's model axis and under shard_map / pmap.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from jax_resnets.data import sources

SUPPORTED = ("crop", "flip")
PADDING = 4  # augment.pad_and_random_crop's default.
PLACEMENTS = ("auto", "host", "device")


def unsupported(ds_cfg: ml_collections.ConfigDict) -> str:
  """Why the configured augmentation cannot run on the device ('' when it can)."""
  others = [a for a in ds_cfg.augment if a not in SUPPORTED]
  if others:
    return f"augmentation {others[0]!r} is host-only, the device does {' and '.join(SUPPORTED)}"
  if (ds_cfg.get("mixup_alpha") or 0) > 0 or (ds_cfg.get("cutmix_alpha") or 0) > 0:
    return "MixUp/CutMix mix normalised host batches"
  return ""


def placement(ds_cfg: ml_collections.ConfigDict) -> str:
  """'host' or 'device': `dataset.augment_on`, with 'auto' = device when the device can do it all.

  An unknown setting, or an explicit 'device' it cannot do, is a ValueError in the config-error
  format `key=value (expected)` (config_lib.validate reports it as a ConfigError)."""
  setting = ds_cfg.get("augment_on") or "auto"
  if setting not in PLACEMENTS:
    raise ValueError(f"dataset.augment_on={setting!r} (known: {', '.join(PLACEMENTS)})")
  reason = unsupported(ds_cfg)
  if setting == "device" and reason:
    raise ValueError(f"dataset.augment_on='device' ({reason}: use 'host' or 'auto')")
  if setting == "auto":
    return "host" if reason else "device"
  return setting


def crop(images: jax.Array, dy: jax.Array, dx: jax.Array, padding: int = PADDING) -> jax.Array:
  """[B, H, W, C]: example i zero-padded by `padding`, then its H x W window at (dy[i], dx[i])."""
  h, w, c = images.shape[-3:]
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  window = lambda image, y, x: lax.dynamic_slice(image, (y, x, 0), (h, w, c))
  return jax.vmap(window)(padded, dy, dx)


def flip(images: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, H, W, C]: example i mirrored left-right where mask[i]."""
  return jnp.where(mask[:, None, None, None], images[:, :, ::-1], images)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 -> float32 in the host's order of operations (pipeline.Preprocess)."""
  return (images.astype(jnp.float32) / 255.0 - jnp.float32(mean)) / jnp.float32(std)


def _rows(x: jax.Array, shard: tuple) -> jax.Array:
  """This device's rows of a per-global-batch draw (shard = (device index, device count))."""
  index, count = shard
  local = x.shape[0] // count
  return lax.dynamic_slice_in_dim(x, index * local, local)


def augment(images: jax.Array, key: jax.Array, names, padding: int = PADDING, shard=(0, 1)) -> jax.Array:
  """`names` (crop / flip) in order on a uint8 batch; each augmentation draws with its own key
  for all `count * B` rows of the global batch, this device keeping rows index*B .. index*B+B-1."""
  batch = images.shape[0]
  rows = batch * shard[1]
  for i, name in enumerate(names):
    k = jax.random.fold_in(key, i)
    if name == "crop":
      dy, dx = _rows(jax.random.randint(k, (rows, 2), 0, 2 * padding + 1), shard).T
      images = crop(images, dy, dx, padding)
    elif name == "flip":
      images = flip(images, _rows(jax.random.bernoulli(k, 0.5, (rows,)), shard))
    else:
      raise ValueError(f"device augmentation: unknown {name!r} (known: {', '.join(SUPPORTED)})")
  return images


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """The train step's `input_fn`: uint8 batch -> augmented, normalised float32 batch."""
  names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  padding: int = PADDING

  def __call__(self, images: jax.Array, key: jax.Array, shard=(0, 1)) -> jax.Array:
    return normalize(augment(images, key, self.names, self.padding, shard), self.mean, self.std)


def from_config(ds_cfg: ml_collections.ConfigDict) -> DeviceAugment:
  spec = sources.spec(ds_cfg)
  return DeviceAugment(tuple(ds_cfg.augment), spec.mean, spec.std)
