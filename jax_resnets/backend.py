"""The one seam between the model / loop / studies and how ops run: `config.backend`.

  xla   stock flax/XLA: `nn.Conv`, `nn.BatchNorm` (torch's running variance), `nn.max_pool`; under `jax.vmap` a population's
        convs lower to one batched conv. What every non-CPU platform gets.
  cpu   the CPU speed work of `jax_resnets/cpu/` (oneDNN convs and batch norms, one matmul per
        kernel tap on small maps, a scatter-free max-pool backward; the same values, see
        tests/test_perf_equivalence.py) and its process settings (XLA flags).
  auto  `cpu` when the platform is the CPU and the oneDNN bridge builds, else `xla`.

Nothing outside this module imports `jax_resnets.cpu`: the model receives ModuleDefs, and a
population's step is wrapped with `Backend.per_model` before it is vmapped.
"""
import dataclasses
import importlib
import importlib.util
import os
from typing import Any, Callable

import flax.linen as nn

from jax_resnets.models import resnet

NAMES = ("auto", "xla", "cpu")


@dataclasses.dataclass(frozen=True)
class Backend:
  """The ops a model is built from, and how a population's per-model function is traced."""
  name: str
  conv: Any = nn.Conv
  norm: Any = resnet.BatchNorm  # nn.BatchNorm, with torch's running variance
  pool: Callable = resnet.max_pool_3x3_s2
  norm_relu: Callable | None = None  # fn(norm_module, x) -> relu(norm_module(x)) in one op
  per_model: Callable = lambda fn: fn  # wraps a one-model fn before it is vmapped over models

  def model_kwargs(self) -> dict:
    return dict(conv=self.conv, pool=self.pool, batch_norm=self.norm, norm_relu=self.norm_relu)


XLA = Backend("xla")


def platform() -> str:
  """The platform JAX will use, decided without initialising a backend where possible (the CPU
  backend's XLA flags must be set before that): JAX_PLATFORMS, else 'cpu' unless an accelerator
  plugin is installed, in which case JAX is asked."""
  env = os.environ.get("JAX_PLATFORMS", "")
  if env:
    return env.split(",")[0].strip().lower()
  if not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu",
                                                   "jax_rocm60_plugin")):
    return "cpu"
  import jax  # pylint: disable=g-import-not-at-top
  return jax.default_backend()


def resolve_name(name: str) -> str:
  if name not in NAMES:
    raise ValueError(f"backend: unknown backend {name!r} (known: {', '.join(NAMES)})")
  if name != "auto":
    return name
  if platform() != "cpu":
    return "xla"
  return "cpu" if _cpu().available() else "xla"


def resolve(name: str = "xla") -> Backend:
  """`config.backend` -> the Backend whose ops the model is built from."""
  name = resolve_name(name)
  return XLA if name == "xla" else _cpu().backend()


def configure_process(name: str, eval_only: bool = False) -> str:
  """Applies the chosen backend's process-wide settings (the CPU backend's XLA flags; `eval_only`:
  those of a process that only evaluates); call before JAX initialises its backend. Returns the
  resolved name."""
  name = resolve_name(name)
  if name == "cpu":
    _cpu().configure_process(eval_only)
  return name


def _cpu():
  return importlib.import_module("jax_resnets.cpu")
