"""Writers of tiny fake raw datasets in the real on-disk formats (data tests and the benchmark)."""
import csv
import os
import pickle
import shutil

import numpy as np
from PIL import Image

from jax_resnets.data import celeba


def _pickle(path: str, obj: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(obj, f)


def cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def write_cifar10(root: str, per_batch: int = 3, seed: int = 0) -> dict:
  """cifar-10-batches-py/data_batch_{1..5}, test_batch; returns split -> (images, labels) in file order."""
  rng, out = np.random.default_rng(seed), {}
  files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
  for split, names in files.items():
    images, labels = [], []
    for name in names:
      x, y = cifar_images(rng, per_batch), rng.integers(0, 10, per_batch)
      _pickle(os.path.join(root, "cifar-10-batches-py", name), {
          b"batch_label": name.encode(), b"labels": [int(v) for v in y],
          b"data": x.transpose(0, 3, 1, 2).reshape(per_batch, -1),
          b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]})
      images.append(x), labels.append(y)
    out[split] = (np.concatenate(images), np.concatenate(labels))
  return out


def write_cifar100(root: str, n: int = 6, seed: int = 1) -> dict:
  """cifar-100-python/{train,test}; returns split -> (images, fine, coarse)."""
  rng, out = np.random.default_rng(seed), {}
  for split in ("train", "test"):
    x, fine, coarse = cifar_images(rng, n), rng.integers(0, 100, n), rng.integers(0, 20, n)
    _pickle(os.path.join(root, "cifar-100-python", split), {
        b"data": x.transpose(0, 3, 1, 2).reshape(n, -1), b"fine_labels": [int(v) for v in fine],
        b"coarse_labels": [int(v) for v in coarse], b"filenames": [b"f.png"] * n})
    out[split] = (x, fine, coarse)
  return out


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  grid = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(grid).resize((w, h), Image.BILINEAR))


def write_jpeg(path: str, image: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path, quality=90)


def write_celeba(root: str, partitions=(0, 0, 0, 1, 2, 2), seed: int = 2, corrupt: int | None = None) -> dict:
  """img_align_celeba/*.jpg (218x178), list_attr_celeba.txt (columns reversed), partitions,
  identity_CelebA.txt; returns {file name: (attributes in ATTRIBUTES order, partition, identity)}."""
  rng, out = np.random.default_rng(seed), {}
  header = list(reversed(celeba.ATTRIBUTES))
  attr_lines, part_lines, id_lines = [], [], []
  for i, part in enumerate(partitions):
    name = f"{i + 1:06d}.jpg"
    path = os.path.join(root, "img_align_celeba", name)
    write_jpeg(path, smooth_image(rng, 218, 178))
    if i == corrupt:
      with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    attrs = rng.integers(0, 2, 40).astype(np.int32)
    values = [2 * attrs[celeba.ATTRIBUTES.index(a)] - 1 for a in header]
    attr_lines.append(f"{name} " + " ".join(f"{v:2d}" for v in values))
    part_lines.append(f"{name} {part}")
    id_lines.append(f"{name} {100 + i}")
    out[name] = (attrs, part, 100 + i)
  with open(os.path.join(root, "list_attr_celeba.txt"), "w") as f:
    f.write(f"{len(partitions)}\n" + " ".join(header) + "\n" + "\n".join(attr_lines) + "\n")
  with open(os.path.join(root, "list_eval_partition.txt"), "w") as f:
    f.write("\n".join(part_lines) + "\n")
  with open(os.path.join(root, "identity_CelebA.txt"), "w") as f:
    f.write("\n".join(id_lines) + "\n")
  return out


def write_faces(root: str, seed: int = 3) -> dict:
  """The HW2P2 tree: classification/{train,dev}/<id>/*.jpg, verification/known/<id>/*.jpg,
  unknown_dev/*.jpg + verification_dev.csv, unknown_test/*.jpg. Returns {split: [(path, identity)]}."""
  rng, out = np.random.default_rng(seed), {}
  ids = ["n000012", "n000007", "n000101"]
  for split, per in (("train", 2), ("dev", 1)):
    out[split] = []
    for identity in ids:
      for j in range(per):
        path = os.path.join(root, "classification", split, identity, f"{j:04d}.jpg")
        write_jpeg(path, smooth_image(rng, 40, 36))
        out[split].append((path, identity))
  out["known"] = []
  for identity in ids[:2]:
    path = os.path.join(root, "verification", "known", identity, "0001.jpg")
    write_jpeg(path, smooth_image(rng, 40, 36))
    out["known"].append((path, identity))
  truth = {"00000.jpg": "n000007", "00001.jpg": "n000000", "00002.jpg": "n000012"}
  out["unknown_dev"] = []
  for name, identity in truth.items():
    path = os.path.join(root, "verification", "unknown_dev", name)
    write_jpeg(path, smooth_image(rng, 40, 36))
    out["unknown_dev"].append((path, identity))
  with open(os.path.join(root, "verification", "verification_dev.csv"), "w", newline="") as f:
    csv.writer(f).writerows([("image", "label"), *truth.items()])
  out["unknown_test"] = []
  for name in ("00000.jpg", "00001.jpg"):
    path = os.path.join(root, "verification", "unknown_test", name)
    write_jpeg(path, smooth_image(rng, 40, 36))
    out["unknown_test"].append((path, ""))
  return out


def pack(root: str, folder: str, archive: str, keep: bool = False) -> str:
  """Packs root/folder into root/archive (.tar.gz or .zip) with `folder/` as the top entry, as
  the real downloads are laid out (cifar-10-python.tar.gz holds cifar-10-batches-py/...,
  img_align_celeba.zip holds img_align_celeba/...); removes the folder unless `keep`."""
  base = os.path.join(root, archive.removesuffix(".tar.gz").removesuffix(".zip"))
  fmt = "gztar" if archive.endswith(".tar.gz") else "zip"
  path = shutil.make_archive(base, fmt, root_dir=root, base_dir=folder)
  if not keep:
    shutil.rmtree(os.path.join(root, folder))
  return path


def truncate(path: str, keep: float = 0.5) -> None:
  """Cuts a file to `keep` of its size, as an interrupted download leaves it."""
  with open(path, "r+b") as f:
    f.truncate(int(os.path.getsize(path) * keep))
