"""Small configs shared by tests: tiny widths, small images, a handful of steps; checkpoint helpers."""
from jax_resnets import config_lib


def tiny_config(**overrides):
  """ResNet-18 width 4 on synthetic CIFAR-10 (64 train / 32 test), batch 16, 2 epochs."""
  config = config_lib.base_config()
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 64, "test": 32}
  config.model.update(depth=18, stem="cifar", width=4)
  # A constant rate keeps the compiled train step independent of the run length, so runs of
  # different lengths share one executable through the test session's compilation cache.
  config.optim.update(learning_rate=0.05, schedule="constant")
  config.batch_size = 16
  config.num_epochs = 2
  config.log_every_steps = 2
  config.num_devices = 1  # Multi-device equality has its own tests (test_parallel, test_distributed).
  config.update(overrides)
  return config


def get_config(arg: str | None = None):
  """Lets `--config=tests/testutils.py` (tiny_config) or `--config=tests/testutils.py:cie` (tiny_cie_config)
  drive the real entry point in subprocess tests."""
  return tiny_cie_config() if arg == "cie" else tiny_config()


def tiny_cie_config(arg: str = "smoke"):
  """The CIE study's `:smoke` config shrunk to seconds: 2 models of width 4, 64 train / 24 validation / 80 test images,
  batch 8 (8 steps an epoch: a checkpoint every 8 steps), every level."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("celeba_cie_config", "configs/celeba_cie.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.dataset.synthetic_sizes = {"train": 64, "validation": 24, "test": 80}
  config.model.width = 4
  config.batch_size = 8
  config.num_train_steps = 16
  config.log_every_steps = 4
  config.pruning.update(begin_step=2, end_step=12, frequency=2)
  config.cie.update(num_seeds=2, tie_rule="label_0", calibration_examples=8, taxicab_top_fraction=0.2)  # K=2 can tie
  return config


def saved_state(config, workdir):
  """The state a re-run of `config` in `workdir` resumes from (its newest intact checkpoint), on the host."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax_resnets.training import loop  # pylint: disable=g-import-not-at-top
  run = loop.build(config, workdir)
  state = jax.device_get(run.state)
  run.ckpt.close()
  return state


def assert_same_state(a, b):
  """Bitwise equal step, params, batch stats and optimizer state."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                  jax.tree.leaves((b.params, b.batch_stats, b.opt_state))):
    np.testing.assert_array_equal(x, y)
