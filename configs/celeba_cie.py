"""Compression bias on CelebA Blond_Hair (Hooker et al. 2020): the CIE study.

  python -m jax_resnets.main --config=configs/celeba_cie.py --workdir=/tmp/cie
  python -m jax_resnets.main --config=configs/celeba_cie.py:smoke --workdir=/tmp/cie_smoke

Arguments (comma-separated): `smoke` (offline synthetic CelebA twin, tiny models, all
levels; < 10 min on 2 CPU cores), `vit_hybrid` (ResNet-18 stages + transformer encoder),
`mla_adapter` (MLA adapter on a frozen, trained ResNet-18 backbone: `model.backbone_checkpoint` = a
ResNet run's DIR/levels/baseline; only adapter + head train and are pruned),
`no_augment` (data augmentation off). E.g. `configs/celeba_cie.py:smoke,vit_hybrid`.
Real CelebA must be prepared first (`python -m jax_resnets.data.prepare celeb_a ...`).
"""
import ml_collections

from jax_resnets import config_lib

ARGS = ("smoke", "vit_hybrid", "mla_adapter", "no_augment")


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
      num_seeds=10, sparsities=(0.3, 0.5, 0.7, 0.9, 0.95, 0.99),
      quantization=("float16", "bfloat16", "int8_hybrid", "int8_fixed"), taxicab_top_fraction=0.1,
      calibration_examples=100, fold_batchnorm=True, grid_level=""))
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
  if "no_augment" in args:
    config.dataset.augment = ()
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """Synthetic twin, 32x32, ResNet-18 width 8, 3 seeds, every level, a few hundred steps."""
  config.dataset.synthetic = True
  config.dataset.synthetic_sizes = {"train": 768, "test": 384}
  config.dataset.image_size = 32
  config.model.width = 8
  config.batch_size = 32
  config.num_train_steps = 240
  config.log_every_steps = 20
  config.optim.update(learning_rate=0.05, weight_decay=1e-4)
  config.pruning.update(begin_step=40, end_step=160, frequency=20)
  config.cie.update(num_seeds=3, taxicab_top_fraction=0.1)
