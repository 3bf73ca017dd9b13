"""Synthetic twin of the faces data (VGGFace2 subset, HW2P2 layout): identities with visual signal.

Each identity owns a smooth colour prototype (as `synthetic.class_prototype`), drawn
inside a face-like ellipse over a per-example background. Splits mirror the real builder:
classification `train`/`dev`/`test` (label = identity), verification `known` (gallery
images of the first half of the identities, label = index among them), `unknown_dev`
(half known identities, half unseen ones with label -1 and identity n000000) and
`unknown_test` (unlabelled, label -1). `file_name` is what the Kaggle CSVs use.
"""
import dataclasses

import numpy as np

from jax_resnets.data.synthetic import SPLIT_IDS, class_prototype

SPLITS = {**SPLIT_IDS, "dev": 3, "known": 4, "unknown_dev": 5, "unknown_test": 6}
NO_MATCH = "n000000"


def identity_name(label: int) -> str:
  return f"n{label + 1:06d}"


def face_image(seed: int, identity: int, rng: np.random.Generator, size: int) -> np.ndarray:
  """Identity prototype inside an ellipse, random background, shift and noise; uint8."""
  yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
  cy, cx = rng.uniform(-0.1, 0.1, 2)
  face = ((yy - cy) / 0.8) ** 2 + ((xx - cx) / 0.62) ** 2 < 1.0
  image = np.ones((size, size, 3), np.float32) * rng.uniform(0, 255, 3).astype(np.float32)
  image[face] = class_prototype(seed, identity, size)[face]
  image += rng.normal(0, 20, image.shape).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class SyntheticFaces:
  """Random-access {'image', 'label', 'id', 'identity', 'file_name'}; deterministic per (seed, split, index)."""
  num_examples: int
  num_identities: int = 50
  image_size: int = 64
  split: str = "train"
  seed: int = 0

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"unknown faces split {self.split!r} (splits: {', '.join(SPLITS)})")

  def __len__(self) -> int:
    return self.num_examples

  def _identity(self, rng: np.random.Generator) -> tuple[int, int]:
    """(identity drawn, label): label -1 for unseen / unlabelled."""
    known = max(1, self.num_identities // 2)
    if self.split in ("train", "dev", "test", "validation"):
      identity = int(rng.integers(self.num_identities))
      return identity, identity
    if self.split == "known":
      identity = int(rng.integers(known))
      return identity, identity
    matched = rng.random() < 0.5
    identity = int(rng.integers(known)) if matched else self.num_identities + int(rng.integers(1000))
    return identity, (identity if matched and self.split == "unknown_dev" else -1)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, 8111, SPLITS[self.split], index])
    identity, label = self._identity(rng)
    name = identity_name(identity) if label >= 0 else (NO_MATCH if self.split == "unknown_dev" else "")
    return {"image": face_image(self.seed, identity, rng, self.image_size), "label": np.int32(label),
            "id": np.int32(index), "identity": name, "file_name": f"{index:05d}.jpg"}
