"""Hierarchy study: mappings from data, routing, head sizes, PhiNet size, the staged smoke run."""
import json
import os
import pickle
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cifar100_hierarchy
from jax_resnets import config_lib, studies
from jax_resnets.data import prepare, sources
from jax_resnets.studies.hierarchy import metrics as hier
from jax_resnets.studies.hierarchy import heads
from jax_resnets.studies.hierarchy import phinet
from jax_resnets.models.registry import parameter_count
from jax_resnets.studies.hierarchy import study
from jax_resnets.studies.hierarchy import sweep
from jax_resnets.training.state import init_key


def _hier_cfg(grouping="coarse", num_parents=0):
  return ml_collections.ConfigDict(dict(grouping=grouping, num_parents=num_parents))


def _write_cifar100(root, coarse_of, n, seed):
  """cifar-100-python/{train,test} pickles whose coarse labels follow `coarse_of[fine]`."""
  rng = np.random.default_rng(seed)
  for split in ("train", "test"):
    fine = np.concatenate([np.arange(100), rng.integers(0, 100, n - 100)])
    rng.shuffle(fine)
    os.makedirs(os.path.join(root, "cifar-100-python"), exist_ok=True)
    with open(os.path.join(root, "cifar-100-python", split), "wb") as f:
      pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   b"fine_labels": fine.tolist(), b"coarse_labels": coarse_of[fine].tolist(),
                   b"filenames": [b"x.png"] * n}, f)


