"""The CIE study end to end on the synthetic CelebA twin (tiny), and its numbers recomputed
from predictions.csv with plain numpy."""
import csv
import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from jax_resnets import config_lib, studies
from jax_resnets.data import celeba, sources
from jax_resnets.studies.celeba_cie import report
from jax_resnets.studies.celeba_cie import study as study_module
from testutils import tiny_cie_config

# One test process runs this module: its module-scoped fixture trains once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_celeba_cie_study")

LEVEL = "prune_0.99"


def load_config(arg: str):
  spec = importlib.util.spec_from_file_location("celeba_cie_config", "configs/celeba_cie.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config():
  """Two of the smoke's six sparsities (every level is the same code; test_smoke_config_keeps_every_level
  checks the smoke has them all), all four quantizations, 2-fold CV."""
  config = tiny_cie_config()
  config.cv_folds = 2
  config.cie.sparsities = (0.5, 0.99)
  return config


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cie"))
  config = tiny_config()
  return config, workdir, studies.run(config, workdir)


def test_smoke_config_keeps_every_level():
  config = load_config("smoke")
  assert tuple(config.cie.sparsities) == (0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
  assert len(config.cie.quantization) == 4 and config.dataset.synthetic
  assert config.cie.num_seeds % 2 == 1 and config.cie.tie_rule == "odd_only"
  assert load_config("").cie.num_seeds == 30 and load_config("").cie.tie_rule == "label_0"
  with pytest.raises(ValueError, match="unknown argument"):
    load_config("smok")


def test_augment_variant_crops_flips_and_jitters():
  assert tuple(load_config("smoke,augment").dataset.augment) == ("crop", "flip", "color_jitter")
  assert tuple(load_config("smoke,no_augment").dataset.augment) == ()
  with pytest.raises(ValueError, match="exclude each other"):
    load_config("augment,no_augment")


def test_even_population_needs_a_tie_rule(tmp_path):
  config = tiny_config()
  config.cie.tie_rule = "odd_only"
  with pytest.raises(config_lib.ConfigError, match="cie.num_seeds=2 .*tie_rule=label_0"):
    studies.run(config, str(tmp_path))


def test_study_writes_all_outputs(study):
  config, workdir, results = study
  for name in ("report.md", "predictions.csv", "results.json", "subgroup_rates.png", "cie_fraction.png", "cie_grid.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  levels = list(results["levels"])
  assert levels == ["baseline", "prune_0.5", "prune_0.99",
                    "float16", "bfloat16", "int8_hybrid", "int8_fixed"]
  # Every trained level is a core-loop run: checkpoints, TensorBoard curves (mean and std over models).
  for level in levels[:3]:
    level_dir = os.path.join(workdir, "levels", level)
    assert glob.glob(os.path.join(level_dir, "events.out.tfevents.*")) and os.listdir(os.path.join(level_dir, "checkpoints"))
    with open(os.path.join(level_dir, "results.json")) as f:
      level_results = json.load(f)
    assert level_results["seeds"] == [0, 1] and "eval/accuracy_std" in level_results["final"]
  # Achieved sparsity within 1% of every target.
  for level in levels[1:3]:
    meta = results["levels"][level]
    assert abs(meta["achieved_sparsity"] - meta["sparsity"]) < 0.01, (level, meta["achieved_sparsity"])
  with open(os.path.join(workdir, "results.json")) as f:
    assert set(json.load(f)["analysis"]) == set(levels)
  cv = results["cv"]
  assert cv["folds"] == 2 and len(cv["accuracy"]) == 2 and all(0 <= a <= 1 for a in cv["accuracy"])
  assert set(cv["mean"]) == set(cv["std"]) == {"accuracy", "precision", "recall", "f1", "cie_count"}
  assert all(0 <= r["cie_count"] <= 80 for r in cv["per_fold"])
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "## Baseline k-fold cross-validation" in report and "modal CIE vs baseline (test)" in report
  assert "K = 2 is even, so modal labels can tie; ties go to label 0 (`cie.tie_rule=label_0`)" in report


def test_loss_curves_come_from_the_event_files(study):
  _, workdir, results = study
  curves = results["curves"]["baseline"]
  assert [r["step"] for r in curves] == [8, 16]  # One row per epoch end (8 steps an epoch).
  assert all(r[t] is not None and np.isfinite(r[t]) for r in curves for t in report.CURVE_TAGS)
  assert os.path.getsize(os.path.join(workdir, "loss_curves.png")) > 0
  with open(os.path.join(workdir, "report.md")) as f:
    text = f.read()
  assert "## Train and validation loss" in text and "### baseline" in text
  assert f"{curves[-1]['eval/loss']:.4f} ± {curves[-1]['eval/loss_std']:.4f}" in text


def test_grid_level_is_the_highest_sparsity_that_did_not_collapse():
  labels = np.array([1, 1, 0, 0, 0])  # Majority class: 60%.
  table = report.PredictionTable(np.arange(5), labels, np.zeros((5, 40), int), {
      "baseline": {0: labels}, "prune_0.9": {0: np.array([1, 1, 0, 1, 0])}, "prune_0.99": {0: np.zeros(5, int)}})
  levels = {"baseline": {"kind": "baseline"}, "prune_0.9": {"kind": "pruning"}, "prune_0.99": {"kind": "pruning"}}
  assert study_module.collapsed(table, "prune_0.99") and not study_module.collapsed(table, "prune_0.9")
  assert study_module.default_grid_level(table, levels) == "prune_0.9"


def read_predictions(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header = rows[0]
  data = np.array(rows[1:], np.int64)
  return {name: data[:, i] for i, name in enumerate(header)}, header


def report_cell(report: str, section: str, row: str, column: str) -> str:
  """The cell (row, column) of the first markdown table after the line starting with `section`."""
  lines = report.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(section))
  table = [l for l in lines[start:] if l.startswith("|")]
  header = [c.strip() for c in table[0].strip("|").split("|")]
  for line in table[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if cells[0] == row:
      return cells[header.index(column)]
  raise KeyError(row)


def test_report_numbers_recomputed_from_predictions(study):
  _, workdir, results = study
  cols, header = read_predictions(os.path.join(workdir, "predictions.csv"))
  population = lambda level: np.stack([cols[h] for h in header if h.startswith(f"pred/{level}/")])
  # Modal label by counting votes; ties -> 0 (the documented rule).
  modal = lambda p: (2 * p.sum(0) > p.shape[0]).astype(int)
  cie_count = int(np.sum(modal(population("baseline")) != modal(population(LEVEL))))
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert int(report_cell(report, "## Levels", LEVEL, "modal CIE")) == cie_count
  assert results["analysis"][LEVEL]["cie"]["modal"]["count"] == cie_count

  female = cols["Male"] == 0
  positives = female & (cols["label"] == 1)
  assert np.array_equal(cols["label"], cols["Blond_Hair"]) and positives.any()
  fnr = np.mean([np.sum(p[positives] == 0) / positives.sum() for p in population(LEVEL)])
  assert report_cell(report, "## False-negative rate", LEVEL, "not Male") == f"{100 * fnr:.2f}"
  assert abs(results["analysis"][LEVEL]["subgroups"]["not Male"]["fnr"] - fnr) < 1e-12


def test_predictions_match_the_twin(study):
  config, workdir, _ = study
  cols, header = read_predictions(os.path.join(workdir, "predictions.csv"))
  source = sources.make_source(config.dataset, "test")
  assert len(cols["id"]) == len(source) == 80
  for i in (0, 37, 79):
    element = source[int(cols["id"][i])]
    assert [cols[a][i] for a in celeba.ATTRIBUTES] == element["attributes"].tolist()
  assert sum(h.startswith("pred/") for h in header) == 7 * 2  # 7 levels x 2 models


def test_bad_config_value_is_one_config_error(tmp_path):
  config = tiny_config()
  config.pruning.end_step = 10_000
  with pytest.raises(config_lib.ConfigError, match="pruning.end_step"):
    studies.run(config, str(tmp_path))
