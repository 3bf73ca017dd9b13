"""The plain-PyTorch twin of a project run, for `python -m benchmarks.parity`.

Written from the documented meaning of the config, not from the project's code, so that a
disagreement between the two sides points at a bug on one of them: torchvision's ResNet
layout (bench_torch.ResNet) and init (kaiming-normal fan_out convs, BN weight 1 bias 0,
nn.Linear's default fc), torch.optim.SGD (L2 decay inside, momentum / Nesterov) or AdamW, the
learning rate set before every step from the schedule's closed form, pad-4 random crop and
horizontal flip as data/augment.py describes them, mean/std of the dataset spec, drop-last
shuffled batches reseeded each epoch, BN in eval mode for the test pass after every epoch.
Only the raw examples are read through the project (`sources.make_source`), so both sides
train on the same images.
"""
import math
import time

import ml_collections
import numpy as np

from benchmarks import bench_torch  # Sets OMP_WAIT_POLICY before torch loads.
from jax_resnets.data import augment as data_augment  # The project's own resize: both sides see the same pixels.
import torch  # pylint: disable=g-import-not-at-top,wrong-import-order
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,wrong-import-order
from torch import nn  # pylint: disable=g-import-not-at-top,wrong-import-order

SUPPORTED_AUGMENT = ("crop", "flip")
SUPPORTED_SCHEDULES = ("constant", "cosine", "step", "cosine_restarts")
# An optimizer's or schedule's own keys live only in configs that use them; their documented defaults.
FAMILY_DEFAULTS = {"b1": 0.9, "b2": 0.999, "decay_epochs": (30,), "decay_factor": 0.1, "restart_epochs": 10,
                   "restart_mult": 2}


def opt(cfg: ml_collections.ConfigDict, key: str):
  return cfg.get(key, FAMILY_DEFAULTS[key])


class Unsupported(ValueError):
  """The config uses something the torch twin does not reproduce (one line, exit 2)."""


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses configs whose torch twin would not be the same recipe."""
  d, m = config.dataset, config.model
  problems = [
      (config.study != "classification", f"study={config.study!r} (only 'classification')"),
      (m.name != "resnet", f"model.name={m.name!r} (only 'resnet')"),
      (m.dtype != "float32", f"model.dtype={m.dtype!r} (only float32)"),
      (bool([a for a in d.augment if a not in SUPPORTED_AUGMENT]), f"dataset.augment={tuple(d.augment)} "
       f"(only {SUPPORTED_AUGMENT})"),
      ((d.get("mixup_alpha") or 0) > 0 or (d.get("cutmix_alpha") or 0) > 0, "MixUp/CutMix"),
      (config.optim.schedule not in SUPPORTED_SCHEDULES, f"optim.schedule={config.optim.schedule!r}"),
      (config.get("freeze", "full") != "full", f"freeze={config.freeze!r} (only 'full')"),
      (bool(config.init.get("checkpoint")), "init.checkpoint (random init only)"),
      (bool(config.get("num_train_steps")), "num_train_steps (epochs only)"),
  ]
  bad = [why for failed, why in problems if failed]
  if bad:
    raise Unsupported(f"the PyTorch twin does not reproduce {bad[0]}")


# ---- Data. -----------------------------------------------------------------------------------

def load_split(config: ml_collections.ConfigDict, split: str) -> tuple[torch.Tensor, torch.Tensor]:
  """(uint8 [N, H, W, 3], int64 [N]) of a split, read once into memory through the data layer."""
  from jax_resnets.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.make_source(config.dataset, split)
  size = config.dataset.get("image_size") or sources.spec(config.dataset).image_size
  images, labels = [], []
  for i in range(len(source)):
    element = source[i]
    images.append(data_augment.center_crop_resize(np.asarray(element["image"], np.uint8), size))
    labels.append(int(element["label"]))
  return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def augment(images: torch.Tensor, names, gen: torch.Generator) -> torch.Tensor:
  """uint8 NHWC batch: zero-pad 4 + random crop back, and/or flip with probability 1/2."""
  n, h, w, _ = images.shape
  for name in names:
    if name == "crop":
      padded = F.pad(images, (0, 0, 4, 4, 4, 4))
      offsets = torch.randint(0, 9, (n, 2), generator=gen)
      images = torch.stack([padded[i, t:t + h, l:l + w] for i, (t, l) in enumerate(offsets.tolist())])
    elif name == "flip":
      flip = torch.rand(n, generator=gen) < 0.5
      images = torch.where(flip[:, None, None, None], images.flip(2), images)
  return images


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
  """uint8 NHWC -> float NCHW, (x / 255 - mean) / std."""
  x = images.permute(0, 3, 1, 2).float() / 255.0
  return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ---- Model, optimizer, schedule. ----------------------------------------------------------------

def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """torchvision's ResNet with torchvision's init (bench_torch.ResNet keeps torch's defaults)."""
  m = config.model
  model = bench_torch.ResNet(m.depth, num_classes, m.width, m.stem, tuple(m.disabled_skips))
  for module in model.modules():
    if isinstance(module, nn.Conv2d):
      nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
      nn.init.ones_(module.weight)
      nn.init.zeros_(module.bias)
  return model  # fc: nn.Linear's own default init.


def optimizer(cfg: ml_collections.ConfigDict, params) -> torch.optim.Optimizer:
  if cfg.name == "sgd":
    return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum or 0.0,
                           nesterov=bool(cfg.nesterov), weight_decay=cfg.weight_decay)
  return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(opt(cfg, "b1"), opt(cfg, "b2")), eps=1e-8,
                           weight_decay=cfg.weight_decay)


