"""Small configs shared by tests: tiny widths, small images, a handful of steps."""
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
  """Lets `--config=tests/testutils.py` drive the real entry point in subprocess tests."""
  del arg
  return tiny_config()
