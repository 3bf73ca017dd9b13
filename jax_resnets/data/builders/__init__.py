"""tfds builders of ours: read hand-downloaded raw files from a manual dir, write ArrayRecord.

They never download (tfds' own cifar10/celeb_a builders would). Preparation needs neither
TensorFlow nor network: images are encoded with PIL (CIFAR: PNG, lossless) or kept as the
original JPEG bytes (CelebA, faces), so a read decodes exactly the pixels PIL decodes from
the raw file. Records keep the raw files' order (`disable_shuffling`); grain shuffles.

Raw files are read as downloaded: members straight from the .tar.gz / .zip (never extracted
to disk), or from the unpacked folder when there is one.

Run through `python -m jax_resnets.data.prepare <name> --data_dir=... --manual_dir=...`.
"""
import contextlib
import dataclasses
import glob
import gzip
import io
import os
import pathlib
import tarfile
import zipfile
import zlib

import numpy as np
from absl import logging
from PIL import Image

from jax_resnets.data.sources import DataError

VERSION = "1.0.0"
# What tarfile / zipfile / gzip raise on a truncated or corrupt archive.
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


@dataclasses.dataclass(frozen=True)
class Download:
  """One hand-downloaded input: the archive as downloaded, or what it unpacks to.

  `unpacked` (a folder or plain file, relative to manual_dir) wins when both exist, so a user
  who already unpacked keeps that. `archive` may be a glob (`*.zip`) when the download's name
  varies; then the first archive holding a `marker` member is used.
  """
  unpacked: str
  archive: str | None = None
  about: str = ""
  marker: str | None = None

  def label(self) -> str:
    return f"{self.archive} (or its unpacked {self.unpacked}/)" if self.archive else self.unpacked

  def locate(self, manual_dir: str) -> str | None:
    """Path of the unpacked file/folder, else of the archive, in manual_dir; None if neither."""
    unpacked = os.path.join(manual_dir, self.unpacked)
    archives = sorted(glob.glob(os.path.join(glob.escape(manual_dir), self.archive))) if self.archive else []
    if os.path.exists(unpacked):
      if archives:
        logging.info("reading the unpacked %s (there is also %s; the folder wins)", unpacked, archives[0])
      return unpacked
    for path in archives:
      if self.marker is None or _zip_root(path, self.marker) is not None:
        logging.info("reading %s straight from the archive %s (no unpacking)", self.unpacked, path)
        return path
    return None


def check_files(manual_dir: str, downloads: list) -> dict:
  """{unpacked name: path found}; one DataError line naming every Download that is missing."""
  found = {d.unpacked: d.locate(manual_dir) for d in downloads}
  missing = [d for d in downloads if found[d.unpacked] is None]
  if missing:
    raise DataError(f"missing raw files in manual_dir={manual_dir}: {', '.join(d.label() for d in missing)} "
                    f"({'; '.join(d.about for d in missing)})")
  return found


def files_help(downloads: list) -> str:
  """One line per Download, for `prepare --help`."""
  return "\n".join(f"    {d.label()}: {d.about}" for d in downloads)


@contextlib.contextmanager
def damaged(archive: str | None):
  """Turns an archive library's error while reading `archive` into one DataError line."""
  try:
    yield
  except ARCHIVE_ERRORS as e:
    if archive is None:
      raise
    raise DataError(f"{archive} is damaged (truncated or corrupt: {e}); download it again") from e


def _zip_root(path: str, marker: str) -> str | None:
  """The folder inside zip `path` that holds `marker` ('' = top level), or None."""
  with damaged(path), zipfile.ZipFile(path) as zf:
    for name in zf.namelist():
      at = name.find(marker)
      if at == 0 or (at > 0 and name[at - 1] == "/"):
        return name[:at]
  return None


def open_tree(path: str, at: str = "", marker: str | None = None):
  """A read-only pathlib-like tree: the folder `path`, or the folder `at` (or the one holding
  `marker`) inside the zip `path`, read in place (pathlib.Path / zipfile.Path)."""
  if os.path.isdir(path):
    return pathlib.Path(path)
  if marker is not None:
    at = _zip_root(path, marker) or ""
  with damaged(path):
    root = zipfile.Path(zipfile.ZipFile(path), at=at)
  if at and not root.is_dir():
    raise DataError(f"{path} has no {at} folder; is it the right download?")
  return root


def read_bytes(path) -> bytes:
  """Bytes of a tree file; a damaged zip member is a DataError naming the zip."""
  with damaged(path.root.filename if isinstance(path, zipfile.Path) else None):
    return path.read_bytes()


def walk(folder) -> dict:
  """{relative sub-folder ('' = folder): sorted file names} of a tree folder, in one pass
  (zipfile.Path.iterdir rescans every name of the zip on each call: too slow for big trees)."""
  if isinstance(folder, pathlib.Path):
    return {("" if d == "." else d): sorted(files)
            for d, files in ((os.path.relpath(top, folder), files) for top, _, files in os.walk(folder))}
  tree, at = {"": []}, folder.at
  for name in folder.root.namelist():  # zipfile.Path lists implied folders too.
    if name.startswith(at) and name != at:
      parent, _, base = name[len(at):].rstrip("/").rpartition("/")
      tree.setdefault(parent, [])
      if name.endswith("/"):
        tree.setdefault(f"{parent}/{base}".lstrip("/"), [])
      else:
        tree[parent].append(base)
  return {d: sorted(files) for d, files in tree.items()}


def all_unreadable(split: str, skipped: list) -> DataError:
  """The error for a split none of whose images decode (tfds would say 'No examples were yielded')."""
  return DataError(f"split {split!r}: all {len(skipped)} images are unreadable (corrupt), e.g. {skipped[0]}; "
                   "nothing was written (re-download the images)")


def png_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="png")
  return buf.getvalue()


class CorruptImages:
  """Checks that raw image files decode; reports a bad one by path, skips it or stops."""

  def __init__(self, on_corrupt: str = "skip"):
    if on_corrupt not in ("skip", "error"):
      raise DataError(f"on_corrupt={on_corrupt!r} (must be 'skip' or 'error')")
    self.on_corrupt, self.skipped = on_corrupt, []

  def load(self, path) -> bytes | None:
    """The encoded bytes of tree file `path` if they decode, else None (skipped) or DataError."""
    try:  # A listed file that is missing counts as unreadable too.
      data = read_bytes(path)
      with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").load()
      return data
    except (OSError, KeyError, ValueError, SyntaxError) as e:
      if self.on_corrupt == "error":
        raise DataError(f"corrupt image {path}: {e}") from e
      self.skipped.append(str(path))
      logging.warning("skipping corrupt image %s (%s); %d skipped so far", path, e, len(self.skipped))
      return None


class _ClassProperty(property):
  def __get__(self, obj, objtype=None):
    return self.fget.__get__(None, objtype)()


def _code_path(cls):
  import inspect  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(inspect.getfile(cls))


class LocalCode:
  """Builder mixin: `code_path` from the class's file. (tfds 4.9.10 otherwise imports
  `importlib_resources`, which it only declares for Python < 3.9, for builders in a package.)"""
  code_path = _ClassProperty(classmethod(_code_path))


def builder_classes() -> dict:
  """dataset name -> builder class (imports tfds)."""
  from jax_resnets.data.builders import celeb_a, cifar, faces  # pylint: disable=g-import-not-at-top
  return {"cifar10": cifar.Cifar10, "cifar100": cifar.Cifar100, "celeb_a": celeb_a.CelebA,
          "faces": faces.Faces}
