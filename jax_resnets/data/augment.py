"""Per-example numpy augmentations, run inside grain workers, deterministic per seed.

Each takes an HWC image and a `np.random.Generator` (grain's `random_map` supplies one
derived from the pipeline seed and the example's position) and returns an HWC image.
"""
import numpy as np


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
  """Zero-pad by `padding` pixels, then crop back to the original size (CIFAR recipe)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, 2)
  return padded[top:top + h, left:left + w]


def random_horizontal_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


AUGMENTATIONS = {
    "crop": pad_and_random_crop,
    "flip": random_horizontal_flip,
}


def apply(names, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Applies the named augmentations in order."""
  for name in names:
    image = AUGMENTATIONS[name](image, rng)
  return image
