"""jax_resnets: five ResNet research studies in one functional JAX/Flax codebase."""
