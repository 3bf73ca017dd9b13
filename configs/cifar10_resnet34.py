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
(decay epochs, warm-up) scaled to the 2 epochs. Measured on 2 CPU cores: see BUILD_NOTES.md.

Feature extraction vs fine-tuning from torchvision's ImageNet ResNet-34 weights (the transfer
study's freeze modes; needs the ImageNet stem so conv1 is 7x7; never downloads the file):
  feature extraction: --config.model.stem=imagenet --config.init.checkpoint=resnet34-b627a593.pth \
                      --config.freeze=head_only
  fine-tuning:        --config.model.stem=imagenet --config.init.checkpoint=resnet34-b627a593.pth \
                      --config.freeze=full --config.optim.learning_rate=0.01
  (`--config.freeze=final_block` trains layer4 + fc; larger inputs such as
  `--config.dataset.image_size=64` suit the ImageNet stem better than 32x32.)
"""
from jax_resnets import config_lib

ARGS = ("synthetic", "study", "strong", "study,synthetic", "strong,synthetic")


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


def synthetic(config, shrink_schedule: bool = False) -> None:
  """Small offline run on the synthetic twin; with a recipe, its epoch-based schedule shrinks too."""
  if shrink_schedule:
    scale = 2 / config.num_epochs
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
  if "synthetic" in parts:
    synthetic(config, shrink_schedule=len(parts) > 1)
  return config
