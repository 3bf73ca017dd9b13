"""Studies: `config.study` names the folder whose `study.run(config, workdir)` runs one end to end."""
import importlib
import os

import ml_collections

from jax_resnets import config_lib
from jax_resnets.training import distributed

STUDIES = ("classification", "hierarchy", "faces", "celeba_cie")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if config.study not in STUDIES:
    raise config_lib.ConfigError(f"config error: study={config.study!r} (known: {', '.join(STUDIES)})")
  config_lib.validate(config)
  distributed.initialize(config.get("distributed"))
  os.makedirs(workdir, exist_ok=True)
  return importlib.import_module(f"jax_resnets.studies.{config.study}.study").run(config, workdir)
