"""Raw files in each real on-disk format -> real preparation code -> grain read-back, exact."""
import os
import subprocess
import sys

import grain
import numpy as np
import pytest
from PIL import Image

from jax_resnets import config_lib
from tests import fakes as data_fakes
from jax_resnets.data import celeba, pipeline, prepare, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(name, data_dir, **kw):
  cfg = config_lib.base_config().dataset
  cfg.name, cfg.data_dir = name, str(data_dir)
  cfg.update(kw)
  return cfg


def _read(cfg, split):
  """All elements of `split` read through a grain MapDataset, in order."""
  return list(grain.MapDataset.source(sources.make_source(cfg, split)).to_iter_dataset())


def _pil(path):
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def test_cifar10_round_trip_pixels_labels_and_pipeline(tmp_path):
  expected = data_fakes.write_cifar10(str(tmp_path / "raw"))
  prepare.prepare("cifar10", str(tmp_path / "tfds"), str(tmp_path / "raw"))
  cfg = _cfg("cifar10", tmp_path / "tfds", augment=())
  for split, (images, labels) in expected.items():
    got = _read(cfg, split)
    assert len(got) == len(images)
    np.testing.assert_array_equal(np.stack([g["image"] for g in got]), images)
    np.testing.assert_array_equal([g["label"] for g in got], labels)
    np.testing.assert_array_equal([g["id"] for g in got], np.arange(len(images)))
  batch = next(iter(pipeline.eval_batches(cfg, "test", 4)))
  spec = sources.spec(cfg)
  want = (expected["test"][0][:3] / 255.0 - np.float32(spec.mean)) / np.float32(spec.std)
  np.testing.assert_allclose(batch["image"][:3], want, atol=1e-5)
  np.testing.assert_array_equal(batch["mask"], [1, 1, 1, 0])


def test_cifar100_fine_and_coarse_labels(tmp_path):
  expected = data_fakes.write_cifar100(str(tmp_path / "raw"))
  prepare.prepare("cifar100", str(tmp_path / "tfds"), str(tmp_path / "raw"))
  got = _read(_cfg("cifar100", tmp_path / "tfds"), "train")
  images, fine, coarse = expected["train"]
  np.testing.assert_array_equal(np.stack([g["image"] for g in got]), images)
  np.testing.assert_array_equal([g["label"] for g in got], fine)
  np.testing.assert_array_equal([g["coarse_label"] for g in got], coarse)


def test_celeba_round_trip_attributes_partitions_and_resize(tmp_path):
  raw = str(tmp_path / "raw")
  expected = data_fakes.write_celeba(raw)
  prepare.prepare("celeb_a", str(tmp_path / "tfds"), raw)
  cfg = _cfg("celeb_a", tmp_path / "tfds", label_attribute="Smiling", image_size=16, augment=("flip",))
  for split, code in celeba.PARTITIONS.items():
    names = [n for n, (_, part, _) in expected.items() if part == code]
    got = _read(cfg, split)
    assert [g["file_name"] for g in got] == names
    for g, name in zip(got, names):
      attrs, _, identity = expected[name]
      np.testing.assert_array_equal(g["image"], _pil(os.path.join(raw, "img_align_celeba", name)))
      np.testing.assert_array_equal(g["attributes"], attrs)
      assert g["label"] == attrs[celeba.ATTRIBUTES.index("Smiling")] and g["identity"] == identity
  batch = next(pipeline.train_iterator(cfg, 2, seed=0))
  assert batch["image"].shape == (2, 16, 16, 3) and batch["attributes"].shape == (2, 40)
  assert "file_name" not in batch


def test_celeba_corrupt_image_skipped_or_fatal(tmp_path):
  raw = str(tmp_path / "raw")
  data_fakes.write_celeba(raw, corrupt=1)
  bad = os.path.join(raw, "img_align_celeba", "000002.jpg")
  with pytest.raises(sources.DataError, match=bad):
    prepare.prepare("celeb_a", str(tmp_path / "tfds_error"), raw, on_corrupt="error")
  prepare.prepare("celeb_a", str(tmp_path / "tfds"), raw, on_corrupt="skip")
  got = _read(_cfg("celeb_a", tmp_path / "tfds"), "train")
  assert [g["file_name"] for g in got] == ["000001.jpg", "000003.jpg"]


def test_faces_round_trip_identities_and_verification_csv(tmp_path):
  raw = str(tmp_path / "raw")
  expected = data_fakes.write_faces(raw)
  prepare.prepare("faces", str(tmp_path / "tfds"), raw)
  cfg = _cfg("faces", tmp_path / "tfds")
  classes = sorted({i for _, i in expected["train"]})
  known = sorted({i for _, i in expected["known"]})
  assert sources.spec(cfg).num_classes == len(classes)
  reference = {"train": classes, "dev": classes, "known": known, "unknown_dev": known, "unknown_test": known}
  for split, items in expected.items():
    got = _read(cfg, split)
    assert len(got) == len(items), split
    for g, (path, identity) in zip(got, sorted(items)):  # Identity folders, then files, sorted.
      np.testing.assert_array_equal(g["image"], _pil(path))
      assert g["file_name"] == os.path.basename(path) and g["identity"] == identity
      want = reference[split].index(identity) if identity in reference[split] else -1
      assert g["label"] == want, (split, path)
  assert [g["label"] for g in _read(cfg, "unknown_dev")] == [0, -1, 1]  # known: n000007, n000012


def test_faces_empty_class_folder_is_a_data_error(tmp_path):
  raw = tmp_path / "raw"
  data_fakes.write_faces(str(raw))
  (raw / "classification" / "train" / "n000999").mkdir()
  with pytest.raises(sources.DataError, match="empty class folder.*n000999"):
    prepare.prepare("faces", str(tmp_path / "tfds"), str(raw))


def test_missing_raw_files_and_unprepared_data_give_one_line(tmp_path):
  (tmp_path / "raw").mkdir()
  proc = subprocess.run([sys.executable, "-m", "jax_resnets.data.prepare", "celeb_a",
                         f"--data_dir={tmp_path / 'tfds'}", f"--manual_dir={tmp_path / 'raw'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert "list_attr_celeba.txt" in last and "list_eval_partition.txt" in last and "img_align_celeba" in last
  with pytest.raises(sources.DataError, match="not prepared.*jax_resnets.data.prepare cifar10"):
    sources.make_source(_cfg("cifar10", tmp_path / "tfds"), "train")
