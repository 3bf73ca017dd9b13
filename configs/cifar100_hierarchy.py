"""Hierarchy training on CIFAR-100 (PhiNet alpha=3, t_zero=5, divisor 8; or a ResNet).

One stage per run, each starting from the previous stage's workdir:
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage1 --workdir=/tmp/h1
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage2 --workdir=/tmp/h2 \
      --config.init.from_workdir=/tmp/h1
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage2_children --workdir=/tmp/h2c \
      --config.init.from_workdir=/tmp/h2
  python -m jax_resnets.main --config=configs/cifar100_hierarchy.py:stage3 --workdir=/tmp/h3 \
      --config.init.from_workdir=/tmp/h2c
(or `:all` for the four in DIR/<stage>). /tmp/h3/report.md compares the flat head of
stage 1 with the hierarchical head (hard and soft routing, after stage2_children and stage 3).

All heads and the d sweep (a grid; one cell per head / d, ROOT/heads_report.md and
ROOT/d_sweep.png written as cells finish, then compare's ROOT/report):
  python launch/grid.py --config=configs/cifar100_hierarchy.py:d_sweep --workdir=/tmp/hgrid
  python launch/grid.py --config=configs/cifar100_hierarchy.py:d_sweep,synthetic --workdir=/tmp/hgrid_s

`:synthetic` runs ALL stages end to end on the synthetic CIFAR-100 twin (its coarse label
is fine // 5: 20 parents of 5) with a tiny PhiNet and a few steps per stage, offline.
Options: --config.hierarchy.grouping=merged_coarse --config.hierarchy.num_parents=10;
--config.head.name=adaptive (factorized stage-1 head); --config.model.name=resnet.
"""
import ml_collections

from jax_resnets import config_lib

# (epochs, learning rate) per stage: the backbone fine-tune, then the heads on it.
STAGE_SCHEDULE = {"stage1": (60, 0.1), "stage2": (10, 0.05), "stage2_children": (10, 0.05),
                  "stage3": (20, 0.05)}
# d of the factorised heads (features -> d -> 100) in the :d_sweep grid.
D_VALUES = (8, 16, 32, 64, 128, 256, 512)
SYNTHETIC_D_VALUES = (4, 16)


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
      freeze_backbone=True, sweep_root="",  # sweep_root: the :d_sweep grid's directory (sweep.py).
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
  args = parse(arg)
  if args & set(STAGE_SCHEDULE):
    (stage,) = args & set(STAGE_SCHEDULE)
    config.hierarchy.stage = stage
    config.num_epochs, config.optim.learning_rate = STAGE_SCHEDULE[stage]
  elif "all" in args or "d_sweep" in args:  # d_sweep: the grid's cells set their own stage.
    config.hierarchy.stage = "all"
  if "synthetic" in args:
    synthetic(config)
  return config


def parse(arg: str | None) -> set[str]:
  """`a,b` -> {a, b}; one stage at most; unknown words are an error naming the known ones."""
  args = set(filter(None, (arg or "").split(",")))
  known = {*STAGE_SCHEDULE, "all", "synthetic", "d_sweep"}
  if args - known or len(args & (set(STAGE_SCHEDULE) | {"all"})) > 1:
    raise ValueError(f"configs/cifar100_hierarchy.py: unknown argument {arg!r} "
                     f"(known: {', '.join(STAGE_SCHEDULE)}, all, synthetic, d_sweep; comma-separated)")
  return args


def get_grid(arg: str | None = None) -> dict[str, dict]:
  """`:d_sweep[,synthetic]`: cell name -> overrides; all heads, the factorised ones at every d.

  `hierarchy` runs all stages (its stage 1 is the original head); the others are stage-1
  runs of one flat head each. Every cell rewrites ROOT/heads_report.md and ROOT/d_sweep.png.
  """
  args = parse(arg)
  if "d_sweep" not in args:
    raise ValueError("configs/cifar100_hierarchy.py: the grid is `:d_sweep` (or `:d_sweep,synthetic`)")
  common = {"hierarchy.sweep_root": "{root}"}
  grid = {"hierarchy": {**common, "hierarchy.stage": "all", "head.name": "original"}}
  config = get_config(arg)  # Flat cells train as long as the hierarchy cell's stage 1.
  epochs, lr = config.hierarchy.stage_epochs[0], config.hierarchy.stage_learning_rates[0]
  for head in ("adaptive", "adaptive_nonlinear"):
    for d in SYNTHETIC_D_VALUES if "synthetic" in args else D_VALUES:
      grid[f"{head}_d{d}"] = {**common, "hierarchy.stage": "stage1", "head.name": head, "head.bottleneck": d,
                              "num_epochs": int(epochs), "optim.learning_rate": float(lr)}
  return grid


def synthetic(config: ml_collections.ConfigDict) -> None:
  """All four stages on the synthetic twin: PhiNet alpha 0.25, 16 px, 2-3 epochs per stage."""
  config.hierarchy.stage = "all"
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 1024, "test": 256}
  config.dataset.image_size = 16
  config.model.phinet.update(alpha=0.25, t_zero=2.0, num_layers=5, downsampling_layers=(5,))
  config.head.bottleneck = 16
  config.batch_size = 64
  config.hierarchy.stage_epochs = (3, 2, 2, 2)
  config.hierarchy.stage_learning_rates = (0.1, 0.1, 0.1, 0.1)
  config.log_every_steps = 8
