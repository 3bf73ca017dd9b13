"""Prepares a dataset as ArrayRecord in a tfds data dir, from raw files you downloaded.

  python -m jax_resnets.data.prepare cifar10  --data_dir=~/tensorflow_datasets --manual_dir=RAW
  python -m jax_resnets.data.prepare cifar100 --data_dir=... --manual_dir=RAW
  python -m jax_resnets.data.prepare celeb_a  --data_dir=... --manual_dir=RAW [--on_corrupt=error]
  python -m jax_resnets.data.prepare faces    --data_dir=... --manual_dir=RAW

RAW holds the files below, as downloaded: archives are read in place (no unpacking step); an
unpacked folder works too and wins over its archive. A missing or damaged file is named in one
line (exit 2). Nothing is downloaded. Neither TensorFlow nor a network is needed; the training
path reads the result with `tfds.data_source` (grain). A dataset already prepared is kept
(--overwrite prepares it again); a failed prepare leaves the earlier preparation as it was.
"""
import os
import shutil
import sys
import tempfile

from absl import app, flags, logging

from jax_resnets.data.sources import DataError, default_data_dir

_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir to write (default $TFDS_DATA_DIR or ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the raw downloaded files.")
_ON_CORRUPT = flags.DEFINE_enum("on_corrupt", "skip", ["skip", "error"],
                                "Corrupt raw image: skip it (logged with its path and a count) or stop.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                                "Prepare again a dataset already prepared (replaced only on success).")


def files_help() -> str:
  """The files each dataset expects, for --help (imports tfds)."""
  from jax_resnets.data import builders  # pylint: disable=g-import-not-at-top
  return "\n".join(f"  {name}:\n{builders.files_help(cls.downloads())}"
                   for name, cls in builders.builder_classes().items())


def prepare(name: str, data_dir: str | None, manual_dir: str, on_corrupt: str = "skip",
            overwrite: bool = False) -> str:
  """Builds `name` into data_dir/name/VERSION; returns that directory."""
  from jax_resnets.data import builders  # pylint: disable=g-import-not-at-top
  classes = builders.builder_classes()
  if name not in classes:
    raise DataError(f"unknown dataset {name!r} to prepare (known: {', '.join(classes)})")
  data_dir = default_data_dir(data_dir)
  target = classes[name](data_dir=data_dir, file_format="array_record")
  if target.is_prepared() and not overwrite:
    logging.info("%s is already prepared in %s (--overwrite prepares it again)", name, target.data_dir)
    return os.fspath(target.data_dir)
  if not manual_dir or not os.path.isdir(manual_dir):
    raise DataError(f"--manual_dir={manual_dir} is not a folder; {classes[name].MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builders.check_files(manual_dir, classes[name].downloads())
  os.makedirs(data_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".prepare-{name}-", dir=data_dir)
  try:  # Built aside and moved in only when complete: a failure never touches earlier data.
    built = _build(classes[name], staging, manual_dir, on_corrupt)
    _install(built, os.fspath(target.data_dir), staging)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return os.fspath(target.data_dir)


def _build(cls, data_dir: str, manual_dir: str, on_corrupt: str) -> str:
  """Runs the tfds builder into data_dir; returns its version dir. Our DataError stays one line."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = cls(data_dir=data_dir, file_format="array_record")
  builder.on_corrupt = on_corrupt
  config = tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # tfds re-raises generator errors with context; keep ours one line.
    cause = e
    while cause is not None and not isinstance(cause, DataError):
      cause = cause.__cause__
    if cause is not None:
      raise cause from None
    raise
  return os.fspath(builder.data_dir)


def _install(built: str, target: str, staging: str) -> None:
  """Moves the finished version dir to `target`; an earlier preparation there goes only now."""
  os.makedirs(os.path.dirname(target), exist_ok=True)
  if os.path.exists(target):
    os.rename(target, os.path.join(staging, "previous"))
  os.rename(built, target)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m jax_resnets.data.prepare <cifar10|cifar100|celeb_a|faces> "
                         "--data_dir=DIR --manual_dir=RAW")
  try:
    path = prepare(argv[1], _DATA_DIR.value, _MANUAL_DIR.value, _ON_CORRUPT.value, _OVERWRITE.value)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("prepared %s in %s", argv[1], path)
  print(path)


if __name__ == "__main__":
  __doc__ += "\nFiles each dataset expects in RAW:\n" + files_help() + "\n"  # pylint: disable=redefined-builtin
  app.run(main)
