"""Input-pipeline throughput (img/s) over prepared ArrayRecord data, as training reads it.

  python -m benchmarks.data_bench --num_workers=2 --batch_size=128 --num_batches=60

Writes fake raw files in the real formats (`fakes`), prepares them with the real builders
into --workdir, then times `pipeline.train_iterator` (decode + resize + augment +
normalise + batch) after a warm-up: CIFAR-10 32x32 with crop+flip, and CelebA-size
218x178 JPEGs decoded and resized to 64 and 128 with flip. Noise-textured images make
CIFAR PNGs and CelebA JPEGs somewhat larger (slower to decode) than real photos.
"""
import os
import time

import numpy as np
from absl import app, flags

from jax_resnets import config_lib
from jax_resnets.data import pipeline, prepare
from tests import fakes

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jax_resnets_data_bench", "Where the fake data is written.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "grain worker processes.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_BATCHES = flags.DEFINE_integer("num_batches", 60, "Timed batches (after 10 warm-up batches).")
_FAKE = flags.DEFINE_integer("fake_per_batch", 2000, "Fake images per CIFAR batch file (5 train + 1 test) and "
                             "x1 CelebA images, written once per --workdir (small: a quick dry run).")
_CASES = flags.DEFINE_list("cases", ["cifar10_32", "celeb_a_64", "celeb_a_128"], "Which benchmarks.")


def write_celeba_like(root: str, n: int, seed: int = 0) -> None:
  """n CelebA-format 218x178 JPEGs (smooth pattern + noise); all but two in the train partition."""
  rng = np.random.default_rng(seed)
  names = [f"{i + 1:06d}.jpg" for i in range(n)]
  for name in names:
    image = fakes.smooth_image(rng, 218, 178).astype(np.int16) + rng.integers(-12, 13, (218, 178, 3))
    fakes.write_jpeg(os.path.join(root, "img_align_celeba", name), np.clip(image, 0, 255).astype(np.uint8))
  from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
  with open(os.path.join(root, "list_attr_celeba.txt"), "w") as f:
    f.write(f"{n}\n{' '.join(celeba.ATTRIBUTES)}\n")
    f.writelines(f"{name} " + " ".join(["-1"] * 40) + "\n" for name in names)
  with open(os.path.join(root, "list_eval_partition.txt"), "w") as f:
    f.writelines(f"{name} {0 if i >= 2 else i + 1}\n" for i, name in enumerate(names))


def ensure_prepared(name: str, workdir: str) -> str:
  data_dir, raw = os.path.join(workdir, "tfds"), os.path.join(workdir, "raw", name)
  if not os.path.exists(os.path.join(data_dir, name)):
    if name == "cifar10":
      fakes.write_cifar10(raw, per_batch=_FAKE.value)
    else:
      write_celeba_like(raw, _FAKE.value)
    prepare.prepare(name, data_dir, raw)
  return data_dir


def throughput(ds_cfg, batch_size: int, num_batches: int) -> float:
  it = pipeline.train_iterator(ds_cfg, batch_size, seed=0)
  for _ in range(10):
    next(it)
  t0 = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  return num_batches * batch_size / (time.perf_counter() - t0)


def main(argv):
  del argv
  for case in _CASES.value:
    name, size = case.rsplit("_", 1)
    cfg = config_lib.base_config().dataset
    cfg.update(name=name, data_dir=ensure_prepared(name, _WORKDIR.value), num_workers=_NUM_WORKERS.value,
               image_size=int(size), augment=("crop", "flip") if name == "cifar10" else ("flip",))
    ips = throughput(cfg, _BATCH.value, _BATCHES.value)
    print(f"{case}: {ips:.0f} img/s (num_workers={_NUM_WORKERS.value}, batch_size={_BATCH.value}, "
          f"augment={','.join(cfg.augment)})", flush=True)


if __name__ == "__main__":
  app.run(main)
