"""Model zoo: build a flax module from `config.model`."""
from jax_resnets.models.registry import build_model, parameter_count

__all__ = ["build_model", "parameter_count"]
