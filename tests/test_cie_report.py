"""Evidence in the CIE report: paired bootstrap intervals, withheld rates, findings, on hand-built tables."""
import json

import numpy as np
import pytest

from jax_resnets.data import celeba
from jax_resnets.studies.celeba_cie import report
from jax_resnets.studies.celeba_cie import stats
from jax_resnets.studies.celeba_cie import subgroups

CELL = 100  # Examples per Male x Young cell; half of them Blond.


def hand_built(male, young, labels):
  a = np.zeros((len(labels), 40), np.int64)
  a[:, celeba.ATTRIBUTES.index("Male")] = male
  a[:, celeba.ATTRIBUTES.index("Young")] = young
  a[:, celeba.ATTRIBUTES.index("Blond_Hair")] = labels
  return a


def balanced():
  """(labels, attributes): four Male x Young cells of CELL examples, labels alternating 1, 0."""
  male, young = np.repeat([1, 1, 0, 0], CELL), np.repeat([1, 0, 1, 0], CELL)
  labels = np.tile([1, 0], 2 * CELL)
  return labels, hand_built(male, young, labels)


def noisy(labels, rng, k=3, flip=0.1):
  """K models that are right except on a random `flip` of examples each."""
  return {s: np.where(rng.random(labels.size) < flip, 1 - labels, labels) for s in range(k)}


def results_of(analysis):
  """The fields of a study's results that write_report reads, around `analysis` (JSON round trip)."""
  levels = {l: {"kind": "baseline" if "cie" not in a else "pruning", "sparsity": 0.5 * ("cie" in a),
                "achieved_sparsity": 0.5 * ("cie" in a), "achieved_per_tensor": {"w": 0.5 * ("cie" in a)}}
            for l, a in analysis.items()}
  config = {"dataset": {"label_attribute": "Blond_Hair", "synthetic": True}, "cie": {"num_seeds": 3},
            "batch_size": 8, "pruning": {"scope": "per_tensor", "begin_step": 1, "end_step": 2, "frequency": 1}}
  results = {"analysis": analysis, "levels": levels, "config": config, "top_fraction": 0.1, "model": "m",
             "num_params": 1, "trainable_params": 1, "num_test": 4 * CELL, "total_steps": 2,
             "grid_level": list(analysis)[-1], "timing": {}}
  return json.loads(json.dumps(results))


def section(text: str, title: str) -> str:
  start = text.index(title)
  return text[start:text.index("\n## ", start + 1)]


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
  x = np.zeros(2000)
  x[:600] = 1  # p = 0.3 exactly.
  mean = lambda w, v: (w @ v) / w.sum(-1)
  point, lo, hi = stats.bootstrap(mean, (x,))
  half = 1.96 * np.sqrt(0.3 * 0.7 / 2000)  # 0.0201
  assert point == pytest.approx(0.3)
  assert lo == pytest.approx(0.3 - half, abs=0.003) and hi == pytest.approx(0.3 + half, abs=0.003)
  # Same seed, same resamples; another seed, other resamples.
  np.testing.assert_array_equal(stats.resample(mean, (x,), 50, seed=3), stats.resample(mean, (x,), 50, seed=3))
  assert not np.array_equal(stats.resample(mean, (x,), 50, seed=3), stats.resample(mean, (x,), 50, seed=4))


def test_paired_interval_is_narrower_than_unpaired_on_correlated_populations():
  rng = np.random.default_rng(0)
  base = (rng.random(2000) < 0.3).astype(float)
  comp = np.where(rng.random(2000) < 0.05, 1 - base, base)  # Errs where the baseline errs, mostly.
  mean = lambda w, v: (w @ v) / w.sum(-1)
  paired_lo, paired_hi = stats.interval(stats.resample(mean, (comp - base,)))
  unpaired_lo, unpaired_hi = stats.interval(stats.resample(mean, (comp,), seed=1)
                                            - stats.resample(mean, (base,), seed=2))
  assert paired_hi - paired_lo < 0.5 * (unpaired_hi - unpaired_lo)
  assert paired_lo <= np.mean(comp - base) <= paired_hi


