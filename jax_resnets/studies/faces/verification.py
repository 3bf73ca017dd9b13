"""Open-set face verification on embeddings (numpy): gallery, matching, threshold, ROC metrics.

Known identities form the gallery: the mean of their L2-normalised image embeddings
(`mode="mean"`, re-normalised), or every image (`mode="best"`: an identity scores its best
image). Each unknown image gets the cosine similarity to every identity, computed in
chunks of queries x gallery rows so a large gallery fits in memory. Its predicted identity
is the best match if that similarity is >= the threshold, else `n000000` (no match).

Metrics follow the 11-785 HW2P2 verification task: accuracy = the fraction of unknown
images given the right label (a known identity, or n000000 for people not in the gallery).
The threshold is fitted on the dev images, so the headline dev accuracy is held out (k-fold:
threshold chosen on k-1 folds, scored on the last); the in-sample score is kept, labelled.
On the (unknown image, known identity) pairs of the dev set, genuine = same person: ROC
AUC, EER and TAR at FAR 1e-3 / 1e-4. numpy has no ROC, so it is written out here (sklearn
is not a dependency); the tests check it on score sets with known answers.
"""
import numpy as np

NO_MATCH = "n000000"
MODES = ("mean", "best")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def gallery(embeddings: np.ndarray, labels: np.ndarray, num_identities: int, mode: str = "mean"):
  """(vectors [G, D], identity index of each row [G]) from the known images."""
  x, labels = l2_normalize(embeddings), np.asarray(labels)
  if mode == "best":
    return x, labels
  if mode != "mean":
    raise ValueError(f"verification gallery mode {mode!r} (known: {', '.join(MODES)})")
  sums = np.zeros((num_identities, x.shape[1]), np.float32)
  np.add.at(sums, labels, x)
  present = np.bincount(labels, minlength=num_identities) > 0
  return l2_normalize(sums[present]), np.flatnonzero(present)


def identity_scores(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, num_identities: int,
                    chunk_size: int = 1024) -> np.ndarray:
  """[N, num_identities] cosine of each query to each identity (max over its gallery rows).

  Only a (chunk_size x chunk_size) block of similarities exists at a time; identities
  without a gallery row score -inf.
  """
  q = l2_normalize(queries)
  out = np.full((len(q), num_identities), -np.inf, np.float32)
  for i in range(0, len(q), chunk_size):
    block = out[i:i + chunk_size]
    for j in range(0, len(vectors), chunk_size):
      sims = q[i:i + chunk_size] @ vectors[j:j + chunk_size].T
      np.maximum.at(block, (slice(None), ids[j:j + chunk_size]), sims)
  return out


