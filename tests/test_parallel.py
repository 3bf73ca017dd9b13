"""shard_map and pmap over 4 CPU devices equal one device on the same global batch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_resnets.models import resnet
from jax_resnets.training import optim, parallel, steps
from jax_resnets.training.state import create_train_state
from testutils import tiny_config

# One test process runs this module: its module-scoped fixture trains once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_parallel")


def run_steps(mode: str, devices, batches):
  config = tiny_config()
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=4, bn_axis_name=steps.AXIS)
  tx = optim.create_optimizer(config.optim, optim.learning_rate_schedule(config.optim, 4, 8))
  state = create_train_state(jax.random.key(0), model, (16, 16, 3), tx)
  dp = parallel.DataParallel(mode, devices).compile_steps(label_smoothing=0.1)
  state = dp.replicate(state)
  history = []
  for batch in batches:
    state, metrics = dp.train_step(state, dp.shard(batch))
    history.append(dp.host_metrics(metrics))
  eval_batch = {**batches[0], "mask": np.ones(len(batches[0]["label"]), np.float32)}
  sums, outputs = dp.eval_step(state, dp.shard(eval_batch))
  return jax.device_get(dp.unreplicate(state)), history, dp.host_metrics(sums), dp.host_sharded(outputs["logits"])


@pytest.fixture(scope="module")
def batches():
  rng = np.random.default_rng(0)
  return [{"image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
           "label": rng.integers(0, 10, 8).astype(np.int32)} for _ in range(3)]


@pytest.fixture(scope="module")
def single(batches):
  return run_steps("shard_map", jax.devices()[:1], batches)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_four_devices_equal_one_device(mode, batches, single):
  assert jax.device_count() == 4, "conftest forces 4 host devices"
  state1, hist1, eval1, logits1 = single
  state4, hist4, eval4, logits4 = run_steps(mode, jax.devices(), batches)
  for a, b in zip(jax.tree.leaves((state1.params, state1.batch_stats)),
                  jax.tree.leaves((state4.params, state4.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for h1, h4 in zip(hist1, hist4):
    assert h1 == pytest.approx(h4, rel=1e-5)
  assert eval1 == pytest.approx(eval4, rel=1e-5)
  np.testing.assert_allclose(logits1, logits4, rtol=1e-4, atol=1e-5)
  assert int(state4.step) == 3


def test_training_moves_parameters(batches, single):
  state1, hist1, _, _ = single
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=4)
  init = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(state1.params))]
  assert all(moved)
  assert all(np.isfinite(h["loss"]) for h in hist1)


def test_device_mean_skips_the_all_reduce_on_one_device():
  def program(n):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:n]), (steps.AXIS,))
    spec = jax.sharding.PartitionSpec(steps.AXIS)
    f = jax.shard_map(steps.device_mean, mesh=mesh, in_specs=spec, out_specs=spec)
    x = np.arange(8, dtype=np.float32)
    return np.asarray(jax.jit(f)(x)), str(jax.make_jaxpr(f)(x))
  one, jaxpr_one = program(1)
  four, jaxpr_four = program(4)
  np.testing.assert_array_equal(one, np.arange(8))
  np.testing.assert_allclose(four, np.tile([3.0, 4.0], 4))  # shards [0 1] [2 3] [4 5] [6 7] averaged
  assert "psum" not in jaxpr_one and "pmean" not in jaxpr_one and "psum" in jaxpr_four
