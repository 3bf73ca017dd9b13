"""Studies: `config.study` names the folder whose `study.run(config, workdir)` runs one end to end."""
import contextlib
import importlib

import jax
import ml_collections

from jax_resnets import config_lib, workdir as workdir_lib
from jax_resnets.training import distributed

STUDIES = ("classification", "hierarchy", "faces", "celeba_cie")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Validates the config and the workdir before any training, and holds the workdir meanwhile."""
  if config.study not in STUDIES:
    raise config_lib.ConfigError(f"config error: study={config.study!r} (known: {', '.join(STUDIES)})")
  config_lib.validate(config)
  distributed.initialize(config.get("distributed"))
  with _hold(workdir):
    return importlib.import_module(f"jax_resnets.studies.{config.study}.study").run(config, workdir)


def _hold(workdir: str) -> contextlib.AbstractContextManager[str]:
  """The lock, taken by process 0 only: all processes of one multi-process run share the workdir."""
  if jax.distributed.is_initialized() and jax.process_index() != 0:
    return contextlib.nullcontext(workdir_lib.prepare(workdir))
  return workdir_lib.lock(workdir)
