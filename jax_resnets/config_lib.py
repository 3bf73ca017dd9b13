"""The base config every study extends, and validation that names the bad key."""
import ml_collections

from jax_resnets import backend
from jax_resnets.data import device_augment, sources
from jax_resnets.models import resnet
from jax_resnets.training import parallel


class ConfigError(ValueError):
  """A config value is wrong; the message names the key."""


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.study = "classification"
  config.seed = 0
  # Dataset keys of one dataset or recipe only live in the configs that use them (each read with a
  # default): label_attribute (CelebA), root (image_folder), num_classes, synthetic_seed,
  # read_threads (grain read-ahead threads, default 1), mixup_alpha / cutmix_alpha / mix_prob.
  config.dataset = ml_collections.ConfigDict(dict(
      name="cifar10", synthetic=False, synthetic_sizes=ml_collections.FieldReference(None, field_type=dict),
      data_dir=ml_collections.FieldReference(None, field_type=str), train_split="train", eval_split="test",
      augment=("crop", "flip"), num_workers=0,
      image_size=0,  # 0: the dataset's own size (CelebA real 218x178 is centre-cropped and resized to it).
      on_corrupt="skip",  # corrupt image: 'skip' (logged with path and count) or 'error'.
      mixup_alpha=0.0, cutmix_alpha=0.0,  # MixUp / CutMix batch transforms (0: off; dataset.mix_prob).
      cache="auto",  # auto | memory | none: hold a split decoded in memory (sources.should_cache).
      augment_on="auto"))  # auto | host | device: where crop/flip + normalise run (data/device_augment.py).
  config.model = ml_collections.ConfigDict(dict(
      name="resnet", depth=18, stem="imagenet", width=64, dtype="float32", disabled_skips=()))
  # How ops run (jax_resnets/backend.py): auto | xla (stock flax/XLA) | cpu (oneDNN etc.; same values).
  config.backend = "auto"
  # An optimizer's or schedule's own keys (b1, b2; decay_epochs, decay_factor; restart_epochs,
  # restart_mult; plateau_*) are set by the configs that use it: training/optim.py FAMILY_DEFAULTS.
  config.optim = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, schedule="cosine",
      warmup_epochs=0.0))
  config.checkpoint = ml_collections.ConfigDict(dict(
      keep=2, best_k=1, best_metric="eval/accuracy", best_mode="max"))
  config.batch_size = 128
  config.num_epochs = 1
  config.num_train_steps = 0  # > 0 overrides num_epochs.
  config.label_smoothing = 0.0
  config.parallel = "shard_map"
  config.num_devices = 0  # 0: all devices.
  config.distributed = ml_collections.ConfigDict(dict(  # See training/distributed.py.
      coordinator_address=ml_collections.FieldReference(None, field_type=str), num_processes=0,
      process_id=-1))
  config.log_every_steps = 50
  # Transfer learning (models/torchvision_import.py, training/freeze.py): initial weights
  # (torchvision .pth/.safetensors or orbax dir; None: random) and what trains.
  config.init = ml_collections.ConfigDict(dict(checkpoint=ml_collections.FieldReference(None, field_type=str)))
  config.freeze = "full"  # full | head_only | final_block | "layer3.35,layer4,fc" (trainable prefixes)
  # Resume although hyper-parameters (optim.*, num_epochs, ...) differ from those the checkpoints were
  # written with (logged as a warning); off: such a re-run stops naming them. Shape keys never resume.
  config.resume_with_changes = False
  return config


