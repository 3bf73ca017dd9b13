"""Studies: `config.study` names the function that runs one end to end."""
import os

import ml_collections

from jax_resnets import config_lib
from jax_resnets.training import distributed
from jax_resnets.studies import celeba_cie, classification, faces, hierarchy

STUDIES = {
    "classification": classification.run,
    "hierarchy": hierarchy.run,
    "faces": faces.run,
    "celeba_cie": celeba_cie.run,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if config.study not in STUDIES:
    raise config_lib.ConfigError(f"config error: study={config.study!r} (known: {', '.join(STUDIES)})")
  config_lib.validate(config)
  distributed.initialize(config.get("distributed"))
  os.makedirs(workdir, exist_ok=True)
  return STUDIES[config.study](config, workdir)
