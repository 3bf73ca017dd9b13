"""Compression bias on CelebA Blond_Hair (Hooker et al. 2020): the CIE study.

  python -m jax_resnets.main --config=configs/celeba_cie.py --workdir=/tmp/cie
  python -m jax_resnets.main --config=configs/celeba_cie.py:smoke --workdir=/tmp/cie_smoke

Arguments (comma-separated; e.g. `configs/celeba_cie.py:smoke,vit_hybrid`):
  smoke        offline synthetic CelebA twin (jax_resnets/data/synthetic.py: blond men are rare and
               their cue is quiet, so pruning hurts them first), tiny models, every level; a few
               minutes on 2 CPU cores.
  vit_hybrid   ResNet-18 stages + a transformer encoder.
  mla_adapter  MLA adapter on a frozen, trained ResNet-18 backbone; only the adapter and the head
               train, and only they are pruned. It needs the backbone, a finished ResNet run of this
               study with the same model width/depth and population size: run it first, then pass its
               baseline level, e.g.
                 python -m jax_resnets.main --config=configs/celeba_cie.py:smoke --workdir=W
                 python -m jax_resnets.main --config=configs/celeba_cie.py:smoke,mla_adapter \
                   --config.model.backbone_checkpoint=W/levels/baseline --workdir=W_mla
               (model k of the population gets model k's backbone). Without it the run stops in one line.
  augment      real augmentation: random crop (4 px zero padding), horizontal flip and colour jitter
               (brightness / contrast / saturation x [0.6, 1.4]; jax_resnets/data/augment.py). Jitter
               moves hair colours towards each other, the very cue Blond_Hair is read from, which is
               the point of the variant: does augmentation change who compression hurts?
  no_augment   no augmentation at all (the default is horizontal flips only).
Real CelebA must be prepared first (`python -m jax_resnets.data.prepare celeb_a ...`).

Populations: `cie.num_seeds` = 30 models per level as in the paper. With two labels an even
population can tie on an example's modal label, so an even K needs an explicit `cie.tie_rule`:
`label_0` (ties count as "not Blond", stated in report.md); `odd_only` refuses even K (the smoke's
setting). Models are validated every epoch on CelebA's validation split (`cie.validation_split`).

Cost of the real study, an estimate (not a measurement). XLA's cost analysis of the forward
(`python -m jax_resnets.evaluation.flops --depth=18 --image_size=64 --num_classes=2`): 227 MFLOPs
per 64x64 image; a training step ~3x the forward = 0.68 GFLOPs per image. Per model: 10,000 steps
x 256 images = 2.56M images = 1.74 PFLOPs (+ 16 validation passes over 19,867 images, 0.07 PFLOPs).
Pruned models train at dense cost (masks, not sparse kernels), so 7 trained levels (baseline + 6
sparsities) x 30 models = 210 models = ~380 PFLOPs; quantization levels only predict (negligible).
At an assumed 30-40% MFU of an A100's 312 bf16 TFLOP/s (94-125 TFLOP/s): ~0.8-1.1 h of compute;
in float32 (`model.dtype`, TF32: 156 TFLOP/s peak) about twice that, ~2 h. Small 64x64 images rarely
reach that MFU, and the input pipeline (every model reads its own order: 538M images in all) can
easily be the bottleneck, so plan for a few hours to a day on one GPU, and check the first level's
logged img/s before committing.
"""
import ml_collections

from jax_resnets import config_lib

ARGS = ("smoke", "vit_hybrid", "mla_adapter", "augment", "no_augment")


def get_config(arg: str | None = None):
  args = [a for a in (arg or "").split(",") if a]
  unknown = [a for a in args if a not in ARGS]
  if unknown:
    raise ValueError(f"configs/celeba_cie.py: unknown argument {unknown[0]!r} (known: {', '.join(ARGS)})")
  config = config_lib.base_config()
  config.study = "celeba_cie"
  config.dataset.update(name="celeb_a", train_split="train", eval_split="test", augment=("flip",))
  config.dataset.image_size = 64
  config.dataset.label_attribute = "Blond_Hair"
  config.model.update(name="resnet", depth=18, stem="imagenet", width=64)
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
  config.batch_size = 256
  config.num_train_steps = 10_000
  config.log_every_steps = 100
  config.pruning = ml_collections.ConfigDict(dict(begin_step=1_000, end_step=8_000, frequency=500,
                                                  scope="per_tensor", initial_sparsity=0.0, power=3))
  config.cie = ml_collections.ConfigDict(dict(
      num_seeds=30, tie_rule="label_0", sparsities=(0.3, 0.5, 0.7, 0.9, 0.95, 0.99),
      quantization=("float16", "bfloat16", "int8_hybrid", "int8_fixed"), taxicab_top_fraction=0.1,
      calibration_examples=100, fold_batchnorm=True, grid_level="", validation_split="validation"))
  config.cv_folds = 0
  if "smoke" in args:
    smoke(config)
  if "vit_hybrid" in args:
    config.model.update(name="vit_hybrid", vit_dim=64 if "smoke" not in args else 16, vit_depth=2,
                        vit_heads=4 if "smoke" not in args else 2, vit_stages=3)
  if "mla_adapter" in args:
    config.model.update(name="mla_adapter", mla_dim=64 if "smoke" not in args else 16, mla_heads=4 if "smoke" not in args else 2,
                        mla_kv_rank=16 if "smoke" not in args else 4, mla_q_rank=0, mla_stages=3,
                        backbone_checkpoint="")
    # Only the adapter and the head train (and are pruned); the backbone is the ResNet run's baseline
    # level, frozen: --config.model.backbone_checkpoint=W/levels/baseline.
    config.freeze = "adapter,head"
  if "augment" in args and "no_augment" in args:
    raise ValueError("configs/celeba_cie.py: `augment` and `no_augment` exclude each other")
  if "augment" in args:
    config.dataset.augment = ("crop", "flip", "color_jitter")
  if "no_augment" in args:
    config.dataset.augment = ()
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """Synthetic twin, 32x32, ResNet-18 width 8, 3 seeds, every level, 200 steps (70 after pruning ends)."""
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 4000, "validation": 500, "test": 5000}
  config.dataset.image_size = 32
  config.model.width = 8
  config.batch_size = 64
  config.num_train_steps = 200
  config.log_every_steps = 20
  config.optim.update(learning_rate=0.05, weight_decay=1e-4)
  config.pruning.update(begin_step=30, end_step=130, frequency=10)
  config.cie.update(num_seeds=3, tie_rule="odd_only", taxicab_top_fraction=0.1)
