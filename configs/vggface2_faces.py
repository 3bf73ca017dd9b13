"""Face classification + verification on the VGGFace2 subset (11-785 HW2P2 layout).

  python -m jax_resnets.data.prepare faces --manual_dir=HW2P2_DIR   # once: -> tfds ArrayRecord
  python -m jax_resnets.main --config=configs/vggface2_faces.py --workdir=/tmp/faces
  python -m jax_resnets.main --config=configs/vggface2_faces.py:synthetic --workdir=/tmp/faces_s

Default: an SE-ResNet-34-like FaceNet (basic blocks 3-4-6-3, SE in the last two stages,
dropout 0.1 in the last stage, 512-d embedding), CE with label smoothing 0.1 + center loss
(lambda 0.003, alpha 0.5), SGD with cosine warm restarts, early stopping on the dev
verification accuracy (patience 5), then both Kaggle CSVs.
`faces.task`: classification | verification | both. Swap `loss.classifier` to arcface /
cosface (with `model.head='cosine'`), add `loss.triplet_weight`, or change `model.block` to
convnext / mobilenetv2 / resnet_bottleneck.

`:synthetic` is the offline smoke on the synthetic face twin (50 identities at 32x32;
known = first 25, unknown_dev = half known, half unseen); it trains a small FaceNet, picks
the threshold on unknown_dev, verifies and writes both CSVs and the report in < 3 minutes
on 2 CPU cores. Its smoke runtime is in BUILD_NOTES.md (Measured).

Architecture ablation (a grid: one cell per `model.block`, same loss, schedule and
embedding; then compare's ROOT/report/report.md puts them side by side):
  python launch/grid.py --config=configs/vggface2_faces.py --workdir=/tmp/faces_blocks
  python launch/grid.py --config=configs/vggface2_faces.py:synthetic --workdir=/tmp/faces_blocks_s
  python -m jax_resnets.compare /tmp/faces_blocks_s/* --out=/tmp/faces_blocks_s/report   # again, by hand
"""
from jax_resnets import config_lib
from jax_resnets.studies.faces import study as faces
from jax_resnets.studies.faces import losses as face_losses
from jax_resnets.studies.faces.face_nets import BLOCKS


def get_config(arg: str | None = None):
  config = config_lib.base_config()
  config.study = "faces"
  config.dataset.update(name="faces", image_size=112, augment=("flip", "color_jitter", "rotate"),
                        train_split="train", eval_split="dev", num_workers=4)
  config.model.update(name="face_net", block="resnet_basic", width=64, channels=(64, 128, 256, 512),
                      depths=(3, 4, 6, 3), strides=(1, 2, 2, 2), dropout=(0.0, 0.0, 0.0, 0.1),
                      se=(False, False, True, True), expansion=4, depthwise=True, activation="relu",
                      transition=False, embedding_size=512, head="linear", se_ratio=0.25)
  config.loss = face_losses.default_config()
  config.loss.update(classifier="softmax", label_smoothing=0.1, center_weight=0.003, center_alpha=0.5)
  config.faces = faces.default_config()
  config.faces.update(task="both", patience=5, gallery="mean")
  config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      schedule="cosine_restarts", restart_epochs=10, restart_mult=2)
  config.batch_size = 256
  config.num_epochs = 70
  config.log_every_steps = 100
  if arg == "synthetic":
    synthetic(config)
  elif arg:
    raise ValueError(f"configs/vggface2_faces.py: unknown argument {arg!r} (known: synthetic)")
  return config


def get_grid(arg: str | None = None) -> dict[str, dict]:
  """The face-architecture ablation: cell name -> overrides (only `model.block` differs)."""
  get_config(arg)  # The same arguments as the cells' config (an unknown one fails here).
  return {block: {"model.block": block} for block in BLOCKS}


def synthetic(config) -> None:
  """Small offline run on the synthetic face twin (< 3 minutes on 2 CPU cores)."""
  config.dataset.update(synthetic=True, image_size=32, augment=("flip",), num_workers=0)
  config.dataset.synthetic_sizes = {"train": 2000, "dev": 250, "test": 250, "known": 250, "unknown_dev": 250,
                                    "unknown_test": 250}
  config.model.update(width=16, channels=(16, 32, 64), depths=(1, 1, 1), strides=(1, 2, 2),
                      dropout=(0.0, 0.0, 0.1), se=(False, True, True), embedding_size=64)
  config.optim.update(learning_rate=0.05, restart_epochs=1, restart_mult=3)  # SGDR cycles: 1, 3 epochs.
  config.batch_size = 64
  config.num_epochs = 4
  config.faces.patience = 2
  config.log_every_steps = 10