def check(ok: bool, key: str, value, expected: str) -> None:
  """ConfigError 'config error: key=value (expected)' unless `ok` (studies validate their keys with it too)."""
  if not ok:
    raise ConfigError(f"config error: {key}={value!r} ({expected})")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad value."""
  m = config.model
  check(m.depth in resnet.STAGE_SIZES, "model.depth", m.depth,
         f"must be one of {', '.join(map(str, resnet.STAGE_SIZES))}")
  check(m.stem in ("imagenet", "cifar"), "model.stem", m.stem, "must be 'imagenet' or 'cifar'")
  check(m.width > 0, "model.width", m.width, "must be positive")
  check(m.dtype in ("float32", "bfloat16"), "model.dtype", m.dtype, "must be 'float32' or 'bfloat16'")
  check(m.get("conv", "default") in ("default", "handmade"), "model.conv", m.get("conv"),
         "must be 'default' (the backend's) or 'handmade'")
  check(config.get("backend", "auto") in backend.NAMES, "backend", config.get("backend"),
         f"known: {', '.join(backend.NAMES)}")
  names = resnet.block_names(m.depth)
  for block in m.disabled_skips:
    check(block in names, "model.disabled_skips", block, f"not a block of ResNet-{m.depth}, e.g. 'layer3.0'")
  check(config.dataset.name in sources.SPECS, "dataset.name", config.dataset.name,
         f"known: {', '.join(sources.SPECS)}")
  d = config.dataset
  check(d.get("on_corrupt", "skip") in ("skip", "error"), "dataset.on_corrupt", d.get("on_corrupt"),
         "must be 'skip' or 'error'")
  check(d.get("mixup_alpha", 0.0) >= 0 and d.get("cutmix_alpha", 0.0) >= 0, "dataset.mixup_alpha",
         (d.get("mixup_alpha"), d.get("cutmix_alpha")), "mixup_alpha and cutmix_alpha must be >= 0")
  check(0.0 <= d.get("mix_prob", 1.0) <= 1.0, "dataset.mix_prob", d.get("mix_prob"), "must be in [0, 1]")
  check(d.get("image_size", 0) >= 0, "dataset.image_size", d.get("image_size"), "must be >= 0 (0: dataset default)")
  check(d.get("cache", "auto") in sources.CACHE_MODES, "dataset.cache", d.get("cache"),
         f"known: {', '.join(sources.CACHE_MODES)}")
  try:
    device_augment.placement(d)  # The one place of the augment_on rules.
  except ValueError as e:
    raise ConfigError(f"config error: {e}") from e
  check(d.get("read_threads", 1) >= 0, "dataset.read_threads", d.get("read_threads"), "must be >= 0 (0: on demand)")
  check(config.parallel in parallel.MODES, "parallel", config.parallel, f"known: {', '.join(parallel.MODES)}")
  check(config.optim.name in ("sgd", "adamw"), "optim.name", config.optim.name, "known: sgd, adamw")
  check(config.optim.schedule in ("constant", "cosine", "step", "cosine_restarts", "plateau"),
         "optim.schedule", config.optim.schedule, "known: constant, cosine, step, cosine_restarts, plateau")
  check(config.optim.learning_rate > 0, "optim.learning_rate", config.optim.learning_rate, "must be positive")
  check(config.batch_size > 0, "batch_size", config.batch_size, "must be positive")
  check(config.num_epochs > 0 or config.num_train_steps > 0, "num_epochs", config.num_epochs,
         "must be positive (or set num_train_steps)")
  check(config.num_train_steps >= 0, "num_train_steps", config.num_train_steps, "must be >= 0 (0: use num_epochs)")
  check(config.log_every_steps >= 1, "log_every_steps", config.log_every_steps, "must be >= 1")
  check(isinstance(config.get("resume_with_changes", False), bool), "resume_with_changes",
         config.get("resume_with_changes"), "must be True or False")
  check(0.0 <= config.label_smoothing < 1.0, "label_smoothing", config.label_smoothing, "must be in [0, 1)")
  if config.get("init") and config.init.get("checkpoint"):  # A missing weights file fails before model init.
    from jax_resnets.models import torchvision_import  # pylint: disable=g-import-not-at-top (import cycle)
    torchvision_import.resolve(config.init.checkpoint, m.depth)
