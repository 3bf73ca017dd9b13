"""Errors a user can act on: the entry points print them as one line, no traceback."""
from jax_resnets.config_lib import ConfigError
from jax_resnets.data.sources import DataError
from jax_resnets.training.checkpointing import CheckpointError, ConfigChanged, disk_full
from jax_resnets.training.loop import NonFiniteLoss
from jax_resnets.training.preemption import Preempted
from jax_resnets.workdir import WorkdirError

USER_ERRORS = (ConfigError, DataError, NonFiniteLoss, CheckpointError, WorkdirError, FileNotFoundError)

__all__ = ["CheckpointError", "ConfigChanged", "ConfigError", "DataError", "NonFiniteLoss", "Preempted", "USER_ERRORS",
           "WorkdirError", "disk_full"]
