"""Bootstrap intervals over test examples, shared by the CIE report (and reusable by other studies).

A resample draws N of the N test examples with replacement. It is represented by how often
each example was drawn (multinomial weights [B, N]) instead of by indices, so a statistic
built from sums over examples is one matrix product per chunk of resamples, memory stays
at chunk x N, and the same weights can be applied to several per-example arrays at once.
That is what makes an interval *paired*: a difference between two populations computed
inside one statistic sees the same drawn examples on both sides, so the variation the two
share (hard examples are hard for both) cancels instead of widening the interval.

Intervals are percentile intervals: approximate when few examples carry the statistic,
which is why callers withhold rates with few positives / negatives (see MIN_COUNT).
"""
import warnings

import numpy as np

NUM_RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
MIN_COUNT = 10  # Fewer examples than this behind a rate: too few to give it an interval.


def resample_weights(n: int, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """[num_resamples, n] counts of each example in a resample (each row sums to n).

  float32 (counts are small integers, exact): a statistic that passes float32 arrays gets a
  float32 matrix product, ~4x faster than float64 on CPU; float64 arrays still upcast.
  """
  return rng.multinomial(n, np.full(n, 1.0 / n), size=num_resamples).astype(np.float32)


def resample(statistic, arrays, num_resamples: int = NUM_RESAMPLES, seed: int = SEED,
             chunk: int = 200) -> np.ndarray:
  """[num_resamples, ...] values of statistic(weights, *arrays) over bootstrap resamples.

  `arrays` hold one value per test example on their last axis (all the same N); weights
  has shape [b, N]. The same `seed` gives the same resamples for any statistic, so two
  calls with one seed are paired, and two different seeds are not.
  """
  n = np.shape(arrays[0])[-1]
  rng = np.random.default_rng(seed)
  out = []
  with np.errstate(divide="ignore", invalid="ignore"):  # A resample may miss a small group: NaN.
    for start in range(0, num_resamples, chunk):
      out.append(statistic(resample_weights(n, min(chunk, num_resamples - start), rng), *arrays))
  return np.concatenate(out)


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple:
  """(lo, hi) percentile interval along axis 0, ignoring resamples where it was undefined."""
  tail = 50 * (1 - confidence)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN columns: undefined, stay NaN.
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
  return lo, hi


def bootstrap(statistic, arrays, num_resamples: int = NUM_RESAMPLES, seed: int = SEED,
              confidence: float = CONFIDENCE) -> tuple:
  """(point, lo, hi) of statistic(weights, *arrays); the point estimate uses weights of 1.

  statistic(weights, *arrays) must accept weights [b, N] and [N] (all ones) and reduce the
  example axis, e.g. `weights @ x.T` for per-example values x [..., N]. Put every quantity
  that should be paired (a population and its baseline) into one statistic.
  """
  n = np.shape(arrays[0])[-1]
  with np.errstate(divide="ignore", invalid="ignore"):
    point = statistic(np.ones(n), *arrays)
  lo, hi = interval(resample(statistic, arrays, num_resamples, seed), confidence)
  return point, lo, hi


def excludes(lo, hi, value: float) -> np.ndarray:
  """Whether the interval [lo, hi] lies strictly on one side of `value` (NaN: False)."""
  lo, hi = np.asarray(lo), np.asarray(hi)
  return (lo > value) | (hi < value)


def partition(groups: np.ndarray) -> tuple:
  """(cells [P, N] float32 0/1, membership [P, G] float32) of possibly overlapping groups [G, N].

  Examples that belong to the same groups form one cell. A (weighted) sum over a group is
  the sum over its cells, `cell_sums @ membership`, so a statistic over many overlapping
  groups (Male, Young, Male x Young, each x label) needs P matrix columns, not G.
  """
  membership, inverse = np.unique(np.asarray(groups, bool).T, axis=0, return_inverse=True)
  cells = np.asarray(inverse).reshape(-1)[None] == np.arange(len(membership))[:, None]
  return cells.astype(np.float32), membership.astype(np.float32)
