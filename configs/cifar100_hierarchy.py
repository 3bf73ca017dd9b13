"""Hierarchy training on CIFAR-100 (PhiNet alpha=3, t_zero=5, divisor 8; or a ResNet).

One stage per run, each starting from the previous stage's workdir:
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage1 --workdir=/tmp/h1
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage2 --workdir=/tmp/h2 \
      --config.init.from_workdir=/tmp/h1
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage3 --workdir=/tmp/h3 \
      --config.init.from_workdir=/tmp/h2
(or `:all` for the three in DIR/stage1..3). /tmp/h3/report.md compares the flat head of
stage 1 with the hierarchical head (hard and soft routing).

`:synthetic` runs ALL stages end to end on the synthetic CIFAR-100 twin (its coarse label
is fine // 5: 20 parents of 5) with a tiny PhiNet and a few steps per stage, offline.
Options: --config.hierarchy.grouping=merged_coarse --config.hierarchy.num_parents=10;
--config.head.name=adaptive (factorized stage-1 head); --config.model.name=resnet.
"""
import ml_collections

from jax_resnets import config_lib

# (epochs, learning rate) per stage: the backbone fine-tune, then the heads on it.
STAGE_SCHEDULE = {"stage1": (60, 0.1), "stage2": (10, 0.05), "stage3": (20, 0.05)}


def get_config(arg: str | None = None):
  config = config_lib.base_config()
  config.study = "hierarchy"
  config.dataset.name = "cifar100"
  config.model.name = "phinet"
  config.model.phinet = ml_collections.ConfigDict(dict(
      alpha=3.0, beta=1.0, t_zero=5.0, num_layers=7, downsampling_layers=(5, 7), divisor=8,
      first_conv_stride=2, squeeze_excite=True, h_swish=True, residuals=True, conv5_percent=0.0))
  config.model.stem = "cifar"  # For --config.model.name=resnet.
  config.head = ml_collections.ConfigDict(dict(
      name="original",  # stage-1 flat head: original | adaptive | adaptive_nonlinear
      bottleneck=128, activation="relu"))  # adaptive*: features -> bottleneck -> classes
  config.hierarchy = ml_collections.ConfigDict(dict(
      stage="stage1", grouping="coarse", num_parents=0, parent_weight=1.0, child_weight=1.0,
      freeze_backbone=True,
      # hierarchy.stage=all: per-stage epochs / learning rates (empty: num_epochs / optim.learning_rate).
      stage_epochs=tuple(e for e, _ in STAGE_SCHEDULE.values()),
      stage_learning_rates=tuple(lr for _, lr in STAGE_SCHEDULE.values())))
  if "init" not in config:
    config.init = ml_collections.ConfigDict()
  config.init.from_workdir = ml_collections.FieldReference(None, field_type=str)
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  config.batch_size = 128
  config.checkpoint.best_metric = "eval/loss"  # eval/accuracy is meaningless in stage 2.
  config.checkpoint.best_mode = "min"
  if arg in STAGE_SCHEDULE:
    config.hierarchy.stage = arg
    config.num_epochs, config.optim.learning_rate = STAGE_SCHEDULE[arg]
  elif arg == "all":
    config.hierarchy.stage = "all"
  elif arg == "synthetic":
    synthetic(config)
  elif arg:
    raise ValueError(f"configs/cifar100_hierarchy.py: unknown argument {arg!r} "
                     f"(known: {', '.join(STAGE_SCHEDULE)}, all, synthetic)")
  return config


def synthetic(config: ml_collections.ConfigDict) -> None:
  """All three stages on the synthetic twin: PhiNet alpha 0.25, 16 px, 2 epochs per stage."""
  config.hierarchy.stage = "all"
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 1024, "test": 256}
  config.dataset.image_size = 16
  config.model.phinet.update(alpha=0.25, t_zero=2.0, num_layers=5, downsampling_layers=(5,))
  config.head.bottleneck = 16
  config.batch_size = 64
  config.hierarchy.stage_epochs = (3, 2, 2)
  config.hierarchy.stage_learning_rates = (0.1, 0.1, 0.1)
  config.log_every_steps = 8
