"""CIE selection and subgroup metrics on hand-built populations and tables."""
import math

import numpy as np

from jax_resnets.data import celeba
from jax_resnets.studies.celeba_cie import cie
from jax_resnets.studies.celeba_cie import subgroups

BASELINE = np.array([[1, 0, 1, 1, 0, 1],
                     [1, 0, 1, 1, 0, 1],
                     [1, 0, 0, 1, 0, 1],
                     [1, 0, 0, 0, 1, 1]])  # Modal: 1, 0, tie -> 0, 1, 0, 1.
COMPRESSED = np.array([[0, 0, 1, 1, 0, 1],
                       [0, 0, 1, 1, 0, 1],
                       [0, 0, 1, 0, 0, 1],
                       [0, 1, 0, 0, 1, 1]])  # Modal: 0, 0, 1, tie -> 0, 0, 1.


def test_modal_cie_with_documented_tie_break():
  np.testing.assert_array_equal(cie.modal_labels(BASELINE), [1, 0, 0, 1, 0, 1])
  np.testing.assert_array_equal(cie.modal_labels(COMPRESSED), [0, 0, 1, 0, 0, 1])
  assert set(np.flatnonzero(cie.modal_cie(BASELINE, COMPRESSED))) == {0, 2, 3}


def test_taxicab_cie_ranks_by_l1_distance():
  np.testing.assert_allclose(cie.taxicab_distance(BASELINE, COMPRESSED), [2.0, 0.5, 0.5, 0.5, 0.0, 0.0])
  # Quota 3: the largest distance, then equal distances in example order.
  assert set(np.flatnonzero(cie.taxicab_cie(BASELINE, COMPRESSED, 0.5))) == {0, 1, 2}
  # Quota 6, but zero distance is never CIE.
  assert set(np.flatnonzero(cie.taxicab_cie(BASELINE, COMPRESSED, 1.0))) == {0, 1, 2, 3}
  assert set(np.flatnonzero(cie.taxicab_cie(BASELINE, COMPRESSED, 1 / 6))) == {0}
  # Populations of different sizes compare distributions, not counts.
  np.testing.assert_allclose(cie.taxicab_distance(BASELINE[:2], COMPRESSED)[0], 2.0)


def attributes_table(male, young):
  a = np.zeros((len(male), 40), np.int32)
  a[:, celeba.ATTRIBUTES.index("Male")] = male
  a[:, celeba.ATTRIBUTES.index("Young")] = young
  return a


MALE = [1, 1, 1, 1, 0, 0, 0, 0]
YOUNG = [1, 1, 0, 0, 1, 1, 0, 0]
LABELS = np.array([1, 1, 0, 0, 1, 0, 1, 0])
PREDS = np.array([[1, 0, 1, 0, 1, 0, 0, 0],    # TP FN FP TN | TP TN FN TN
                  [1, 0, 1, 0, 1, 1, 0, 0]])   # Same, but example 5 becomes a FP.


def test_binary_metrics_by_hand():
  m = subgroups.binary_metrics(LABELS, PREDS[0])
  assert (m["accuracy"], m["precision"], m["recall"], m["fpr"], m["fnr"]) == (5 / 8, 2 / 3, 0.5, 0.25, 0.5)
  assert math.isclose(m["f1"], 2 * 2 / (2 * 2 + 1 + 2)) and m["error"] == 3 / 8


def test_subgroup_metrics_on_hand_built_table():
  table = subgroups.subgroup_metrics(LABELS, PREDS, attributes_table(MALE, YOUNG))
  assert list(table) == list(subgroups.SUBGROUPS)
  male, female = table["Male"], table["not Male"]
  assert (male["error"], male["fpr"], male["fnr"], male["precision"]) == (0.5, 0.5, 0.5, 0.5)
  assert female["fnr"] == 0.5 and female["recall"] == 0.5
  assert female["fpr"] == np.mean([0.0, 1 / 2])          # Model 2's FP on example 5.
  assert female["precision"] == np.mean([1.0, 0.5])
  assert math.isclose(table["Young"]["fnr"], 1 / 3) and table["Young"]["fpr"] == np.mean([0.0, 1.0])
  assert table["not Young"]["fnr"] == 1.0 and table["not Young"]["f1"] == 0.0
  assert table["Male, not Young"]["fpr"] == 0.5 and math.isnan(table["Male, not Young"]["fnr"])
  assert table["not Male, not Young"]["count"] == 2 and table["not Male, not Young"]["positives"] == 1


def test_over_indexing():
  out = subgroups.over_indexing(np.array([1, 1, 1, 0, 0, 0, 0, 0], bool), attributes_table(MALE, YOUNG))
  assert out["Male"]["over_index"] == 2.0 and out["not Male"]["over_index"] == 0.0
  assert math.isclose(out["Young"]["share_of_cie"], 2 / 3) and out["Young"]["over_index"] == (2 / 3) / 0.5
  assert out["Male"]["fraction_cie"] == 0.75
