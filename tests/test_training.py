"""The training loop: outputs, bitwise resume after preemption, schedules (NaN: test_faults.py)."""
import glob
import json
import os

import jax
import numpy as np
import optax
import pytest

from jax_resnets.training import loop, optim, preemption
from testutils import tiny_config

# One test process runs this module: its module-scoped fixture trains once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_training")


def final_state(config, workdir):
  """The state a re-run would resume from (the newest checkpoint)."""
  run = loop.build(config, workdir)
  state = jax.device_get(run.state)
  run.ckpt.close()
  return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  results = loop.train_and_evaluate(tiny_config(), workdir)
  return workdir, results


def test_run_writes_results_events_and_checkpoints(uninterrupted):
  workdir, results = uninterrupted
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["steps"] == 8 and on_disk["config"]["model"]["width"] == 4
  assert 0.0 <= on_disk["final"]["eval/accuracy"] <= 1.0
  assert on_disk["final"] == pytest.approx(results["final"])
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))
  assert os.listdir(os.path.join(workdir, "best"))


def test_resume_after_preemption_is_bitwise_identical(uninterrupted, tmp_path):
  workdir = str(tmp_path)

  def preempt_at_step_3(step):
    if step == 3:
      preemption.request_stop()

  with pytest.raises(preemption.Preempted, match="stopped at step 3"):
    loop.train_and_evaluate(tiny_config(), workdir, hooks=[preempt_at_step_3])
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
  resumed = loop.train_and_evaluate(tiny_config(), workdir)  # Same command again: resumes at step 3.
  assert resumed["steps_this_run"] == 5
  a, b = final_state(tiny_config(), uninterrupted[0]), final_state(tiny_config(), workdir)
  assert int(a.step) == int(b.step) == 8
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.opt_state)),
                  jax.tree.leaves((b.params, b.batch_stats, b.opt_state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step", "cosine_restarts", "plateau"])
def test_schedules(schedule):
  cfg = tiny_config().optim
  cfg.update(schedule=schedule, learning_rate=1.0, warmup_epochs=1.0, decay_epochs=(3,), restart_epochs=2)
  lr = optim.learning_rate_schedule(cfg, steps_per_epoch=10, total_steps=100)
  assert float(lr(0)) == pytest.approx(0.0) and float(lr(10)) == pytest.approx(1.0, rel=1e-3)
  expected_late = {"constant": 1.0, "plateau": 1.0, "cosine": 0.0, "step": 0.1}
  if schedule in expected_late:
    assert float(lr(100)) == pytest.approx(expected_late[schedule], abs=1e-3)
  else:  # SGDR restarts at 10 (warmup) + 20 steps to the full rate.
    assert float(lr(29)) < 0.05 and float(lr(30)) == pytest.approx(1.0)


def test_reduce_on_plateau_scales_updates():
  cfg = tiny_config().optim
  cfg.update(name="sgd", momentum=0.0, weight_decay=0.0, schedule="plateau", plateau_patience=0,
             plateau_accumulation_steps=1, plateau_factor=0.5)
  tx = optim.create_optimizer(cfg, optim.learning_rate_schedule(cfg, 1, 10))
  params = {"w": np.ones(3, np.float32)}
  state = tx.init(params)
  for loss in (1.0, 2.0, 3.0):  # Loss never improves after the first step.
    _, state = tx.update({"w": np.ones(3, np.float32)}, state, params, value=loss)
  assert optim.plateau_scale(state) < 1.0


def test_adamw_decoupled_weight_decay():
  cfg = tiny_config().optim
  cfg.update(name="adamw", learning_rate=0.1, weight_decay=0.5, schedule="constant")
  tx = optim.create_optimizer(cfg, optim.learning_rate_schedule(cfg, 1, 10))
  params = {"w": np.full(2, 2.0, np.float32)}
  updates, _ = tx.update({"w": np.zeros(2, np.float32)}, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)
