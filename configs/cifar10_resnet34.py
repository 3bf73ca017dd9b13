"""ResNet-34 (CIFAR stem) on CIFAR-10: SGD 0.1, momentum 0.9, wd 5e-4, cosine, crop+flip.

  python -m jax_resnets.main --config=configs/cifar10_resnet34.py --workdir=/tmp/r34
  python -m jax_resnets.main --config=configs/cifar10_resnet34.py:synthetic --workdir=/tmp/r34s
  python -m jax_resnets.main --config=configs/cifar10_resnet34.py:study --workdir=/tmp/r34_study
  python -m jax_resnets.main --config=configs/cifar10_resnet34.py:strong --workdir=/tmp/r34_strong
  python -m jax_resnets.evaluate --workdir=/tmp/r34_study --split=test

`:synthetic` is a small offline run on the synthetic CIFAR-10 twin (width 16, 2 epochs
of 2048 images) that finishes in well under 3 minutes on 2 CPU cores.

`:study` is the study's setting: ResNet-34, 60 epochs, SGD with momentum, the learning rate
x0.1 at epoch 30 (step schedule), crop+flip. The values the study does not fix are the usual
CIFAR ones: lr 0.1, momentum 0.9, weight decay 5e-4, batch 128.
`:strong` aims at >= 95% test accuracy: 200 epochs, Nesterov SGD lr 0.1 with 5 warm-up
epochs then cosine to 0, weight decay 5e-4, label smoothing 0.1, crop+flip, and MixUp
(alpha 0.2) or CutMix (alpha 1.0) on half of the batches (soft-label loss).

Expected results (NOT measured: no GPU was available to this project; the accuracies are
what the literature reports for such recipes: CIFAR-stem ResNet-18/34 reach ~93-94% with a
short step schedule and ~95-96% with 200 cosine epochs plus CutMix). Cost: 2.0 GFLOP per
image forward (XLA cost analysis), ~6 GFLOP per training image, 21.3M parameters.
  :study   expected ~93-94% test accuracy; 60 epochs = 3M training images = ~18 PFLOP:
           roughly 10-20 min on one A100/H100-class GPU, if the input pipeline keeps up
           (~3-5k img/s: raise dataset.num_workers).
  :strong  expected ~95-96.5% test accuracy; 200 epochs: roughly 35-70 min on the same GPU.
Add `,synthetic` (`:study,synthetic`, `:strong,synthetic`) to smoke-test a recipe offline on
CPU: the `:synthetic` data/model sizes and 2 epochs, with the recipe's schedule epochs
(decay epochs, warm-up) scaled to the 2 epochs. Measured on 2 CPU cores: BUILD_NOTES.md (Measured).

`:transfer` is feature extraction vs fine-tuning from torchvision's ImageNet ResNet-34
weights (`resnet34-b627a593.pth`, in $JAX_RESNETS_WEIGHTS or torch hub's cache; never
downloaded), as a grid of two cells run by launch/grid.py, which then compares them
(ROOT/report, `python -m jax_resnets.compare`):
  python launch/grid.py --config=configs/cifar10_resnet34.py:transfer --workdir=/tmp/r34_transfer
  python launch/grid.py --config=configs/cifar10_resnet34.py:transfer,synthetic --workdir=/tmp/r34_tsmoke
  feature_extraction: freeze=head_only (only the new 10-class fc trains), SGD lr 0.1;
  fine_tuning:        freeze=full (every layer trains from the imported weights), SGD lr 0.01.
Both use the ImageNet stem (7x7 conv1 + max pool, as the weights), images resized to 224x224
(the weights' resolution; `-- --config.dataset.image_size=64` is ~12x cheaper), 10 cosine
epochs, batch 128. `--config=configs/cifar10_resnet34.py:transfer` with `jax_resnets.main` runs
the feature-extraction cell alone. `:transfer,synthetic` is the offline smoke grid: ResNet-34 of
width 4 on 64 synthetic 32x32 images, 2 epochs of 2 steps per cell, from a random ResNet-34
written in torchvision's layout by `prepare` (the whole import path, no ImageNet knowledge);
it is meant for launch/grid.py (the cells point at that file; alone it has no checkpoint).
(`--config.freeze=final_block` trains layer4 + fc.)
"""
import os

from jax_resnets import config_lib

ARGS = ("synthetic", "study", "strong", "study,synthetic", "strong,synthetic", "transfer", "transfer,synthetic")
WEIGHTS = "resnet34-b627a593.pth"  # torchvision's IMAGENET1K_V1 ResNet-34.
SMOKE_WEIGHTS = "synthetic-resnet34-w4-torchvision-layout.safetensors"
TRANSFER_CELLS = {  # name -> (freeze, SGD learning rate)
    "feature_extraction": ("head_only", 0.1),
    "fine_tuning": ("full", 0.01),
}


