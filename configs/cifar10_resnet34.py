"""ResNet-34 (CIFAR stem) on CIFAR-10: SGD 0.1, momentum 0.9, wd 5e-4, cosine, crop+flip.

  python -m jax_resnets.main --config=configs/cifar10_resnet34.py --workdir=/tmp/r34
  python -m jax_resnets.main --config=configs/cifar10_resnet34.py:synthetic --workdir=/tmp/r34s

`:synthetic` is a small offline run on the synthetic CIFAR-10 twin (width 16, 2 epochs
of 2048 images) that finishes in well under 3 minutes on 2 CPU cores.
"""
from jax_resnets import config_lib


def get_config(arg: str | None = None):
  config = config_lib.base_config()
  config.dataset.name = "cifar10"
  config.model.depth = 34
  config.model.stem = "cifar"
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  config.batch_size = 128
  config.num_epochs = 60
  if arg == "synthetic":
    config.dataset.synthetic = True
    config.dataset.synthetic_sizes = {"train": 2048, "test": 512}
    config.model.width = 16
    config.batch_size = 64
    config.num_epochs = 2
    config.log_every_steps = 8
  elif arg:
    raise ValueError(f"configs/cifar10_resnet34.py: unknown argument {arg!r} (known: synthetic)")
  return config
