"""Two JAX processes on localhost (gloo CPU collectives) train like one process."""
import json
import os

import jax
import numpy as np
import pytest

from jax_resnets.training import checkpointing, loop
from testutils import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_equal_one_process(tmp_path):
  import launch.local as local  # pylint: disable=g-import-not-at-top
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  loop.train_and_evaluate(tiny_config(num_devices=2, num_epochs=1, num_train_steps=1), one)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
  args = ["--config=tests/testutils.py", f"--workdir={two}", "--config.num_devices=0", "--config.num_epochs=1",
          "--config.num_train_steps=1"]
  code = local.launch(2, args, env=env)
  assert code == 0
  with open(os.path.join(two, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(one, "results.json")) as f:
    reference = json.load(f)
  assert results["steps"] == reference["steps"] == 1
  # Same global batch and per-device shapes as one process driving 2 devices: one step is equal
  # up to float rounding. (Over 4 steps the rounding grows to 1e-4 relative on the eval loss;
  # the batches themselves are identical: tests/test_data_pipeline.py.)
  assert results["final"]["eval/loss"] == pytest.approx(reference["final"]["eval/loss"], rel=1e-5)
  # One step: the best checkpoint is the final state. (The latest checkpoint also holds each
  # process's data-iterator position, so it resumes only with the same process count.)
  cfg = tiny_config().checkpoint
  ref = jax.device_get(loop.build(tiny_config(num_devices=2, num_epochs=1, num_train_steps=1), one).state)
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # Restore onto this process's device.
  tree = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
                      {"params": ref.params, "batch_stats": ref.batch_stats})
  (step_a, a), (step_b, b) = checkpointing.restore_best(one, cfg, tree), checkpointing.restore_best(two, cfg, tree)
  assert step_a == step_b == 1
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
