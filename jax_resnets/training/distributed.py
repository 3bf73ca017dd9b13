"""Multi-process JAX: `jax.distributed.initialize` from the config or the environment.

Precedence: `config.distributed.*`, then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID (set by `launch/local.py`), then SLURM (detected by JAX itself from
SLURM_* variables when the job has more than one task). One process: nothing to do.
CPU processes exchange collectives through gloo; GPUs use NCCL as usual.
"""
import os

import jax
import ml_collections
from absl import logging


def settings(cfg: ml_collections.ConfigDict | None) -> dict | None:
  """The initialize() arguments to use, or None for a single-process run."""
  cfg = cfg or ml_collections.ConfigDict()
  address = cfg.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if address:
    return dict(coordinator_address=address,
                num_processes=int(cfg.get("num_processes") or os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"] if cfg.get("process_id", -1) < 0
                               else cfg.process_id))
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return {}  # JAX's SLURM cluster detection fills in everything.
  return None


def initialize(cfg: ml_collections.ConfigDict | None) -> None:
  """Joins the process group if this is a multi-process run; must precede any JAX work."""
  kwargs = settings(cfg)
  if kwargs is None or jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local / %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