def learning_rate(cfg: ml_collections.ConfigDict, i: int, steps_per_epoch: int, total: int) -> float:
  """The rate of update i (0-based): linear warm-up from 0, then the schedule counted from its end."""
  lr, warmup = cfg.learning_rate, int(cfg.warmup_epochs * steps_per_epoch)
  if i < warmup:
    return lr * i / warmup
  t = i - warmup
  if cfg.schedule == "cosine":
    span = max(total, warmup + 1) - warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
  if cfg.schedule == "step":
    return lr * opt(cfg, "decay_factor") ** sum(t >= int(e * steps_per_epoch) for e in opt(cfg, "decay_epochs"))
  if cfg.schedule == "cosine_restarts":
    length = opt(cfg, "restart_epochs") * steps_per_epoch
    while t >= int(length):
      t, length = t - int(length), length * opt(cfg, "restart_mult")
    return lr * 0.5 * (1 + math.cos(math.pi * t / int(length)))
  return lr


# ---- Training. ---------------------------------------------------------------------------------

def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, mean, std) -> float:
  model.eval()
  correct = 0
  with torch.inference_mode():
    for s in range(0, len(labels), batch):
      logits = model(normalise(images[s:s + batch], mean, std))
      correct += int((logits.argmax(1) == labels[s:s + batch]).sum())
  return correct / len(labels)


def train_epoch(model, optim, data, config, gen: torch.Generator, step: int, plan: tuple[int, int]) -> int:
  """One epoch of drop-last shuffled batches; returns the global step after it."""
  images, labels, mean, std = data
  spe, total = plan
  order = torch.randperm(len(labels), generator=gen)
  model.train()
  for b in range(spe):
    idx = order[b * config.batch_size:(b + 1) * config.batch_size]
    x = normalise(augment(images[idx], config.dataset.augment, gen), mean, std)
    for group in optim.param_groups:
      group["lr"] = learning_rate(config.optim, step, spe, total)
    optim.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), labels[idx], label_smoothing=config.label_smoothing).backward()
    optim.step()
    step += 1
  return step


def train(config: ml_collections.ConfigDict, seed: int, train_data=None, test_data=None) -> dict:
  """{'accuracy': [test accuracy after each epoch], 'wall_time_s': train + eval seconds}."""
  from jax_resnets.data import sources  # pylint: disable=g-import-not-at-top
  check(config)
  spec = sources.spec(config.dataset)
  train_data = train_data or load_split(config, config.dataset.train_split)
  test_data = test_data or load_split(config, config.dataset.eval_split)
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  model = build_model(config, spec.num_classes)
  optim = optimizer(config.optim, model.parameters())
  spe = len(train_data[1]) // config.batch_size
  plan, step, curve = (spe, config.num_epochs * spe), 0, []
  t0 = time.perf_counter()
  for _ in range(config.num_epochs):
    step = train_epoch(model, optim, (*train_data, spec.mean, spec.std), config, gen, step, plan)
    curve.append(accuracy(model, *test_data, config.batch_size, spec.mean, spec.std))
  return {"accuracy": curve, "wall_time_s": time.perf_counter() - t0, "steps": step}