def test_identical_populations_give_exactly_zero_deltas_and_findings_none(tmp_path):
  labels, attributes = balanced()
  base = noisy(labels, np.random.default_rng(0))
  table = report.PredictionTable(np.arange(labels.size), labels, attributes,
                                 {"baseline": base, "prune_0.5": {s: p.copy() for s, p in base.items()},
                                  "prune_0.9": {s: p.copy() for s, p in base.items()}})
  analysis = report.analyse(table)
  for g, row in analysis["prune_0.9"]["change_vs_baseline"]["subgroups"].items():
    for r in subgroups.RATES:
      assert row[f"{r}_ci"] == [0.0, 0.0] and row[f"{r}_significant"] is False, (g, r)
      assert report.delta_cell(row, r).endswith("n.s.")
  assert analysis["prune_0.9"]["cie"]["modal"]["over_index"]["Male"]["note"] == "undefined: no CIE"
  results = results_of(analysis)
  report.write_report(results, str(tmp_path / "report.md"))
  text = (tmp_path / "report.md").read_text()
  assert text.split("\n")[2] == "## Findings"
  findings = section(text, "## Findings")
  assert findings.count("significantly hurt: none") == 2
  assert findings.count("over-represented in: none") == 2
  assert "0 of 48 tested subgroup rate changes are significant rises" in findings


def test_population_wrong_on_one_subgroup_is_significantly_hurt_there_only(tmp_path):
  labels, attributes = balanced()
  base = noisy(labels, np.random.default_rng(1))
  target = subgroups.subgroup_masks(attributes)["not Male, not Young"]
  bad = {s: np.where(target, 1 - labels, p) for s, p in base.items()}
  table = report.PredictionTable(np.arange(labels.size), labels, attributes, {"baseline": base, "prune_0.9": bad})
  a = report.analyse(table)["prune_0.9"]
  change = a["change_vs_baseline"]["subgroups"]
  for g in ("not Male, not Young", "not Male", "not Young"):  # The subgroup and those that contain it.
    assert change[g]["error_significant"] and change[g]["error_ci"][0] > 0, g
    assert change[g]["fnr_significant"] and change[g]["fpr_significant"], g
  for g in ("Male", "Young", "Male, Young", "Male, not Young", "not Male, Young"):
    assert not any(change[g][f"{r}_significant"] for r in subgroups.RATES), g
  assert [h.split(" (")[0] for h in report.hurt(a)] == ["not Male", "not Young", "not Male, not Young"]
  assert report.hurt(a)[2].startswith(f"not Male, not Young (n={CELL}, positives={CELL // 2}): error +")
  # Every modal CIE lies in that subgroup: ~4x over-represented (it is a quarter of the test set).
  over = a["cie"]["modal"]["over_index"]
  assert over["not Male, not Young"]["significant"] and over["not Male, not Young"]["over_index_ci"][0] > 3
  assert over["Blond, not Male, not Young"]["significant"] and over["Male"]["over_index"] == 0
  assert [o.split(" ×")[0] for o in report.over_represented(a)] == [
      "not Male", "not Young", "not Male, not Young", "Blond, not Male", "Blond, not Male, not Young",
      "not Blond, not Male", "not Blond, not Male, not Young"]


def test_over_representation_in_proportion_is_not_significant():
  labels, attributes = balanced()
  masks = {**subgroups.subgroup_masks(attributes), **subgroups.cell_masks(attributes, labels)}
  every_fourth = np.arange(labels.size) % 4 < 2  # Half of every cell, Blond or not: in proportion.
  out = subgroups.over_index_intervals(every_fourth, masks)[0]
  assert set(out) == set(masks) and len(out) == 20  # 8 subgroups, 4 label x Male, 8 label x Male x Young.
  for g, row in out.items():
    assert row["over_index"] == pytest.approx(1.0) and row["ci"][0] < 1 < row["ci"][1], g
    assert row["significant"] is False and row["cie_in_group"] == row["n"] // 2


