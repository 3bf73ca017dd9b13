"""grain pipelines: resume from saved state, augmentations, MixUp/CutMix, image_folder, no TF."""
import logging
import os
import subprocess
import sys
import textwrap

import grain
import numpy as np
import pytest
from PIL import Image

from jax_resnets import config_lib
from tests import fakes as data_fakes
from jax_resnets.data import augment, pipeline, prepare, sources, synthetic_faces

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _synthetic_cfg(**kw):
  cfg = config_lib.base_config().dataset
  cfg.synthetic = True
  cfg.synthetic_sizes = {"train": 37, "test": 9}
  cfg.update(kw)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("num_workers,mix", [(0, {}), (2, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0})])
def test_resume_from_state_continues_with_same_batches(num_workers, mix):
  cfg = _synthetic_cfg(num_workers=num_workers, augment=("crop", "flip", "color_jitter"), **mix)
  it = pipeline.train_iterator(cfg, 4, seed=3)
  _take(it, 5)  # Crosses the 9-batch epoch boundary below, too.
  state = it.get_state()
  uninterrupted = _take(it, 7)
  resumed = pipeline.train_iterator(cfg, 4, seed=3)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 7), uninterrupted)
  if mix:
    assert uninterrupted[0]["label"].shape == (4, 10) and uninterrupted[0]["label"].dtype == np.float32
  if not num_workers:  # (Worker processes take seconds to start: check seeds only in-process.)
    first = next(pipeline.train_iterator(cfg, 4, seed=3))["image"]
    assert not np.array_equal(next(pipeline.train_iterator(cfg, 4, seed=4))["image"], first)


def test_read_ahead_threads_do_not_change_the_batches():
  # dataset.read_threads only decides when batches are made (grain ReadOptions), not what they hold.
  on_demand = _take(pipeline.train_iterator(_synthetic_cfg(read_threads=0), 4, seed=5), 6)
  for threads in (1, 3):
    _assert_same_batches(_take(pipeline.train_iterator(_synthetic_cfg(read_threads=threads), 4, seed=5), 6), on_demand)
  assert pipeline.read_options(_synthetic_cfg(read_threads=3)) == grain.ReadOptions(num_threads=3, prefetch_buffer_size=6)


@pytest.mark.parametrize("name", sorted(augment.AUGMENTATIONS))
def test_augmentations_keep_shape_and_are_deterministic_per_seed(name):
  image = data_fakes.smooth_image(np.random.default_rng(0), 24, 20)
  out = augment.AUGMENTATIONS[name](image, np.random.default_rng(5))
  again = augment.AUGMENTATIONS[name](image, np.random.default_rng(5))
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out, again)
  outs = [augment.AUGMENTATIONS[name](image, np.random.default_rng(s)) for s in range(6)]
  assert any(not np.array_equal(o, image) for o in outs), "never changes the image"


def test_flip_is_horizontal_only():
  image = data_fakes.smooth_image(np.random.default_rng(1), 8, 8)
  outs = [augment.random_horizontal_flip(image, np.random.default_rng(s)) for s in range(8)]
  assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1]) for o in outs)
  assert any(np.array_equal(o, image[:, ::-1]) for o in outs)


def test_center_crop_resize_celeba_shape():
  image = data_fakes.smooth_image(np.random.default_rng(2), 218, 178)
  assert augment.center_crop_resize(image, 64).shape == (64, 64, 3)
  np.testing.assert_array_equal(augment.center_crop_resize(image, 178), image[20:198])


def test_mixup_and_cutmix_soft_labels_match_the_mixed_pixels():
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(4, 8, 8, 3)).astype(np.float32), "label": np.array([0, 1, 2, 3])}
  onehot = augment.one_hot(batch["label"], 5)
  mixed = augment.MixBatch(5, mixup_alpha=0.5)(batch, np.random.default_rng(1))
  lam = mixed["label"][0, 0]
  assert mixed["label"].shape == (4, 5) and np.allclose(mixed["label"].sum(-1), 1)
  np.testing.assert_allclose(mixed["label"], lam * onehot + (1 - lam) * onehot[::-1], atol=1e-6)
  np.testing.assert_allclose(mixed["image"], lam * batch["image"] + (1 - lam) * batch["image"][::-1], atol=1e-5)
  cut = augment.MixBatch(5, cutmix_alpha=1.0)(batch, np.random.default_rng(2))
  from_partner = (cut["image"] != batch["image"]).any(-1).mean(axis=(1, 2))
  np.testing.assert_allclose(cut["label"][:, 4][::-1][:1], 0)  # Row 0's partner is row 3: class 3, not 4.
  np.testing.assert_allclose(1 - cut["label"][0, 0], from_partner[0], atol=1e-6)
  off = augment.MixBatch(5, mixup_alpha=0.5, prob=0.0)(batch, np.random.default_rng(3))
  np.testing.assert_array_equal(off["label"], onehot)


def _write_tree(root, spec, seed=0):
  """root/<split>/<class>/<i>.png; returns {split: [(image, label)]} in sorted order."""
  rng, out = np.random.default_rng(seed), {}
  for split, classes in spec.items():
    out[split] = []
    for label, (name, count) in enumerate(classes):
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(count):
        image = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
        Image.fromarray(image).save(os.path.join(root, split, name, f"{i}.png"))
        out[split].append((image, label))
  return out


