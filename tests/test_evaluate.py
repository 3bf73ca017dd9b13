"""`python -m jax_resnets.evaluate` on a tiny synthetic run, and the timing command's function."""
import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import testutils
from jax_resnets import evaluate, models
from jax_resnets.studies.resnet34 import timing
from jax_resnets.data import pipeline, sources
from jax_resnets.training import loop

# One test process runs this module: its module-scoped fixture trains once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_evaluate")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"train": 64, "test": 36}  # 36: the last eval batch of 16 is padded


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 1-epoch run (4 steps, one evaluation, so the best checkpoint is the final state)."""
  workdir = str(tmp_path_factory.mktemp("r34_eval"))
  config = testutils.tiny_config(num_epochs=1)
  config.dataset.synthetic_sizes = dict(SIZES)
  results = loop.train_and_evaluate(config, workdir)
  return workdir, config, results


def _read_predictions(path):
  with open(path) as f:
    rows = list(csv.DictReader(f))
  return {k: np.asarray([float(r[k]) for r in rows]) for k in ("id", "label", "prediction", "confidence")}


def _check_consistent(workdir, config, split, summary):
  """eval_<split>.json == summary; predictions file rows agree with its accuracy and per-class numbers."""
  with open(os.path.join(workdir, f"eval_{split}.json")) as f:
    assert json.load(f) == summary
  rows = _read_predictions(os.path.join(workdir, f"predictions_{split}.csv"))
  assert len(rows["id"]) == SIZES[split] == summary["num_examples"]
  np.testing.assert_array_equal(rows["id"], np.arange(SIZES[split]))
  source = sources.make_source(config.dataset, split)
  np.testing.assert_array_equal(rows["label"], [source[i]["label"] for i in range(SIZES[split])])
  correct = rows["label"] == rows["prediction"]
  assert summary["accuracy"] == pytest.approx(correct.mean(), abs=1e-6)
  for c, (acc, count) in enumerate(zip(summary["per_class_accuracy"], summary["per_class_count"])):
    in_class = rows["label"] == c
    assert count == in_class.sum()
    assert (acc is None) if count == 0 else acc == pytest.approx(correct[in_class].mean())
  assert np.array(summary["confusion_matrix"]).sum() == SIZES[split]
  assert np.all((rows["confidence"] >= 1 / 10 - 1e-6) & (rows["confidence"] <= 1))
  return rows


def test_evaluates_the_best_checkpoint(trained):
  workdir, config, results = trained
  summary = evaluate.evaluate(workdir, "test")
  rows = _check_consistent(workdir, config, "test", summary)
  # The restored params are the saved best ones: their logits give the predictions file...
  model = models.build_model(config.model, 10)
  state = evaluate.restore_best_state(config, workdir, model)
  assert summary["checkpoint_step"] == int(state.step) == results["steps"]
  batch = next(iter(pipeline.eval_batches(config.dataset, "test", SIZES["test"])))
  logits, _ = jax.jit(model.apply)({"params": state.params, "batch_stats": state.batch_stats}, batch["image"])
  np.testing.assert_array_equal(rows["prediction"], np.argmax(logits, -1))
  # ... and (best == final state here) the accuracy and loss training reported.
  assert summary["accuracy"] == pytest.approx(results["final"]["eval/accuracy"], abs=1e-6)
  assert summary["loss"] == pytest.approx(results["final"]["eval/loss"], rel=1e-5)


def test_cli_writes_files_and_missing_inputs_exit_2(trained, tmp_path):
  workdir, config, _ = trained
  cmd = [sys.executable, "-m", "jax_resnets.evaluate"]
  ok = subprocess.run([*cmd, f"--workdir={workdir}", "--split=train"], cwd=ROOT, capture_output=True, text=True,
                      timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "train: accuracy" in ok.stdout and "per-class accuracy" in ok.stdout
  with open(os.path.join(workdir, "eval_train.json")) as f:
    _check_consistent(workdir, config, "train", json.load(f))
  missing = subprocess.run([*cmd, f"--workdir={tmp_path}/nope"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
  assert missing.returncode == 2 and "Traceback" not in missing.stderr
  assert [l for l in missing.stderr.splitlines() if l.startswith("error:")] == [
      f"error: workdir {tmp_path}/nope does not exist"]


def test_missing_checkpoint_or_config_names_the_file(trained, tmp_path):
  config = trained[1]
  with pytest.raises(FileNotFoundError, match="results.json"):
    evaluate.evaluate(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="best"):
    evaluate.evaluate(str(tmp_path), config=config)
  assert not os.path.exists(tmp_path / "best")  # read-only: nothing created


def test_timing_measures_eager_and_jit():
  rows = timing.measure(depth=18, batch=2, width=4, image_size=8, repeats=1, warmup=0)
  assert [r["mode"] for r in rows] == ["eager", "jit"]
  for r in rows:
    assert r["median_s"] > 0 and r["first_call_s"] > 0 and r["img_per_s"] == pytest.approx(2 / r["median_s"])
  assert rows[1]["compile_s"] > 0 and rows[1]["speedup"] == pytest.approx(rows[0]["median_s"] / rows[1]["median_s"])
  assert rows[0]["max_diff"] < 1e-4  # eager and jit compute the same logits
  table = timing.format_table(rows)
  assert table.count("\n") == 3 and "| jit |" in table and "| eager |" in table
