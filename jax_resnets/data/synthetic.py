"""Synthetic twins of the real datasets: same features, learnable, offline, deterministic.

Every example is generated from `(seed, split, index)` alone, so a source is a tiny
picklable object that grain workers can index in any order.

Visual signal: each class owns a smooth colour prototype (a 4x4x3 grid upsampled to the
image size); an example is its class prototype blended with per-example noise and a
random shift. A ResNet separates the classes within a few hundred steps.
"""
import dataclasses
import functools

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



# --- CelebA twin (used by the compression-bias study; schema in jax_resnets/data/celeba.py) ---
#
# Why the twin can show compression bias (Hooker et al. 2020). The paper finds that pruning
# "cannibalises" the long tail: a compressed network keeps its accuracy on the common cases and
# loses the rare, atypical ones first. The twin plants one such tail and nothing else. Blond_Hair
# is common and loud among women (24%; long hair: a cap plus bands beside the face, ~27% of the
# image in blond) and rare and quiet among men (2%, as in CelebA; short hair: a thin cap, ~7% of
# the image, the same colour). Backgrounds take any colour, so "some yellow pixels" is not enough:
# the network has to read colour in the hair region, and for men from a handful of pixels, under a
# prior of 2% (P(Blond | Male)) that says "not blond". A dense ResNet has the capacity to learn both
# cues; a network pruned hard spends its few remaining weights where the loss is, keeps the loud
# majority cue and falls back on the prior for men: blond men's false-negative rate rises and they
# over-index among the compressed population's CIE, while overall accuracy barely moves. The
# generator knows nothing about compression: it renders attributes; the effect (or its absence)
# comes from training and pruning (tests/test_cie_twin.py checks its direction).

# Approximate CelebA prevalences of the attributes the twin draws independently.
_CELEBA_RATES = {
    "Arched_Eyebrows": 0.27, "Attractive": 0.51, "Bags_Under_Eyes": 0.20, "Bangs": 0.15,
    "Big_Lips": 0.24, "Big_Nose": 0.23, "Blurry": 0.05, "Bushy_Eyebrows": 0.14, "Chubby": 0.06,
    "Double_Chin": 0.05, "Eyeglasses": 0.07, "High_Cheekbones": 0.45, "Mouth_Slightly_Open": 0.48,
    "Narrow_Eyes": 0.12, "Oval_Face": 0.28, "Pale_Skin": 0.04, "Pointy_Nose": 0.28,
    "Receding_Hairline": 0.08, "Rosy_Cheeks": 0.07, "Smiling": 0.48, "Straight_Hair": 0.21,
    "Wavy_Hair": 0.32, "Wearing_Earrings": 0.19, "Wearing_Hat": 0.05, "Wearing_Necklace": 0.12,
    "Wearing_Necktie": 0.07,
}
# Hair colours (RGB), the same for both sexes; "other" is an unnamed dark colour (no hair attribute).
_HAIR_RGB = {"Blond_Hair": (225, 195, 100), "Black_Hair": (30, 25, 25), "Brown_Hair": (105, 70, 40),
             "Gray_Hair": (160, 160, 165), "other": (75, 55, 40)}
_HAIR_NAMES = ("Blond_Hair", "Black_Hair", "Brown_Hair", "Gray_Hair", "Bald")
_CACHE_SIZE = 1 << 15  # Rendered examples kept per process (~100 MB at 32 px).


def celeba_attributes(rng: np.random.Generator) -> dict:
  """Draws one coherent attribute set with CelebA-like marginals and its planted imbalance.

  P(Male) = 0.42; P(Young | Male) = 0.66, P(Young | female) = 0.86; P(Blond | Male) = 0.02,
  P(Blond | female) = 0.24 (CelebA: Blond_Hair is ~2% of males and ~24% of females).
  Hair colours are exclusive; Gray is likelier when not Young; beards only on males,
  make-up and lipstick only on females.
  """
  a = {name: int(rng.random() < rate) for name, rate in _CELEBA_RATES.items()}
  male = int(rng.random() < 0.42)
  young = int(rng.random() < (0.66 if male else 0.86))
  if rng.random() < (0.02 if male else 0.24):
    hair = "Blond_Hair"
  else:
    names = ["Black_Hair", "Brown_Hair", "Gray_Hair", "Bald", "other"]
    weights = np.array([0.36, 0.32, 0.03 if young else 0.30, 0.06 * male, 0.2])
    hair = names[int(rng.choice(5, p=weights / weights.sum()))]
  beard = bool(male and rng.random() < 0.35)
  a.update({h: int(h == hair) for h in _HAIR_NAMES})
  a.update(Male=male, Young=young, No_Beard=int(not beard),
           Goatee=int(beard and rng.random() < 0.4), Mustache=int(beard and rng.random() < 0.3),
           Sideburns=int(beard and rng.random() < 0.4), **{"5_o_Clock_Shadow": int(male and rng.random() < 0.25)},
           Heavy_Makeup=int(not male and rng.random() < 0.6), Wearing_Lipstick=int(not male and rng.random() < 0.75))
  if male:
    a.update(Wearing_Earrings=int(rng.random() < 0.03))
  return a


def _ellipse(yy, xx, cy, cx, ry, rx):
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0


