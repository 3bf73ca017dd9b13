r"""Entry point: `python -m jax_resnets.main --config=configs/<study>.py[:arg] --workdir=DIR`.

Any config value can be overridden with `--config.key=value`. A bad key or value prints
one line naming it and exits with status 2; a preempted run (SIGTERM) saves a checkpoint
and exits with status 143; re-running the same command resumes.
"""
import sys

from jax_resnets.cpu import xla_flags

xla_flags.configure()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and results.")
config_flags.DEFINE_config_file("config", None, "Study config file (configs/*.py[:arg]).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter of orbax/grain/jax so the progress lines stay readable."""

  def filter(self, record) -> bool:
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax", "flax"))
    return record.levelno >= logging.WARNING or not noisy


def main(argv) -> int:
  logging.get_absl_logger().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jax_resnets import backend, errors, studies
  try:
    config = FLAGS.config
    config.get("study")  # A config file that failed to load raises on first use.
    backend.configure_process(config.get("backend", "auto"))  # Before JAX starts its backend.
  except (OSError, ValueError) as e:  # config_flags defers config-file errors to first use.
    print(f"error: {one_line(e, argv)}", file=sys.stderr)
    return 2
  try:
    studies.run(config, FLAGS.workdir)
  except errors.Preempted as e:
    logging.warning("preempted: %s", e)
    return 143
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def one_line(error: BaseException, argv: list[str]) -> str:
  """The informative part of a flag / config-loading error, on one line."""
  text = str(error).replace("\\n", "\n")
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if isinstance(error, (KeyError, AttributeError)):
    key = lines[0].strip("'\"\\") if lines else "?"
    culprit = [a for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
    where = f" in {culprit[0]}" if culprit else ""
    hint = f" ({' '.join(lines[1:])})" if len(lines) > 1 else ""
    return f"unknown config key {key!r}{where}{hint}"
  return lines[-1] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with any bad flag, key, value or config file reported in one line."""
  try:
    return FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError, OSError) as e:
    print(f"error: {one_line(e, argv)}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
  run()