def best_match(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(identity index, similarity) of each query's best match."""
  best = np.argmax(scores, axis=1)
  return best, scores[np.arange(len(scores)), best]


def predict(best_ids: np.ndarray, best_scores: np.ndarray, names, threshold: float) -> np.ndarray:
  """names[best id] where similarity >= threshold, else n000000."""
  matched = np.asarray(names, dtype=object)[best_ids]
  return np.where(np.asarray(best_scores) >= threshold, matched, NO_MATCH)


def verification_accuracy(predicted, truth) -> float:
  return float(np.mean(np.asarray(predicted, dtype=object) == np.asarray(truth, dtype=object)))


def choose_threshold(best_names, best_scores: np.ndarray, truth) -> tuple[float, float]:
  """The threshold with the best dev accuracy, and that accuracy.

  Sorting by similarity, accepting the top k is right for rows whose best match is the
  truth and rejecting the rest is right for n000000 rows: accuracy(k) is two cumulative
  sums. The threshold sits half-way between the last accepted and first rejected score.
  """
  order = np.argsort(-np.asarray(best_scores), kind="stable")
  s = np.asarray(best_scores, np.float64)[order]
  truth = np.asarray(truth, dtype=object)[order]
  right_if_accepted = (np.asarray(best_names, dtype=object)[order] == truth).astype(np.int64)
  right_if_rejected = (truth == NO_MATCH).astype(np.int64)
  accepted = np.concatenate([[0], np.cumsum(right_if_accepted)])  # k = 0..N accepted.
  rejected = np.concatenate([np.cumsum(right_if_rejected[::-1])[::-1], [0]])
  correct = accepted + rejected
  cuts = np.concatenate([[0], np.flatnonzero(s[1:] < s[:-1]) + 1, [len(s)]])  # between distinct scores.
  k = cuts[np.argmax(correct[cuts])]
  if k == 0:
    threshold = s[0] + 1e-6 if len(s) else 0.0
  elif k == len(s):
    threshold = s[-1]
  else:
    threshold = (s[k - 1] + s[k]) / 2
  return float(threshold), float(correct[k] / max(len(s), 1))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0); label 1 = genuine."""
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  s, y = np.asarray(scores, np.float64)[order], np.asarray(labels, bool)[order]
  last = np.concatenate([np.flatnonzero(s[1:] < s[:-1]), [len(s) - 1]])  # last index of each score.
  tps = np.cumsum(y)[last]
  fps = last + 1 - tps
  num_pos, num_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
  fpr = np.concatenate([[0.0], fps / num_neg])
  tpr = np.concatenate([[0.0], tps / num_pos])
  return fpr, tpr, np.concatenate([[np.inf], s[last]])


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
  """Trapezoidal area under the ROC curve (ties count one half, as Mann-Whitney)."""
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
  """Where the false-accept rate equals the false-reject rate (linear between ROC points)."""
  fnr = 1.0 - tpr
  i = int(np.argmax(fnr <= fpr))
  if i == 0:
    return float(fpr[0])
  a0, a1, b0, b1 = fpr[i - 1], fpr[i], fnr[i - 1], fnr[i]
  t = (b0 - a0) / ((a1 - a0) - (b1 - b0))
  return float(a0 + t * (a1 - a0))


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
  """Highest true-accept rate at a threshold whose false-accept rate is <= far."""
  return float(np.max(tpr[fpr <= far + 1e-12]))


def pair_labels(num_identities: int, truth_ids: np.ndarray) -> np.ndarray:
  """[N, K] genuine flags of every (unknown image, known identity) pair (truth -1: none genuine)."""
  truth_ids = np.asarray(truth_ids)
  return truth_ids[:, None] == np.arange(num_identities)[None, :]


def pair_metrics(scores: np.ndarray, truth_ids: np.ndarray) -> dict:
  """ROC AUC, EER, TAR@FAR 1e-3 / 1e-4 over all (image, identity) pairs with a gallery row."""
  genuine = pair_labels(scores.shape[1], truth_ids)
  present = np.isfinite(scores)
  fpr, tpr, _ = roc_curve(scores[present], genuine[present])
  return {"roc_auc": auc(fpr, tpr), "eer": equal_error_rate(fpr, tpr), "tar_at_far_1e-3": tar_at_far(fpr, tpr, 1e-3),
          "tar_at_far_1e-4": tar_at_far(fpr, tpr, 1e-4), "num_pairs": int(present.sum()),
          "num_genuine_pairs": int(genuine[present].sum())}


def cross_validated_accuracy(best_names, best_scores: np.ndarray, truth, folds: int = 2) -> float:
  """Held-out accuracy: k folds (interleaved rows), each scored at the threshold chosen on the
  other k-1, summed over folds. Unlike the accuracy at the threshold chosen on all of dev and
  scored on the same rows (in-sample, optimistic), no row helps choose its own threshold.

  `folds` is capped at the number of rows; with fewer than 2 rows there is nothing to hold
  out and the result is NaN.
  """
  best_names, truth = np.asarray(best_names, dtype=object), np.asarray(truth, dtype=object)
  best_scores, folds = np.asarray(best_scores), min(int(folds), len(truth))
  if folds < 2:
    return float("nan")
  right = 0
  for k in range(folds):
    held = np.arange(len(truth)) % folds == k
    threshold, _ = choose_threshold(best_names[~held], best_scores[~held], truth[~held])
    predicted = np.where(best_scores[held] >= threshold, best_names[held], NO_MATCH)
    right += int(np.sum(predicted == truth[held]))
  return right / len(truth)


def dev_accuracies(best_names, best_scores: np.ndarray, truth, folds: int = 5,
                   threshold: float | None = None) -> dict:
  """The dev accuracies of a verification run; `accuracy` is the held-out headline.

  threshold None: chosen on all of dev (that threshold labels the test images); `accuracy`
  is the k-fold held-out estimate, `accuracy_in_sample` the chosen threshold's score on the
  rows that chose it. A given threshold was not fitted on dev, so its dev score is held out.
  """
  chosen, in_sample = choose_threshold(best_names, best_scores, truth)
  out = {"accuracy_in_sample": in_sample, "accuracy_2fold": cross_validated_accuracy(best_names, best_scores, truth),
         "threshold_folds": min(int(folds), len(truth))}
  if threshold is None:
    return {**out, "threshold": chosen, "accuracy": cross_validated_accuracy(best_names, best_scores, truth, folds)}
  predicted = np.where(np.asarray(best_scores) >= threshold, np.asarray(best_names, dtype=object), NO_MATCH)
  return {**out, "threshold": float(threshold), "accuracy": verification_accuracy(predicted, truth)}
