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


# Archives as downloaded: (dataset, writer, folder packed, archive name, folder the writer fills).
ARCHIVES = {
    "cifar10": (data_fakes.write_cifar10, "cifar-10-batches-py", "cifar-10-python.tar.gz", ""),
    "cifar100": (data_fakes.write_cifar100, "cifar-100-python", "cifar-100-python.tar.gz", ""),
    "celeb_a": (data_fakes.write_celeba, "img_align_celeba", "img_align_celeba.zip", ""),
    "faces": (data_fakes.write_faces, "hw2p2", "hw2p2.zip", "hw2p2"),  # Kaggle tree in one top folder.
}


def _write_packed(name, raw, keep=False):
  """Writes dataset `name` in raw, packs it as downloaded; returns the archive path."""
  write, folder, archive, sub = ARCHIVES[name]
  write(os.path.join(raw, sub))
  return data_fakes.pack(raw, folder, archive, keep=keep)


def _all_splits(name, data_dir):
  cfg = _cfg(name, data_dir, augment=())
  return {split: _read(cfg, split) for split in sources.prepared_builder(name, str(data_dir)).info.splits}


def _assert_same(got, want):
  assert got.keys() == want.keys()
  for split in want:
    assert len(got[split]) == len(want[split]), split
    for g, w in zip(got[split], want[split]):
      assert g.keys() == w.keys()
      for key in w:
        np.testing.assert_array_equal(g[key], w[key], err_msg=f"{split}/{key}")


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_archive_prepares_like_the_unpacked_folder(tmp_path, name):
  write, folder, _, sub = ARCHIVES[name]
  write(str(tmp_path / "unpacked"))  # (The unpacked Kaggle tree sits right in manual_dir.)
  prepare.prepare(name, str(tmp_path / "tfds_folder"), str(tmp_path / "unpacked"))
  write(str(tmp_path / "raw" / sub))  # Same seed: the same files, packed and the folder removed.
  _write_packed(name, str(tmp_path / "raw"))
  assert not (tmp_path / "raw" / folder).exists()
  prepare.prepare(name, str(tmp_path / "tfds_archive"), str(tmp_path / "raw"))
  _assert_same(_all_splits(name, tmp_path / "tfds_archive"), _all_splits(name, tmp_path / "tfds_folder"))


def test_unpacked_folder_wins_over_its_archive_and_says_so(tmp_path, caplog):
  raw = str(tmp_path / "raw")
  archive = _write_packed("celeb_a", raw, keep=True)
  data_fakes.truncate(archive)  # Never opened: the folder is read.
  with caplog.at_level("INFO"):
    prepare.prepare("celeb_a", str(tmp_path / "tfds"), raw)
  assert any("img_align_celeba" in r.getMessage() and "folder wins" in r.getMessage() for r in caplog.records)
  assert len(_read(_cfg("celeb_a", tmp_path / "tfds"), "train")) == 3


@pytest.mark.parametrize("name", ["cifar10", "celeb_a", "faces"])
def test_truncated_archive_is_one_line_naming_it(tmp_path, name):
  archive = _write_packed(name, str(tmp_path / "raw"))
  data_fakes.truncate(archive)
  with pytest.raises(sources.DataError) as e:
    prepare.prepare(name, str(tmp_path / "tfds"), str(tmp_path / "raw"))
  assert archive in str(e.value) and "damaged" in str(e.value) and "\n" not in str(e.value)


def test_truncated_archive_cli_exit_2_and_no_partial_data(tmp_path):
  archive = _write_packed("cifar100", str(tmp_path / "raw"))
  data_fakes.truncate(archive, keep=0.8)
  proc = subprocess.run([sys.executable, "-m", "jax_resnets.data.prepare", "cifar100",
                         f"--data_dir={tmp_path / 'tfds'}", f"--manual_dir={tmp_path / 'raw'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and archive in last and "damaged" in last and "download it again" in last
  assert not os.listdir(tmp_path / "tfds")  # No half-written dataset or staging dir left.


def test_help_lists_archive_names(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "jax_resnets.data.prepare", "--help"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  text = proc.stdout + proc.stderr
  for name in ("cifar-10-python.tar.gz", "cifar-100-python.tar.gz", "img_align_celeba.zip",
               "list_attr_celeba.txt", "list_eval_partition.txt", "classification/train"):
    assert name in text, name


@pytest.mark.parametrize("packed", [False, True])
def test_split_with_only_corrupt_images_is_one_line(tmp_path, packed):
  raw = str(tmp_path / "raw")
  data_fakes.write_celeba(raw, corrupt=3)  # 000004.jpg is the whole validation split.
  if packed:
    data_fakes.pack(raw, "img_align_celeba", "img_align_celeba.zip")
  with pytest.raises(sources.DataError, match=r"split 'validation': all 1 images are unreadable.*000004\.jpg") as e:
    prepare.prepare("celeb_a", str(tmp_path / "tfds"), raw)
  assert "\n" not in str(e.value)


def test_failed_re_prepare_keeps_the_earlier_preparation(tmp_path):
  data_dir = str(tmp_path / "tfds")
  data_fakes.write_cifar10(str(tmp_path / "good"))
  prepare.prepare("cifar10", data_dir, str(tmp_path / "good"))
  before = _all_splits("cifar10", data_dir)
  archive = _write_packed("cifar10", str(tmp_path / "bad"))
  data_fakes.truncate(archive)
  with pytest.raises(sources.DataError, match="damaged"):
    prepare.prepare("cifar10", data_dir, str(tmp_path / "bad"), overwrite=True)
  _assert_same(_all_splits("cifar10", data_dir), before)
  assert os.listdir(data_dir) == ["cifar10"]  # Staging removed.
  data_fakes.write_cifar10(str(tmp_path / "new"), seed=5)
  data_fakes.pack(str(tmp_path / "new"), "cifar-10-batches-py", "cifar-10-python.tar.gz")
  prepare.prepare("cifar10", data_dir, str(tmp_path / "new"), overwrite=True)
  after = _all_splits("cifar10", data_dir)["test"]
  assert not np.array_equal(after[0]["image"], before["test"][0]["image"])
