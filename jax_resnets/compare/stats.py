"""95% intervals for comparing accuracies, and the verdict they allow.

A difference between two settings is only called when its interval excludes 0: over seeds
(Welch's t interval of the difference of means) when both settings have >= 2 runs that
differ only in `seed`, else a paired bootstrap over test examples when both runs have
per-example predictions of the same examples. Without either there is no interval and no
winner is named, except that identical accuracies are a tie whatever the noise.
"""
import dataclasses
import math

import numpy as np

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000
EQUAL = 5e-5  # Accuracies closer than this (0.005 points, below the report's precision) are equal.


@dataclasses.dataclass
class Difference:
  """a - b with its interval (lo, hi are None when there is none) and how it was made."""
  value: float
  lo: float | None
  hi: float | None
  method: str

  @property
  def verdict(self) -> str:
    """'a', 'b', 'tie' or 'no interval'."""
    if self.lo is None:
      return "tie" if abs(self.value) < EQUAL else "no interval"
    if self.lo <= 0 <= self.hi or abs(self.value) < EQUAL:
      return "tie"
    return "a" if self.lo > 0 else "b"


def t_quantile(df: float) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def mean_interval(values) -> tuple[float, float | None, float | None]:
  """(mean, lo, hi): Student's t interval of the mean; no interval from a single value."""
  x = np.asarray(values, float)
  mean = float(x.mean())
  if x.size < 2:
    return mean, None, None
  half = t_quantile(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
  return mean, mean - half, mean + half


def welch(a, b) -> Difference:
  """Interval of mean(a) - mean(b) over independent runs (seeds), Welch-Satterthwaite df."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  d = float(a.mean() - b.mean())
  if va + vb == 0:
    return Difference(d, d, d, f"seeds (n={a.size}, {b.size})")
  df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  half = t_quantile(df) * math.sqrt(va + vb)
  return Difference(d, d - half, d + half, f"seeds (n={a.size}, {b.size})")


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0) -> Difference:
  """Percentile interval of accuracy(a) - accuracy(b) resampling the same test examples for both."""
  diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
  rng, n, samples = np.random.default_rng(seed), diff.size, []
  for start in range(0, NUM_RESAMPLES, 200):
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(200, NUM_RESAMPLES - start))
    samples.append(counts @ diff / n)
  tail = 50 * (1 - CONFIDENCE)
  lo, hi = np.percentile(np.concatenate(samples), [tail, 100 - tail])
  return Difference(float(diff.mean()), float(lo), float(hi), f"bootstrap over {n} test examples")


def difference(a_values, b_values, a_correct=None, b_correct=None) -> Difference:
  """a - b with the best interval the runs allow (see module doc)."""
  d = float(np.mean(a_values) - np.mean(b_values))
  if len(a_values) >= 2 and len(b_values) >= 2:
    return welch(a_values, b_values)
  if a_correct is not None and b_correct is not None and len(a_correct) == len(b_correct):
    return paired_bootstrap(a_correct, b_correct)
  return Difference(d, None, None, "none (one run per setting, no per-example predictions)")
