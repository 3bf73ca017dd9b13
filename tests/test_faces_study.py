"""The faces study end to end on a tiny synthetic face twin; early stopping; config errors."""
import csv
import functools
import json
import os

import pytest

from jax_resnets import config_lib, studies
from jax_resnets.studies.faces import face_nets, verification
from jax_resnets.studies.faces import study as faces

SIZES = {"train": 96, "dev": 32, "test": 24, "known": 40, "unknown_dev": 40, "unknown_test": 24}


def _config_module():
  import importlib.util  # configs/ is not a package: load the file as the CLI does.
  spec = importlib.util.spec_from_file_location("vggface2_faces", os.path.join(
      os.path.dirname(__file__), "..", "configs", "vggface2_faces.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_faces_config(**overrides):
  config = _config_module().get_config("synthetic")
  config.dataset.synthetic_sizes = SIZES
  config.dataset.image_size = 16
  config.model.update(width=4, channels=(4, 8), depths=(1, 1), strides=(1, 2), dropout=(0.0, 0.1), se=(False, True),
                      embedding_size=8)
  config.batch_size, config.num_epochs, config.log_every_steps = 32, 2, 1
  config.num_devices = 1  # 4 devices vs 1: test_train_step_on_4_devices_equals_1_device.
  config.update(overrides)
  return config


def read_csv(path):
  with open(path) as f:
    return list(csv.reader(f))


def test_synthetic_smoke_end_to_end(tmp_path):
  config = tiny_faces_config()
  config.model.head = "cosine"
  config.loss.update(classifier="arcface", center_weight=0.01, triplet_weight=0.5)
  results = studies.run(config, str(tmp_path))
  final = results["final"]
  cls, ver = read_csv(tmp_path / "classification_submission.csv"), read_csv(tmp_path / "verification_submission.csv")
  assert cls[0] == ver[0] == ["id", "label"]
  assert len(cls) == 1 + SIZES["test"] and len(ver) == 1 + SIZES["unknown_test"]
  assert all(0 <= int(label) < 50 for _, label in cls[1:]) and cls[1][0].endswith(".jpg")
  known_names = {f"n{k + 1:06d}" for k in range(25)}
  assert all(label in known_names | {verification.NO_MATCH} for _, label in ver[1:])
  # The in-sample threshold is at least as good as rejecting everyone (a candidate it considered);
  # the headline is the held-out (k-fold) accuracy, which early stopping also uses.
  assert final["verification/accuracy_in_sample"] >= final["verification/no_match_fraction"]
  assert final["verification/threshold_folds"] == 5 and 0.0 <= final["verification/accuracy"] <= 1.0
  for key in ("dev/accuracy", "verification/roc_auc", "verification/eer", "verification/tar_at_far_1e-3"):
    assert 0.0 <= final[key] <= 1.0
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["best_step"] in (3, 6) and on_disk["stopping_metric"] == "verification/accuracy"
  report = (tmp_path / "report.md").read_text()
  assert "| verification/accuracy | held-out: k-fold" in report and "chance" in report
  assert "| verification/accuracy_in_sample | in-sample:" in report
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_architecture_grid_cells():
  """launch/grid.py's ablation: one cell per face block, only model.block differs."""
  module = _config_module()
  grid = module.get_grid("synthetic")
  assert list(grid) == list(face_nets.BLOCKS) and all(list(o) == ["model.block"] for o in grid.values())
  for name in grid:
    assert faces.stopping_metric(module.get_config("synthetic")) == "verification/accuracy", name


def test_early_stopping_patience_and_resume(tmp_path):
  stopper = faces.EarlyStopping(str(tmp_path), "dev/accuracy", "max", patience=2)
  assert not stopper.update(1, {"dev/accuracy": 0.5})
  assert not stopper.update(2, {"dev/accuracy": 0.4})   # 1 bad epoch.
  assert not stopper.update(3, {"dev/accuracy": 0.6})   # improved: counter reset.
  assert not stopper.update(4, {"dev/accuracy": 0.6})   # equal is not better.
  again = faces.EarlyStopping(str(tmp_path), "dev/accuracy", "max", patience=2)  # resumed from disk.
  assert again.state["best_step"] == 3 and again.state["bad_epochs"] == 1
  assert again.update(5, {"dev/accuracy": 0.55}) and again.state["stopped_at"] == 5
  low = faces.EarlyStopping(str(tmp_path / "min"), "eval/loss", "min", patience=1)
  os.makedirs(tmp_path / "min")
  assert not low.update(1, {"eval/loss": 1.0}) and low.update(2, {"eval/loss": 1.5})


@pytest.mark.parametrize("key,value,match", [
    ("loss.classifier", "cosface", "model.head"),  # CosFace needs the cosine head.
    ("faces.task", "detect", "faces.task"),
    ("faces.gallery", "median", "faces.gallery"),
])
def test_config_errors_name_the_key(tmp_path, key, value, match):
  config = tiny_faces_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    studies.run(config, str(tmp_path))


def test_train_step_on_4_devices_equals_1_device():
  """Sync BN, pmean'd grads and psum'd center updates: 4 devices compute what 1 device does."""
  import jax
  import numpy as np
  import optax
  from jax_resnets.studies.faces import face_nets
  from jax_resnets.training import parallel, steps
  from jax_resnets.training.state import create_train_state

  config = tiny_faces_config()
  config.loss.update(classifier="cosface", center_weight=0.1, center_alpha=0.5, triplet_weight=0.0)
  model = face_nets.FaceNet(channels=(4,), depths=(1,), strides=(1,), width=4, embedding_size=6, num_classes=5,
                            head="cosine", bn_axis_name="batch")
  state = jax.jit(lambda r: create_train_state(r, model, (8, 8, 3), optax.sgd(0.1, 0.9)))(jax.random.key(0))
  centers = jax.random.normal(jax.random.key(2), (5, 6))
  state = jax.device_get(state.replace(batch_stats={**state.batch_stats, faces.CENTERS: centers}))  # host copy:
  # the step donates its input state.
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(8, 8, 8, 3)).astype(np.float32), "label": rng.integers(0, 5, 8).astype(np.int32)}
  out = []
  for n in (1, 4):
    step = functools.partial(steps.train_step, loss_fn=faces.face_loss(config.loss),
                             after_update=faces.update_centers(config.loss))  # What faces.build gives the loop.
    dp = parallel.DataParallel("shard_map", jax.devices()[:n]).compile_steps(step)
    new, metrics = dp.train_step(dp.replicate(state), dp.shard(batch))
    out.append((jax.device_get(new), dp.host_metrics(metrics)))
  (one, m1), (four, m4) = out
  assert m1["loss"] == pytest.approx(m4["loss"], rel=1e-5)
  assert not np.allclose(one.batch_stats[faces.CENTERS], centers)  # the centers moved ...
  for a, b in zip(jax.tree.leaves((one.params, one.batch_stats)), jax.tree.leaves((four.params, four.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # ... identically on 1 and 4 devices.