def hair_colour(a: dict, rng: np.random.Generator) -> np.ndarray:
  """RGB of the hair: the named colour, jittered per example."""
  rgb = _HAIR_RGB[next((h for h in _HAIR_RGB if a.get(h)), "other")]
  return np.clip(np.array(rgb, np.float32) + rng.normal(0, 18, 3), 0, 255)


def hair_mask(a: dict, yy, xx, cy, cx, ry, rx, face) -> np.ndarray:
  """Women: a cap and long hair beside the face to the bottom edge; men: a thin cap (short hair)."""
  if a["Male"]:
    return _ellipse(yy, xx, cy - 0.08, cx, ry * 1.05, rx * 1.15) & (yy < cy - 0.45 * ry)
  cap = _ellipse(yy, xx, cy - 0.08, cx, ry * 1.05, rx * 1.2) & (yy < cy - 0.25 * ry)
  return cap | ((np.abs(xx - cx) < rx * 1.35) & (yy > cy - 0.3) & ~face)


def draw_face(a: dict, rng: np.random.Generator, size: int) -> np.ndarray:
  """Renders attributes as a cartoon face, float32 [size, size, 3] in [0, 255].

  Visible cues: hair colour in the hair region (hair_mask: women's hair is a large area, men's a
  thin cap, so a blond man shows a quarter of a blond woman's blond pixels); Male: wider face, short hair, darker jaw
  if bearded; not Young: forehead wrinkle stripes and less saturated skin; plus eyeglasses,
  smile, hat, lipstick, pale skin, blur. Face position, scale and background vary per example.
  """
  yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
  cy, cx = rng.uniform(-0.08, 0.08, 2)
  scale = rng.uniform(0.9, 1.1)
  ry, rx = 0.55 * scale, (0.46 if a["Male"] else 0.38) * scale
  img = np.ones((size, size, 3), np.float32) * rng.uniform(40, 215, 3).astype(np.float32)
  face = _ellipse(yy, xx, cy + 0.05, cx, ry, rx)
  if not a["Bald"]:
    img[hair_mask(a, yy, xx, cy, cx, ry, rx, face)] = hair_colour(a, rng)
  skin = np.array([225, 185, 160] if a["Young"] else [195, 170, 160], np.float32)
  skin = skin * (1.12 if a["Pale_Skin"] else 1.0) + rng.normal(0, 10, 3)
  img[face] = np.clip(skin, 0, 255)
  if not a["Young"]:  # Wrinkles: dark stripes across the forehead and under the eyes.
    stripes = face & (np.sin(yy * size * 0.9) > 0.5) & ((yy < cy - 0.15) | (np.abs(yy - cy - 0.05 * ry) < 0.08))
    img[stripes] *= 0.7
  if not a["No_Beard"]:
    img[face & (yy > cy + 0.3 * ry)] *= 0.55
  eyes = _ellipse(yy, xx, cy - 0.05, cx - rx * 0.4, 0.06, 0.08) | _ellipse(yy, xx, cy - 0.05, cx + rx * 0.4, 0.06, 0.08)
  img[eyes] = (20, 20, 30)
  if a["Eyeglasses"]:
    img[face & (np.abs(yy - cy + 0.05) < 0.03)] = (10, 10, 10)
  mouth_y = cy + 0.3 + (0.06 * xx ** 2 * -8 if a["Smiling"] else 0)
  img[face & (np.abs(yy - mouth_y) < 0.035) & (np.abs(xx - cx) < rx * 0.45)] = (
      (200, 30, 60) if a["Wearing_Lipstick"] else (120, 50, 50))
  if a["Wearing_Hat"]:
    img[yy < cy - ry * 0.8] = (60, 60, 150)
  img += rng.normal(0, 12, img.shape).astype(np.float32)
  if a["Blurry"]:
    img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
  return np.clip(img, 0, 255)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def celeba_example(seed: int, split: str, index: int, image_size: int) -> tuple:
  """(image uint8, attributes int32 [40]) of one twin example, read-only and cached: a population
  of K models reads every training image K times an epoch, and rendering is the costly part."""
  from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([seed, 4243, SPLIT_IDS[split], index])
  a = celeba_attributes(rng)
  attributes = np.array([a[name] for name in celeba.ATTRIBUTES], np.int32)
  image = draw_face(a, rng, image_size).astype(np.uint8)
  image.flags.writeable = attributes.flags.writeable = False
  return image, attributes


@dataclasses.dataclass(frozen=True)
class SyntheticCelebA:
  """Random-access CelebA twin: {'image' uint8 [S, S, 3], 'attributes' int32[40], 'label', 'id'}.

  Deterministic per (seed, split, index); drawn directly at `image_size`. `label` is
  `attributes[ATTRIBUTES.index(label_attribute)]`.
  """
  num_examples: int
  image_size: int = 64
  split: str = "train"
  seed: int = 0
  label_attribute: str = "Blond_Hair"

  def __post_init__(self):
    from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
    if self.label_attribute not in celeba.ATTRIBUTES:
      raise ValueError(f"dataset.label_attribute: unknown CelebA attribute {self.label_attribute!r}")

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict:
    from jax_resnets.data import celeba  # pylint: disable=g-import-not-at-top
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    image, attributes = celeba_example(self.seed, self.split, index, self.image_size)
    label = attributes[celeba.ATTRIBUTES.index(self.label_attribute)]
    return {"image": image, "attributes": attributes, "label": np.int32(label), "id": np.int32(index)}
