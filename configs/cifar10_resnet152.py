r"""ResNet-152 (ImageNet-pretrained, head only) on CIFAR-10, and the disabled-skip variant.

  python -m jax_resnets.main --config=configs/cifar10_resnet152.py --workdir=/tmp/r152
  python -m jax_resnets.main --config=configs/cifar10_resnet152.py:no_skips --workdir=/tmp/r152ns
  python launch/grid.py --config=configs/cifar10_resnet152.py --workdir=/tmp/r152grid   # both + report
  python -m jax_resnets.evaluation.flops --depth=152 --num_classes=10 --image_size=224

The baseline trains only the head (`fc`) on frozen ImageNet features; `no_skips` removes
the residual connections of `layer3.0` and `layer4.1` (as the study; change with
`--config.model.disabled_skips="('layer2.0',)"`): the pretrained `layer3.0.downsample`
tensors are then unused and skipped by the import. Weights: `resnet152-394f9c45.pth` in
`$JAX_RESNETS_WEIGHTS` (see configs/cifar100_transfer_grid.py). Add `synthetic` (e.g.
`:no_skips,synthetic`) for an offline smoke run with a tiny ResNet-18 and random stand-in
weights in torchvision's layout, which the grid runner writes (`prepare`); for a direct run
write them first:
  python -m jax_resnets.models.torchvision_import \
      $JAX_RESNETS_WEIGHTS/synthetic-resnet18-w4-torchvision-layout.safetensors --write_random
"""
import os

from jax_resnets import config_lib

DISABLED_SKIPS = ("layer3.0", "layer4.1")
SMOKE_WEIGHTS = "synthetic-resnet18-w4-torchvision-layout.safetensors"


def get_config(arg: str | None = None):
  args = set((arg or "").split(",")) - {""}
  if args - {"no_skips", "synthetic"}:
    raise ValueError(f"configs/cifar10_resnet152.py: unknown argument {arg!r} (known: no_skips, synthetic)")
  config = config_lib.base_config()
  config.dataset.name = "cifar10"
  config.dataset.image_size = 224
  config.model.update(depth=152, stem="imagenet", width=64)
  config.model.disabled_skips = DISABLED_SKIPS if "no_skips" in args else ()
  config.init.checkpoint = "resnet152-394f9c45.pth"
  config.freeze = "head_only"
  config.optim.update(name="adamw", learning_rate=1e-3, weight_decay=1e-4, schedule="cosine")
  config.batch_size = 128
  config.num_epochs = 5
  config.log_every_steps = 100
  if "synthetic" in args:
    config.dataset.update(synthetic=True, synthetic_sizes={"train": 256, "test": 64}, image_size=0,
                          augment=("flip",))
    config.model.update(depth=18, width=4)
    config.init.checkpoint = os.path.join(os.environ.get("JAX_RESNETS_WEIGHTS", "."), SMOKE_WEIGHTS)
    config.batch_size = 32
    config.num_epochs = 2
    config.log_every_steps = 4
    config.num_devices = 1
  return config


def get_grid(arg: str | None = None) -> dict[str, dict]:
  grid = {"baseline": {"model.disabled_skips": ()}, "no_skips": {"model.disabled_skips": DISABLED_SKIPS}}
  if arg == "synthetic":
    for cell in grid.values():
      cell["init.checkpoint"] = os.path.join("{root}", SMOKE_WEIGHTS)
  return grid


def prepare(root: str, arg: str | None = None) -> None:
  if arg == "synthetic" and not os.path.exists(os.path.join(root, SMOKE_WEIGHTS)):
    from jax_resnets.models import torchvision_import  # pylint: disable=g-import-not-at-top
    torchvision_import.write_random_checkpoint(os.path.join(root, SMOKE_WEIGHTS), 18, 4, seed=1)
