"""Test session setup: 4 forced CPU devices (to test data parallelism) and quiet logs."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

from jax_resnets import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_flags.configure()