def study(config) -> None:
  """The study's 60-epoch step-schedule recipe."""
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
                      schedule="step", decay_epochs=(30,), decay_factor=0.1, warmup_epochs=0.0)
  config.dataset.augment = ("crop", "flip")
  config.num_epochs = 60


def strong(config) -> None:
  """Recipe aimed at >= 95%: longer, cosine with warm-up, label smoothing, MixUp/CutMix."""
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      schedule="cosine", warmup_epochs=5.0)
  config.dataset.augment = ("crop", "flip")
  config.dataset.update(mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.5)
  config.label_smoothing = 0.1
  config.num_epochs = 200


def transfer(config) -> None:
  """From ImageNet weights: their stem and resolution, a short cosine run; feature extraction alone."""
  config.model.stem = "imagenet"
  config.dataset.image_size = 224
  config.dataset.augment = ("crop", "flip")
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
                      schedule="cosine", warmup_epochs=0.0)
  config.init.checkpoint = WEIGHTS
  config.freeze = "head_only"
  config.num_epochs = 10


def transfer_synthetic(config) -> None:
  """The offline smoke grid's cells: tiny ResNet-34, 32x32, 2 epochs of 2 steps, one device."""
  config.dataset.update(synthetic=True, synthetic_sizes={"train": 64, "test": 32}, image_size=0,
                        augment=("flip",))
  config.model.width = 4
  config.init.checkpoint = None  # The grid's cells point at `prepare`'s stand-in file.
  config.batch_size = 32
  config.num_epochs = 2
  config.log_every_steps = 2  # = steps per epoch (1 would flush the compile-excluded, empty first step)
  config.num_devices = 1


def synthetic(config, shrink_schedule: bool = False) -> None:
  """Small offline run on the synthetic twin; with a recipe, its epoch-based schedule shrinks too."""
  if shrink_schedule:
    scale = 2 / config.num_epochs
    if "decay_epochs" in config.optim:
      config.optim.decay_epochs = tuple(e * scale for e in config.optim.decay_epochs)
    config.optim.warmup_epochs = config.optim.warmup_epochs * scale
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 2048, "test": 512}
  config.model.width = 16
  config.batch_size = 64
  config.num_epochs = 2
  config.log_every_steps = 8


def get_config(arg: str | None = None):
  config = config_lib.base_config()
  config.dataset.name = "cifar10"
  config.model.depth = 34
  config.model.stem = "cifar"
  config.model.conv = "default"  # or "handmade": the study's im2col conv (studies/resnet34/handmade_conv.py)
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  config.batch_size = 128
  config.num_epochs = 60
  if arg and arg not in ARGS:
    raise ValueError(f"configs/cifar10_resnet34.py: unknown argument {arg!r} (known: {', '.join(ARGS)})")
  parts = arg.split(",") if arg else []
  if "study" in parts:
    study(config)
  if "strong" in parts:
    strong(config)
  if "transfer" in parts:
    transfer(config)
    if "synthetic" in parts:
      transfer_synthetic(config)
  elif "synthetic" in parts:
    synthetic(config, shrink_schedule=len(parts) > 1)
  return config


def get_grid(arg: str | None = None) -> dict[str, dict]:
  """`:transfer[,synthetic]` as a launch/grid.py grid: cell name -> overrides ("{root}": grid dir)."""
  if arg not in ("transfer", "transfer,synthetic"):
    raise ValueError(f"configs/cifar10_resnet34.py: only :transfer and :transfer,synthetic are grids, "
                     f"not {arg!r}")
  weights = os.path.join("{root}", SMOKE_WEIGHTS) if "synthetic" in arg else WEIGHTS
  return {name: {"freeze": freeze, "optim.learning_rate": lr, "init.checkpoint": weights}
          for name, (freeze, lr) in TRANSFER_CELLS.items()}


def prepare(root: str, arg: str | None = None) -> None:
  """Smoke grid only: a random ResNet-34 in torchvision's layout stands in for the ImageNet file."""
  if arg == "transfer,synthetic" and not os.path.exists(os.path.join(root, SMOKE_WEIGHTS)):
    from jax_resnets.models import torchvision_import  # pylint: disable=g-import-not-at-top
    config = get_config(arg)
    torchvision_import.write_random_checkpoint(os.path.join(root, SMOKE_WEIGHTS), config.model.depth,
                                               config.model.width, num_classes=1000, seed=1)