def test_too_few_positives_and_undefined_rates_are_withheld(tmp_path):
  male, young = np.repeat([1, 1, 0, 0], CELL), np.repeat([1, 0, 1, 0], CELL)
  labels = np.tile([1, 0], 2 * CELL)
  labels[:CELL] = np.arange(CELL) < 3          # Male, Young: 3 Blond.
  labels[CELL:2 * CELL] = 0                    # Male, not Young: no Blond.
  labels[2 * CELL:3 * CELL] = np.arange(CELL) >= 5  # not Male, Young: 5 not Blond.
  attributes = hand_built(male, young, labels)
  base = noisy(labels, np.random.default_rng(2))
  bad = {s: np.where(np.arange(labels.size) < 3, 0, p) for s, p in base.items()}  # Misses those 3 Blond.
  table = report.PredictionTable(np.arange(labels.size), labels, attributes, {"baseline": base, "prune_0.9": bad})
  analysis = report.analyse(table)
  sub, change = analysis["prune_0.9"]["subgroups"], analysis["prune_0.9"]["change_vs_baseline"]["subgroups"]
  assert sub["Male, Young"]["fnr_note"] == "too few positives (n=3)" and sub["Male, Young"]["fnr_ci"] is None
  assert sub["Male, Young"]["positives"] == 3 and sub["Male, Young"]["n"] == CELL
  assert change["Male, Young"]["fnr_significant"] is False
  assert sub["Male, not Young"]["fnr_note"] == "undefined: no positives (no Blond example)"
  assert sub["not Male, Young"]["fpr_note"] == "too few negatives (n=5)"
  assert sub["Male, Young"]["error_note"] is None and sub["Male, Young"]["error_ci"][0] < sub["Male, Young"]["error"]
  report.write_report(results_of(analysis), str(tmp_path / "report.md"))
  audit = section((tmp_path / "report.md").read_text(), "### prune_0.9")
  row = next(l for l in audit.splitlines() if l.startswith("| Male, Young |"))
  assert "too few positives (n=3)" in row and "undefined" not in row
  assert "undefined: no positives (no Blond example)" in next(
      l for l in audit.splitlines() if l.startswith("| Male, not Young |"))
  assert "FNR of" not in section((tmp_path / "report.md").read_text(), "## Findings")
  assert not any("FNR" in h for h in report.hurt(analysis["prune_0.9"]) if h.startswith("Male, Young"))


def test_results_json_fields_and_point_estimate_tables(tmp_path):
  labels, attributes = balanced()
  rng = np.random.default_rng(3)
  table = report.PredictionTable(np.arange(labels.size), labels, attributes,
                                 {"baseline": noisy(labels, rng), "prune_0.9": noisy(labels, rng, flip=0.3)})
  results = results_of(report.analyse(table))
  a = results["analysis"]["prune_0.9"]
  row, change = a["subgroups"]["not Male"], a["change_vs_baseline"]["subgroups"]["not Male"]
  assert (row["n"], row["positives"], row["negatives"]) == (2 * CELL, CELL, CELL)
  for r in subgroups.RATES:
    assert len(row[f"{r}_ci"]) == 2 and row[f"{r}_ci"][0] <= row[r] <= row[f"{r}_ci"][1]
    assert len(change[f"{r}_ci"]) == 2 and isinstance(change[f"{r}_significant"], bool)
  cell = a["cie"]["taxicab"]["over_index"]["Blond, Male, Young"]
  assert {"n", "cie_in_group", "expected", "over_index", "over_index_ci", "significant", "note"} <= set(cell)
  assert a["bootstrap"]["resamples"] == stats.NUM_RESAMPLES and a["bootstrap"]["population_rate"].startswith("mean")
  report.write_report(results, str(tmp_path / "report.md"))
  report.plot_subgroup_rates(results, str(tmp_path / "rates.png"))
  assert (tmp_path / "rates.png").stat().st_size > 0
  # The point-estimate table keeps bare numbers (tests/test_celeba_cie_study.py reads them).
  fnr = section((tmp_path / "report.md").read_text(), "## False-negative rate")
  line = next(l for l in fnr.splitlines() if l.startswith("| prune_0.9 |"))
  assert line.split(" | ")[2] == f"{100 * row['fnr']:.2f}"


def test_a_rare_group_holding_many_cie_is_tested_a_rare_group_holding_few_is_withheld():
  n = 2000
  rare, other = np.arange(n) < 20, (np.arange(n) >= 20) & (np.arange(n) < 40)
  selected = (np.arange(n) < 12) | ((np.arange(n) >= 40) & (np.arange(n) < 60)) | (np.arange(n) == 20)
  out = subgroups.over_index_intervals(selected, {"rare": rare, "other": other})[0]
  assert out["rare"]["expected"] < stats.MIN_COUNT <= out["rare"]["cie_in_group"] == 12
  assert out["rare"]["note"] is None and out["rare"]["significant"] and out["rare"]["ci"][0] > 10
  assert out["other"]["note"] == "too few CIE expected (0.3) or found (1)" and not out["other"]["significant"]


def test_report_states_the_modal_tie_rule():
  assert report.tie_line({"num_seeds": 3, "tie_rule": "odd_only"}) == "Modal CIE: K = 3 is odd, so no modal label ties"
  assert "ties go to label 0 (`cie.tie_rule=label_0`)" in report.tie_line({"num_seeds": 30, "tie_rule": "label_0"})
