r"""ResNet-152 transfer grid on CIFAR-100: {ImageNet-pretrained, random} x {head_only, final_block, full}.

  python launch/grid.py --config=configs/cifar100_transfer_grid.py --workdir=/tmp/tgrid
  python launch/grid.py --config=configs/cifar100_transfer_grid.py --workdir=/tmp/tgrid --slurm
  python -m jax_resnets.compare /tmp/tgrid/*/ --out=/tmp/tgrid/report   # (grid.py runs it too)

The pretrained cells need torchvision's ImageNet weights, `resnet152-394f9c45.pth`
(IMAGENET1K_V1; or pass `resnet152-f82ba261.pth`, V2, with --config.init.checkpoint), in
`$JAX_RESNETS_WEIGHTS` (default ~/.cache/jax_resnets/weights) or torch hub's cache; a run
without the file stops with one line saying so (nothing is downloaded). The first run
converts it to `<file>.orbax` next to it. Images are resized to 224x224 (the weights'
resolution; `--config.dataset.image_size=0` keeps CIFAR's 32x32). AdamW; learning rate 1e-3
for head_only and final_block, 1e-4 for full fine-tuning (as the study).

`:synthetic` is the offline smoke grid: ResNet-18 of width 4 on 128 synthetic CIFAR-100
images, 2 epochs of 4 steps per cell. Its "pretrained" weights are a random ResNet-18 written in
torchvision's layout (`prepare` below, `.safetensors`, no torch needed): they go through the
whole import path (file, conversion, orbax cache, head re-initialised for 100 classes) but
carry no ImageNet knowledge, so pretrained-vs-random differences in the smoke are noise.
"""
import os

from jax_resnets import config_lib

SMOKE_WEIGHTS = "synthetic-resnet18-w4-torchvision-layout.safetensors"
CELLS = {  # name -> (init, freeze, learning rate)
    "pretrained_head_only": (True, "head_only", 1e-3),
    "pretrained_final_block": (True, "final_block", 1e-3),
    "pretrained_full": (True, "full", 1e-4),
    "random_head_only": (False, "head_only", 1e-3),
    "random_final_block": (False, "final_block", 1e-3),
    "random_full": (False, "full", 1e-4),
}


def get_config(arg: str | None = None):
  """The common settings; `get_grid` gives each cell's overrides."""
  config = config_lib.base_config()
  config.dataset.name = "cifar100"
  config.dataset.image_size = 224
  config.model.update(depth=152, stem="imagenet", width=64)
  config.optim.update(name="adamw", learning_rate=1e-3, weight_decay=1e-4, schedule="cosine",
                      warmup_epochs=0.5)
  config.batch_size = 128
  config.num_epochs = 10
  config.log_every_steps = 100
  if arg == "synthetic":
    config.dataset.update(synthetic=True, synthetic_sizes={"train": 128, "test": 32}, image_size=0,
                          augment=("flip",))
    config.model.update(depth=18, width=4)
    config.optim.warmup_epochs = 0.0
    config.batch_size = 32
    config.num_epochs = 2
    config.log_every_steps = 4
    config.num_devices = 1
  elif arg:
    raise ValueError(f"configs/cifar100_transfer_grid.py: unknown argument {arg!r} (known: synthetic)")
  return config


def get_grid(arg: str | None = None) -> dict[str, dict]:
  """Cell name -> config overrides ("{root}" is the grid's directory)."""
  weights = os.path.join("{root}", SMOKE_WEIGHTS) if arg == "synthetic" else "resnet152-394f9c45.pth"
  grid = {}
  for name, (pretrained, freeze, lr) in CELLS.items():
    grid[name] = {"freeze": freeze, "optim.learning_rate": lr}
    if pretrained:
      grid[name]["init.checkpoint"] = weights
  return grid


def prepare(root: str, arg: str | None = None) -> None:
  """Smoke grid only: the stand-in "pretrained" file (real grids bring torchvision's)."""
  if arg == "synthetic" and not os.path.exists(os.path.join(root, SMOKE_WEIGHTS)):
    from jax_resnets.models import torchvision_import  # pylint: disable=g-import-not-at-top
    config = get_config(arg)
    torchvision_import.write_random_checkpoint(os.path.join(root, SMOKE_WEIGHTS), config.model.depth,
                                               config.model.width, num_classes=1000, seed=1)
