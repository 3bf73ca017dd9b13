"""Verification metrics on hand-built score sets with known answers; matching and the n000000 rule."""
import numpy as np
import pytest

from jax_resnets.studies.faces import verification as V


def metrics(genuine, impostor):
  scores = np.concatenate([genuine, impostor])
  labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
  fpr, tpr, _ = V.roc_curve(scores, labels)
  return fpr, tpr


def test_roc_auc_and_eer_on_a_hand_built_set():
  # Ranking G G I G I I: the ROC passes (0,1/3) (0,2/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1).
  fpr, tpr = metrics([0.9, 0.8, 0.4], [0.7, 0.3, 0.2])
  np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
  assert V.auc(fpr, tpr) == pytest.approx(8 / 9)  # 8 of the 9 (genuine, impostor) pairs ordered right.
  # A threshold in (0.4, 0.7) accepts 1 of 3 impostors and rejects 1 of 3 genuines.
  assert V.equal_error_rate(fpr, tpr) == pytest.approx(1 / 3)


def test_separated_inverted_and_tied_scores():
  fpr, tpr = metrics([0.9, 0.8], [0.1, 0.2, 0.3])
  assert V.auc(fpr, tpr) == 1.0 and V.equal_error_rate(fpr, tpr) == 0.0 and V.tar_at_far(fpr, tpr, 1e-4) == 1.0
  fpr, tpr = metrics([0.1, 0.2], [0.8, 0.9])
  assert V.auc(fpr, tpr) == 0.0 and V.equal_error_rate(fpr, tpr) == pytest.approx(1.0)
  fpr, tpr = metrics([0.5, 0.5], [0.5, 0.5])
  assert V.auc(fpr, tpr) == pytest.approx(0.5) and V.equal_error_rate(fpr, tpr) == pytest.approx(0.5)


def test_auc_equals_mann_whitney_on_random_scores():
  rng = np.random.default_rng(0)
  g, i = np.round(rng.normal(1, 1, 60), 1), np.round(rng.normal(0, 1, 80), 1)  # rounding makes ties.
  fpr, tpr = metrics(g, i)
  mann_whitney = np.mean((g[:, None] > i[None, :]) + 0.5 * (g[:, None] == i[None, :]))
  assert V.auc(fpr, tpr) == pytest.approx(mann_whitney)


def test_tar_at_far():
  impostor = np.arange(1000) / 1000  # 0.000 ... 0.999
  genuine = np.asarray([1.5, 1.2, 0.9985, 0.5, 0.3])
  fpr, tpr = metrics(genuine, impostor)
  assert V.tar_at_far(fpr, tpr, 1e-3) == pytest.approx(3 / 5)  # one impostor (0.999) may pass.
  assert V.tar_at_far(fpr, tpr, 1e-4) == pytest.approx(2 / 5)  # none may pass.


def test_no_match_rule_at_the_threshold_boundary():
  names = ["n000001", "n000002"]
  pred = V.predict(np.asarray([0, 1, 1]), np.asarray([0.5, np.nextafter(0.5, 0), 0.7]), names, threshold=0.5)
  assert list(pred) == ["n000001", V.NO_MATCH, "n000002"]


def test_choose_threshold_maximises_dev_accuracy():
  best_names = ["a", "b", "a", "c", "b"]
  scores = np.asarray([0.9, 0.8, 0.6, 0.4, 0.2])
  truth = ["a", "b", V.NO_MATCH, V.NO_MATCH, "b"]
  # Accept the top 2: rows 0,1 right, rows 2,3 right (rejected), row 4 wrong -> 4/5.
  threshold, accuracy = V.choose_threshold(best_names, scores, truth)
  assert threshold == pytest.approx(0.7) and accuracy == pytest.approx(0.8)
  assert V.verification_accuracy(V.predict(np.asarray([0, 1, 0, 2, 1]), scores, ["a", "b", "c"], threshold),
                                 truth) == pytest.approx(accuracy)
  _, reject_all = V.choose_threshold(["a"], np.asarray([0.3]), [V.NO_MATCH])
  assert reject_all == 1.0


def test_chunked_identity_scores_equal_brute_force():
  rng = np.random.default_rng(1)
  known, labels, queries = rng.normal(size=(23, 8)), rng.integers(0, 6, 23), rng.normal(size=(11, 8))
  labels[:6] = np.arange(6)
  kn, qn = V.l2_normalize(known), V.l2_normalize(queries)
  for mode in V.MODES:
    vectors, ids = V.gallery(known, labels, 6, mode)
    got = V.identity_scores(queries, vectors, ids, 6, chunk_size=4)
    if mode == "best":
      expected = np.stack([(qn @ kn[labels == k].T).max(1) for k in range(6)], 1)
    else:
      means = np.stack([kn[labels == k].mean(0) for k in range(6)])
      expected = qn @ V.l2_normalize(means).T
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pair_metrics_count_pairs_and_use_truth():
  scores = np.asarray([[0.9, 0.1], [0.2, 0.8], [0.3, 0.4]])
  out = V.pair_metrics(scores, np.asarray([0, 1, -1]))  # last image: nobody in the gallery.
  assert out["num_pairs"] == 6 and out["num_genuine_pairs"] == 2 and out["roc_auc"] == 1.0


def test_cross_validated_accuracy_uses_held_out_thresholds():
  # Fold 0 (even rows) alone would pick a threshold that rejects the odd rows' matches.
  names = ["a"] * 4
  scores = np.asarray([0.9, 0.6, 0.8, 0.7])
  truth = ["a", "a", V.NO_MATCH, "a"]
  # Even rows (0.9 a, 0.8 none) -> threshold 0.85: odd rows 0.6, 0.7 rejected -> both wrong.
  # Odd rows (0.6 a, 0.7 a) -> accept all (threshold 0.6): even rows 0.9 right, 0.8 wrong.
  assert V.cross_validated_accuracy(names, scores, truth) == pytest.approx(1 / 4)
  assert V.choose_threshold(names, scores, truth)[1] == pytest.approx(3 / 4)


def test_headline_is_held_out_when_the_in_sample_threshold_overfits():
  """Matched and unmatched similarities interleave, so the threshold chosen on all rows fits
  this sample's order (in-sample 4/6) and the same rule, held out, is worse (2/6)."""
  names = ["a"] * 6
  scores = np.asarray([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
  truth = ["a", V.NO_MATCH, "a", V.NO_MATCH, "a", V.NO_MATCH]
  out = V.dev_accuracies(names, scores, truth, folds=3)
  assert out["accuracy_in_sample"] == pytest.approx(4 / 6) and out["threshold_folds"] == 3
  # Fold {0, 3} (0.9 a, 0.6 none): the other rows (0.8 none, 0.7 a, 0.5 a, 0.4 none) pick
  # 0.45, which accepts 0.6 too: 1 of 2 right; folds {1, 4} and {2, 5}: 0 and 1 -> 2/6 in all.
  assert out["accuracy"] == pytest.approx(2 / 6) == V.cross_validated_accuracy(names, scores, truth, 3)
  assert out["accuracy"] < out["accuracy_in_sample"]
  fixed = V.dev_accuracies(names, scores, truth, folds=3, threshold=0.85)  # Not fitted on dev: held out.
  assert fixed["threshold"] == 0.85 and fixed["accuracy"] == pytest.approx(4 / 6)
  assert np.isnan(V.cross_validated_accuracy(["a"], np.asarray([0.5]), ["a"], folds=5))