def test_image_folder_exact_pixels_labels_and_batches(tmp_path):
  expected = _write_tree(tmp_path, {"train": [("cat", 2), ("dog", 3)], "val": [("cat", 1), ("dog", 1)]})
  cfg = config_lib.base_config().dataset
  cfg.update(name="image_folder", root=str(tmp_path), eval_split="val", image_size=8, augment=("flip",))
  assert sources.spec(cfg).num_classes == 2
  for split, items in expected.items():
    src = sources.make_source(cfg, split)
    assert len(src) == len(items)
    for i, (image, label) in enumerate(items):
      np.testing.assert_array_equal(src[i]["image"], image)
      assert src[i]["label"] == label
  batches = list(pipeline.eval_batches(cfg, "val", 4))
  assert batches[0]["image"].shape == (4, 8, 8, 3) and list(batches[0]["label"][:2]) == [0, 1]
  assert next(pipeline.train_iterator(cfg, 2, seed=0))["image"].shape == (2, 8, 8, 3)


def test_image_folder_corrupt_image_skipped_with_path_or_fatal(tmp_path, caplog):
  _write_tree(tmp_path, {"train": [("a", 3)]})
  bad = tmp_path / "train" / "a" / "1.png"
  bad.write_bytes(b"\x89PNG truncated")
  cfg = config_lib.base_config().dataset
  cfg.update(name="image_folder", root=str(tmp_path))
  src = sources.make_source(cfg, "train")
  with caplog.at_level(logging.WARNING):
    element = src[1]
  assert element["file_name"] == "2.png"  # The next readable image takes the corrupt one's place.
  assert str(bad) in caplog.text and "skipped so far" in caplog.text
  cfg.on_corrupt = "error"
  with pytest.raises(sources.DataError, match=f"corrupt image {bad}"):
    sources.make_source(cfg, "train")[1]


def test_image_folder_missing_split_and_empty_class_are_data_errors(tmp_path):
  _write_tree(tmp_path, {"train": [("a", 1)]})
  cfg = config_lib.base_config().dataset
  cfg.update(name="image_folder", root=str(tmp_path))
  with pytest.raises(sources.DataError, match="split 'test' is missing"):
    sources.make_source(cfg, "test")
  (tmp_path / "train" / "b").mkdir()
  with pytest.raises(sources.DataError, match="empty class folder.*train/b"):
    sources.make_source(cfg, "train")


def test_synthetic_faces_identities_carry_signal_and_verification_labels():
  cfg = _synthetic_cfg(name="faces", synthetic_sizes={"train": 200, "unknown_dev": 40}, image_size=16)
  src = sources.make_source(cfg, "train")
  assert sources.spec(cfg).num_classes == sources.SYNTHETIC_IDENTITIES
  x = np.stack([src[i]["image"] for i in range(200)]).reshape(200, -1).astype(np.float32)
  y = np.array([src[i]["label"] for i in range(200)])
  np.testing.assert_array_equal(src[7]["image"], sources.make_source(cfg, "train")[7]["image"])
  d = ((x[:, None] - x[None]) ** 2).mean(-1)
  same, diff = d[(y[:, None] == y[None]) & ~np.eye(200, dtype=bool)], d[y[:, None] != y[None]]
  assert same.mean() < 0.8 * diff.mean()
  dev = sources.make_source(cfg, "unknown_dev")
  labels = [int(dev[i]["label"]) for i in range(40)]
  assert -1 in labels and any(l >= 0 for l in labels)
  assert all((dev[i]["identity"] == synthetic_faces.NO_MATCH) == (labels[i] == -1) for i in range(40))
  assert dev[3]["file_name"] == "00003.jpg"


def test_config_rejects_bad_data_values():
  config = config_lib.base_config()
  config.dataset.on_corrupt = "ignore"
  with pytest.raises(config_lib.ConfigError, match="dataset.on_corrupt"):
    config_lib.validate(config)
  config.dataset.on_corrupt = "skip"
  config.dataset.read_threads = -1
  with pytest.raises(config_lib.ConfigError, match="dataset.read_threads"):
    config_lib.validate(config)
  with pytest.raises(sources.DataError, match="unknown augmentation 'vflip'"):
    pipeline.train_iterator(_synthetic_cfg(augment=("vflip",)), 2, seed=0)


def test_training_read_of_prepared_data_does_not_import_tensorflow(tmp_path):
  data_fakes.write_cifar10(str(tmp_path / "raw"), per_batch=2)
  prepare.prepare("cifar10", str(tmp_path / "tfds"), str(tmp_path / "raw"))
  code = textwrap.dedent(f"""
      import sys
      from jax_resnets import config_lib
      from jax_resnets.data import pipeline
      config = config_lib.base_config()
      config.dataset.data_dir = {str(tmp_path / 'tfds')!r}
      batch = next(pipeline.train_iterator(config.dataset, 4, seed=0))
      n = sum(1 for _ in pipeline.eval_batches(config.dataset, 'test', 4))
      print(batch['image'].shape, n, 'tensorflow' in sys.modules)
      """)
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == "(4, 32, 32, 3) 1 False"


def test_two_processes_together_read_the_global_batches_of_one():
  from testutils import tiny_config  # pylint: disable=g-import-not-at-top
  cfg = tiny_config().dataset
  one = pipeline.train_iterator(cfg, 16, 0, 0, 1)
  halves = [pipeline.train_iterator(cfg, 8, 0, p, 2) for p in range(2)]
  for _ in range(6):  # Crosses the 4-step epoch boundary (reshuffle).
    whole, parts = next(one), [next(h) for h in halves]
    for key in ("image", "label", "id"):
      np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
