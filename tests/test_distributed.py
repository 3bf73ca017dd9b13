"""Two JAX processes on localhost (gloo CPU collectives) train like one process."""
import json
import os

import jax
import numpy as np

from jax_resnets.training import loop
from testutils import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_equal_one_process(tmp_path):
  import launch.local as local  # pylint: disable=g-import-not-at-top
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  loop.train_and_evaluate(tiny_config(num_devices=1), one)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
  code = local.launch(2, ["--config=tests/testutils.py", f"--workdir={two}"], env=env)
  assert code == 0
  with open(os.path.join(two, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(one, "results.json")) as f:
    reference = json.load(f)
  assert results["steps"] == reference["steps"] == 8
  assert results["final"]["eval/accuracy"] == reference["final"]["eval/accuracy"]
  a = jax.device_get(loop.build(tiny_config(num_devices=1), one).state)
  b = jax.device_get(loop.build(tiny_config(num_devices=1), two).state)
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
