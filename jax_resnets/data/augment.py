"""Numpy augmentations, run inside grain workers, deterministic per seed.

Per-example: each takes an HWC uint8 image and a `np.random.Generator` (grain's
`random_map` supplies one derived from the pipeline seed and the element's position) and
returns an HWC uint8 image of the same size. Horizontal flips only: nothing here flips
vertically (faces stay upright).

Per-batch: `MixBatch` applies MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) to a
whole batch and turns `label` into soft targets [B, C] float32.
"""
import dataclasses

import numpy as np
from PIL import Image


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Central square crop, then (antialiased bilinear) resize to `size` x `size`."""
  h, w = image.shape[:2]
  if h == w == size:
    return image
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  square = image[top:top + side, left:left + side]
  if side == size:
    return square
  return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
  """Zero-pad by `padding` pixels, then crop back to the original size (CIFAR recipe)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, 2)
  return padded[top:top + h, left:left + w]


def random_horizontal_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, scale=(0.25, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style crop: random area fraction in `scale`, aspect in `ratio`, resized back.

  `scale` starts at 0.25 rather than torchvision's 0.08 because our images are 32-128 px.
  """
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = int(round(np.sqrt(area / aspect))), int(round(np.sqrt(area * aspect)))
    if 0 < ch <= h and 0 < cw <= w:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:  # Fallback: the whole image.
    ch, cw, top, left = h, w, 0, 0
  crop = image[top:top + ch, left:left + cw]
  return np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR))


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4) -> np.ndarray:
  """Brightness, contrast and saturation scaled by factors drawn from [1 - s, 1 + s]."""
  b, c, s = rng.uniform(1 - np.array([brightness, contrast, saturation]), 1 + np.array(
      [brightness, contrast, saturation]))
  x = image.astype(np.float32) * b
  gray = x @ np.float32([0.299, 0.587, 0.114])
  x = (x - gray.mean()) * c + gray.mean()
  gray = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]
  x = (x - gray) * s + gray
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_rotation(image: np.ndarray, rng: np.random.Generator, degrees: float = 10.0) -> np.ndarray:
  """Rotation by a uniform angle in [-degrees, degrees] about the centre, zero fill."""
  angle = rng.uniform(-degrees, degrees)
  return np.asarray(Image.fromarray(image).rotate(angle, Image.BILINEAR))


AUGMENTATIONS = {
    "crop": pad_and_random_crop,
    "flip": random_horizontal_flip,
    "random_resized_crop": random_resized_crop,
    "color_jitter": color_jitter,
    "rotate": random_rotation,
}


def apply(names, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Applies the named augmentations in order."""
  for name in names:
    image = AUGMENTATIONS[name](image, rng)
  return image


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]


def cutmix_box(rng: np.random.Generator, h: int, w: int, lam: float) -> tuple[int, int, int, int]:
  """A box covering ~(1 - lam) of the image, centred uniformly (clipped at the borders)."""
  cut = np.sqrt(1.0 - lam)
  ch, cw = int(h * cut), int(w * cut)
  cy, cx = rng.integers(0, h), rng.integers(0, w)
  top, bottom = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
  left, right = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
  return int(top), int(bottom), int(left), int(right)


@dataclasses.dataclass(frozen=True)
class MixBatch:
  """MixUp / CutMix on a batch of normalised images; `label` becomes soft [B, C] float32.

  With probability `prob` a batch is mixed (else its labels are just one-hot, so shapes stay
  fixed for jit); when both alphas are > 0, MixUp and CutMix are chosen with equal chance.
  Each example is mixed with the batch in reverse order (as timm does).
  """
  num_classes: int
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0

  def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
    labels = one_hot(batch["label"], self.num_classes)
    images = batch["image"]
    alphas = [a for a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a[1] > 0]
    if alphas and rng.random() < self.prob:
      kind, alpha = alphas[rng.integers(len(alphas))]
      lam = float(rng.beta(alpha, alpha))
      if kind == "mixup":
        images = lam * images + (1 - lam) * images[::-1]
      else:
        h, w = images.shape[1:3]
        top, bottom, left, right = cutmix_box(rng, h, w, lam)
        images = images.copy()
        images[:, top:bottom, left:right] = images[::-1, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
      labels = lam * labels + (1 - lam) * labels[::-1]
    return {**batch, "image": images.astype(np.float32), "label": labels.astype(np.float32)}
