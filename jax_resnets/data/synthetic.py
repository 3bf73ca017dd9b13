"""Synthetic twins of the real datasets: same features, learnable, offline, deterministic.

Every example is generated from `(seed, split, index)` alone, so a source is a tiny
picklable object that grain workers can index in any order.

Visual signal: each class owns a smooth colour prototype (a 4x4x3 grid upsampled to the
image size); an example is its class prototype blended with per-example noise and a
random shift. A ResNet separates the classes within a few hundred steps.
"""
import dataclasses

import numpy as np

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def class_prototype(seed: int, label: int, size: int) -> np.ndarray:
  """Smooth float32 [size, size, 3] pattern in [0, 255] for one class."""
  grid = np.random.default_rng([seed, 7919, label]).uniform(0, 255, (4, 4, 3))
  reps = -(-size // 4)
  return np.kron(grid, np.ones((reps, reps, 1)))[:size, :size].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticClassification:
  """Random-access source of {'image', 'label', 'id'} (+ 'coarse_label' if coarse_classes)."""
  num_examples: int
  num_classes: int
  image_size: int = 32
  split: str = "train"
  seed: int = 0
  signal: float = 0.6
  coarse_classes: int = 0

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
    label = int(rng.integers(self.num_classes))
    proto = np.roll(class_prototype(self.seed, label, self.image_size), rng.integers(-2, 3, 2), (0, 1))
    noise = rng.uniform(0, 255, proto.shape).astype(np.float32)
    image = np.clip(self.signal * proto + (1 - self.signal) * noise, 0, 255).astype(np.uint8)
    out = {"image": image, "label": np.int32(label), "id": np.int32(index)}
    if self.coarse_classes:
      out["coarse_label"] = np.int32(label * self.coarse_classes // self.num_classes)
    return out