def test_mapping_agrees_with_coarse_labels_of_prepared_cifar100(tmp_path):
  coarse_of = np.random.default_rng(0).permutation(100) // 5  # 20 superclasses of 5, scattered.
  _write_cifar100(str(tmp_path / "raw"), coarse_of, n=160, seed=1)
  prepare.prepare("cifar100", str(tmp_path / "tfds"), str(tmp_path / "raw"))
  ds = config_lib.base_config().dataset
  ds.name, ds.data_dir = "cifar100", str(tmp_path / "tfds")
  h = hier.build(_hier_cfg(), ds)
  np.testing.assert_array_equal(h.parent_of, coarse_of)
  source = sources.make_source(ds, "test")
  for i in range(len(source)):  # Every record of the other split agrees with the mapping.
    assert h.parent_of[source[i]["label"]] == source[i]["coarse_label"]
  with open(h.write(str(tmp_path))) as f:
    mapping = json.load(f)
  assert sorted(mapping, key=int) == [str(p) for p in range(20)]
  for p, children in mapping.items():
    assert sorted(children.values()) == list(range(5))
    assert all(coarse_of[int(fine)] == int(p) for fine in children)
  assert hier.Hierarchy.from_json(mapping) == h
  ten = hier.build(_hier_cfg("merged_coarse", 10), ds)  # Configurable grouping: pairs of superclasses.
  assert ten.num_parents == 10 and all(len(g) == 10 for g in ten.groups)
  np.testing.assert_array_equal(ten.parent_of, coarse_of // 2)


def test_synthetic_twin_mapping_and_inconsistent_labels():
  ds = cifar100_hierarchy.get_config("synthetic").dataset
  h = hier.build(_hier_cfg(), ds)
  np.testing.assert_array_equal(h.parent_of, np.arange(100) // 5)
  assert hier.contiguous(7, 3).groups == ((0, 1, 2), (3, 4), (5, 6))
  with pytest.raises(sources.DataError, match="fine label 1 has two coarse labels"):
    hier.from_labels(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
  with pytest.raises(sources.DataError, match=r"fine labels \[2\] never occur"):
    hier.from_labels(np.array([0, 1]), np.array([0, 0]), 3)


H7 = hier.contiguous(7, 3)  # Parents of 3, 2 and 2 children: exercises the validity mask.


def _hand_built():
  """Three examples; expected (hard, soft) fine labels: (0, 3), (6, 6), (4, 4)."""
  parent = np.log(np.array([[0.50, 0.45, 0.05], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]]))
  child = np.full((3, 3, 3), -50.0)
  child[0, 0] = np.log([0.4, 0.3, 0.3])  # p(fine 0) = 0.2 < p(fine 3) = 0.45 * 0.9.
  child[0, 1, :2] = np.log([0.9, 0.1])
  child[1, 2, :2] = np.log([0.3, 0.7])
  child[2, 1, :2] = np.log([0.2, 0.8])
  child[:, 1:, 2] = 100.0  # Invalid slots (parents 1, 2 have 2 children) must never win.
  return parent, child


def test_hard_and_soft_routing_on_hand_built_logits():
  parent, child = _hand_built()
  np.testing.assert_array_equal(hier.hard_route(parent, child, H7), [0, 6, 4])
  np.testing.assert_array_equal(hier.soft_route(parent, child, H7), [3, 6, 4])
  fine_logp = np.asarray(heads.fine_log_probs(jnp.asarray(parent), jnp.asarray(child), H7.groups))
  np.testing.assert_allclose(np.exp(fine_logp).sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.exp(fine_logp[0, [0, 3]]), [0.5 * 0.4, 0.45 * 0.9], rtol=1e-5)
  np.testing.assert_array_equal(hier.route(fine_logp, H7, "hard"), [0, 6, 4])  # Same from log p(fine).
  np.testing.assert_array_equal(hier.route(fine_logp, H7, "soft"), [3, 6, 4])


def test_metrics_on_hand_built_logits():
  parent, child = _hand_built()
  fine_logp = np.asarray(heads.fine_log_probs(jnp.asarray(parent), jnp.asarray(child), H7.groups))
  labels = np.array([3, 5, 4])  # hard predicts 0, 6, 4: one right; errors 0->3 (other parent), 6->5 (same).
  m = hier.metrics(fine_logp, labels, H7, "hard")
  assert m["fine_top1"] == pytest.approx(1 / 3) and m["fine_errors"] == 2
  assert m["parent_accuracy"] == pytest.approx(2 / 3)
  assert m["errors_within_parent"] == pytest.approx(1 / 2)
  # Child heads given the true parent: parent 1 -> fine 3 for ex. 0 (right), fine 4 for ex. 2 (right);
  # parent 2 -> fine 6 for ex. 1 (wrong).
  assert m["child_accuracy_per_parent"] == {"1": 1.0, "2": 0.0}
  assert m["child_accuracy_mean"] == pytest.approx(0.5)
  soft = hier.metrics(fine_logp, labels, H7, "soft")
  assert soft["fine_top1"] == pytest.approx(2 / 3) and soft["errors_within_parent"] == 1.0
  assert soft["fine_top5"] == 1.0  # 7 labels: every true label is in the soft top 5.
  assert hier.metrics(fine_logp, labels, H7, "hard")["fine_top5"] is None  # n/a: one parent's children.


@pytest.mark.parametrize("name,expected", [
    ("original", (32 + 1) * 100),
    ("adaptive", (32 + 1) * 16 + (16 + 1) * 100),
    ("adaptive_nonlinear", (32 + 1) * 16 + (16 + 1) * 100),
    ("hierarchy", (32 + 1) * 20 + 20 * (32 + 1) * 5),
])
def test_head_parameter_counts(name, expected):
  cfg = ml_collections.ConfigDict(dict(name=name, bottleneck=16, activation="relu"))
  groups = tuple(tuple(range(5 * p, 5 * p + 5)) for p in range(20))
  head = heads.build_head(cfg, 100, groups)
  variables = jax.eval_shape(lambda: head.init(jax.random.key(0), jnp.zeros((1, 32))))
  assert parameter_count(variables["params"]) == expected


def test_adaptive_head_is_linear_and_nonlinear_is_not():
  make = lambda name: heads.build_head(ml_collections.ConfigDict(dict(name=name, bottleneck=8, activation="relu")), 10)

  @jax.jit
  def affinity_gaps(x, y):  # Zero iff a head is affine in its input.
    gaps = []
    for head in (make("adaptive"), make("adaptive_nonlinear")):
      params = head.init(jax.random.key(0), x)
      f = lambda v, head=head, params=params: head.apply(params, v)[0]
      gaps.append(jnp.max(jnp.abs(f(0.3 * x + 0.7 * y) - (0.3 * f(x) + 0.7 * f(y)))))
    return gaps

  linear, nonlinear = affinity_gaps(*jax.random.normal(jax.random.key(1), (2, 4, 32)))
  assert linear < 1e-4 < nonlinear


def test_phinet_parameter_count_by_hand():
  """alpha 0.5, beta 1, t_zero 2, 4 layers, downsampling at 4, divisor 8, 10 classes.

  Widths make_divisible(f * 0.5, 8): stem 48 -> 24, b1 24 -> 16, b2 48 -> 24, block 4 96 -> 48;
  expansion t = 2 everywhere (beta 1); SE reduces to make_divisible(c / 6, 8) = 8.
  """
  stem = 3 * 9 + 3 * 24 + 2 * 24  # depthwise 3x3 on RGB, pointwise 3->24, BN
  block0 = 24 * 9 + 2 * 24 + 24 * 16 + 2 * 16  # no expansion: dw, BN, project 24->16, BN
  block1 = 16 * 32 + 2 * 32 + 32 * 9 + 2 * 32 + 2 * 32 * 8 + 32 * 16 + 2 * 16  # expand x2, dw, SE, project
  block2 = block1  # stride 1, 16 -> 16 (residual, no parameters)
  block3 = 16 * 32 + 2 * 32 + 32 * 9 + 2 * 32 + 2 * 32 * 8 + 32 * 24 + 2 * 24
  block4 = 24 * 48 + 2 * 48 + 48 * 9 + 2 * 48 + 2 * 48 * 8 + 48 * 48 + 2 * 48
  fc = 48 * 10 + 10
  model = phinet.PhiNet(num_classes=10, alpha=0.5, beta=1.0, t_zero=2.0, num_layers=4, divisor=8,
                        downsampling_layers=(4,))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert parameter_count(variables["params"]) == stem + block0 + block1 + block2 + block3 + block4 + fc == 12485
  logits, out = jax.eval_shape(model.apply, variables, jnp.ones((2, 16, 16, 3)))
  assert logits.shape == (2, 10) and out["features"].shape == (2, 48)
  # micromind documents PhiNet((3, 224, 224)) (alpha 0.2, t_zero 6, 7 layers, divisor 1): 30917.
  ref = phinet.PhiNet(num_classes=0, alpha=0.2, t_zero=6.0, num_layers=7, divisor=1)
  variables = jax.eval_shape(lambda: ref.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  assert parameter_count(variables["params"]) == 30917


def _leaves(tree, prefix):
  return {k: v for k, v in ((study.freeze.path_str(p), v) for p, v in jax.tree_util.tree_leaves_with_path(tree))
          if k.startswith(prefix)}


def _run_cell(root, name, edit):
  """One cell of the `:d_sweep,synthetic` grid, in process, with `edit(config)` after its overrides."""
  from launch import grid  # pylint: disable=g-import-not-at-top
  config = grid.apply_overrides(cifar100_hierarchy.get_config("d_sweep,synthetic"),
                                grid.cells(cifar100_hierarchy, "d_sweep,synthetic", str(root))[name])
  config.num_devices = 1
  edit(config)
  return studies.run(config, str(root / name))


def test_synthetic_smoke_runs_all_stages_and_reports(tmp_path):
  config = cifar100_hierarchy.get_config("synthetic")
  results = _run_cell(tmp_path, "hierarchy", lambda c: None)  # `:synthetic`: 48, 32, 32, 32 steps.
  assert list(results["stages"]) == list(study.STAGES)
  assert set(results["comparison"]) == {"flat", *sweep.HIERARCHY_ROWS}
  # No reported row uses an untrained head: child accuracy above chance (1 of 5) in every row.
  assert all(m["child_accuracy_mean"] > 0.2 for m in results["comparison"].values()), results["comparison"]
  assert "parent_only" in results["stages"]["stage2"]["metrics"]  # Stage 2 alone: parent accuracy only.
  report = (tmp_path / "hierarchy" / "report.md").read_text()
  for row in ("| flat (original) |", "| hierarchy, hard routing (hierarchy) | 0.", "| hierarchy, soft routing"):
    assert row in report
  assert " | n/a | " in report and "n/a under hard routing" in report
  cell = tmp_path / "hierarchy"
  assert json.loads((cell / "results.json").read_text())["stages"]["stage3"]["from_workdir"] == str(
      cell / "stage2_children")
  assert len(json.loads((cell / "hierarchy.json").read_text())) == 20
  assert list(study.stage_chain(str(cell / "stage3"))) == list(study.STAGES)
  _check_stage_parameters(config, {s: study.checkpointing.read_latest(str(cell / s))[0] for s in study.STAGES})
  # Two flat cells of the d sweep (2 steps each), then the all-heads report and the d plot.
  for name in ("adaptive_d4", "adaptive_nonlinear_d4"):
    _run_cell(tmp_path, name, lambda c: c.update(num_epochs=1) or c.dataset.update(
        synthetic_sizes={"train": 128, "test": 256}) or c.hierarchy.update(grouping="contiguous", num_parents=20))
  heads_report = (tmp_path / "heads_report.md").read_text()
  for row in ("| original | n/a | 0.", "| adaptive | 4 | 0.", "| adaptive_nonlinear | 4 | 0.",
              "| hierarchy, soft routing | n/a | 0.", "| hierarchy, hard routing | n/a | 0.0"):
    assert row in heads_report
  assert (tmp_path / "d_sweep.png").stat().st_size > 1000


def _check_stage_parameters(config, states):
  """Stages 2+ keep stage 1's backbone bit for bit; stage 2 trains only the parent classifier,
  stage2_children only the child heads, stage 3 both."""
  for part in ("params", "batch_stats"):
    first, last = _leaves(states["stage1"][part], "backbone"), _leaves(states["stage3"][part], "backbone")
    assert first and first.keys() == last.keys()
    assert all(np.array_equal(first[k], last[k]) for k in first)
  parent = {s: _leaves(states[s]["params"], "head/parent") for s in study.STAGES[1:]}
  child = {s: _leaves(states[s]["params"], "head/child") for s in study.STAGES[1:]}
  stage2 = study.stage_config(config, 1, None)
  model = study.build_model(stage2, hier.build(stage2.hierarchy, stage2.dataset))
  init_rng, _ = jax.random.split(init_key(stage2.seed))  # As the core loop's create_train_state.
  init = _leaves(model.init(init_rng, jnp.zeros((1, 16, 16, 3)), train=False)["params"], "head/child")
  assert init.keys() == child["stage2"].keys() and len(init) == 2
  same = lambda a, b: all(np.array_equal(a[k], b[k]) for k in a)
  assert same(init, child["stage2"]) and not same(child["stage2"], child["stage2_children"])
  assert same(parent["stage2"], parent["stage2_children"]) and not same(parent["stage2_children"], parent["stage3"])
  assert not same(child["stage2_children"], child["stage3"])


def test_d_sweep_grid_cells():
  grid = cifar100_hierarchy.get_grid("d_sweep")
  assert grid["hierarchy"]["hierarchy.stage"] == "all" and len(grid) == 1 + 2 * len(cifar100_hierarchy.D_VALUES)
  assert grid["adaptive_d64"] == {"hierarchy.sweep_root": "{root}", "hierarchy.stage": "stage1", "head.name": "adaptive",
                                  "head.bottleneck": 64, "num_epochs": 60, "optim.learning_rate": 0.1}
  with pytest.raises(ValueError, match="unknown argument"):
    cifar100_hierarchy.get_config("stage1,stage3")


def test_config_errors_name_the_key(tmp_path):
  study.validate(cifar100_hierarchy.get_config("synthetic"))
  edits = ((lambda c: c.hierarchy.update(stage="stage4"), "config error: hierarchy.stage='stage4'"),
           (lambda c: c.model.phinet.update(alfa=1.0), "config error: model.phinet=['alfa']"),
           (lambda c: c.head.update(name="hierarchy"), "config error: head.name='hierarchy'"),
           (lambda c: c.hierarchy.update(grouping="contiguous"), "config error: hierarchy.num_parents=0"))
  for edit, message in edits:
    config = cifar100_hierarchy.get_config("synthetic")
    edit(config)
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
      study.validate(config)
  with pytest.raises(config_lib.ConfigError, match="init.from_workdir=.* has no checkpoint"):
    study.init_from_workdir(None, str(tmp_path))
