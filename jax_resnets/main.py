r"""Entry point: `python -m jax_resnets.main --config=configs/<study>.py[:arg] --workdir=DIR`.

Any config value can be overridden with `--config.key=value`. A bad key or value prints
one line naming it and exits with status 2; a preempted run (SIGTERM) saves a checkpoint
and exits with status 143; re-running the same command resumes.
"""
import functools
import logging as std_logging
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and results.")
config_flags.DEFINE_config_file("config", None, "Study config file (configs/*.py[:arg]).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


# Libraries whose python loggers (jax's `logging.getLogger(__name__)`) are set to WARNING; what
# they log through absl's logger (orbax, grain, flax) is dropped by _QuietLibraries instead.
NOISY_LOGGERS = ("orbax", "grain", "jax", "flax", "tensorstore", "etils", "tensorflow_datasets")
_PROJECT_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep


class _QuietLibraries(std_logging.Filter):
  """Drops library INFO chatter (orbax saves, grain, jax) so the progress lines stay readable.

  `record.levelno` is a python logging level (INFO 20, WARNING 30), not absl's verbosity
  scale (absl's WARNING is -1). The project's own records (files under jax_resnets/) and
  every WARNING+ pass. A library's traceback (orbax logs one per failed background write,
  before the error reaches main) is cut to its last line: main prints the error itself.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    if _from_project(record.pathname, record.name):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    if record.exc_info and record.exc_info[1] is not None:
      error = record.exc_info[1]
      record.msg, record.args = f"{record.getMessage()} [{type(error).__name__}]", ()
      record.exc_info = record.exc_text = None
    return True


@functools.lru_cache(maxsize=1024)
def _from_project(pathname: str, name: str) -> bool:
  return name.startswith("jax_resnets") or os.path.realpath(pathname).startswith(_PROJECT_DIR)


def quiet_libraries() -> None:
  """Installs _QuietLibraries where records are printed: absl's handler and every root handler.

  A filter on the absl *logger* alone misses python-logging records (jax's), which reach the
  root handlers without passing the absl logger's filters.
  """
  quiet = _QuietLibraries()
  logging.get_absl_logger().addFilter(quiet)
  for handler in {logging.get_absl_handler(), *std_logging.getLogger().handlers}:
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
      handler.addFilter(quiet)
  for name in NOISY_LOGGERS:
    logger = std_logging.getLogger(name)
    if logger.getEffectiveLevel() < std_logging.WARNING:
      logger.setLevel(std_logging.WARNING)


def main(argv) -> int:
  quiet_libraries()
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
    t0 = time.time()
    results = studies.run(config, FLAGS.workdir)
  except errors.Preempted as e:
    logging.warning("preempted: %s", e)
    return 143
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (OSError, ValueError) as e:
    if not errors.disk_full(e):
      raise
    print(f"error: disk full (no space left on device) while writing to the workdir "
          f"{os.path.abspath(FLAGS.workdir)}; free space and run the same command again to resume from "
          "the last complete checkpoint", file=sys.stderr)
    return 2
  print(summary_line(results, FLAGS.workdir, time.time() - t0))
  return 0


def summary_line(results: dict, workdir: str, seconds: float) -> str:
  """The run's last console line: where its report is, and its final scalar metrics."""
  final = {k: v for k, v in (results.get("final") or {}).items()
           if isinstance(v, (int, float)) and not k.endswith("_std") and not k.startswith("train/")}
  metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(final.items())[:6])
  report = os.path.join(workdir, "report.md")
  where = report if os.path.exists(report) else os.path.join(workdir, "results.json")
  state = "already finished" if results.get("already_finished") else f"done in {seconds:.0f} s"
  return f"{state}: {where}" + (f" ({metrics})" if metrics else "")


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
