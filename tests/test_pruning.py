"""Gradual magnitude pruning: schedule, masks through training, achieved sparsity."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jax_resnets import config_lib
from jax_resnets.studies.celeba_cie import pruning
from jax_resnets.models import registry
from jax_resnets.training import freeze, steps
from jax_resnets.training.state import create_train_state, init_key


def test_schedule_begin_middle_end():
  s = pruning.Schedule(final_sparsity=0.9, begin_step=100, end_step=300, frequency=50, initial_sparsity=0.1)
  zhu_gupta = lambda t: 0.9 + (0.1 - 0.9) * (1 - (t - 100) / 200) ** 3
  np.testing.assert_allclose(float(s.sparsity(100)), 0.1, atol=1e-6)
  np.testing.assert_allclose(float(s.sparsity(200)), zhu_gupta(200), atol=1e-6)  # 0.8
  np.testing.assert_allclose(float(s.sparsity(300)), 0.9, atol=1e-6)
  np.testing.assert_allclose(float(s.sparsity(0)), 0.1, atol=1e-6)  # Before: initial.
  np.testing.assert_allclose(float(s.sparsity(10_000)), 0.9, atol=1e-6)  # After: final.
  updates = [t for t in range(0, 400) if bool(s.is_update_step(t))]
  assert updates == [100, 150, 200, 250, 300]


def resnet_params(width=8):
  """ResNet-18 parameter shapes (jax.eval_shape, no compile) filled with N(0, 1) weights, BN scale 1."""
  cfg = config_lib.base_config().model
  cfg.width = width
  model = registry.build_model(cfg, 2)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng(0)
  fill = lambda path, s: (np.ones(s.shape, np.float32) if freeze.path_str(path).endswith("scale")
                          else rng.normal(size=s.shape).astype(np.float32))
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("scope", pruning.SCOPES)
def test_achieved_sparsity_within_one_percent(scope):
  params = resnet_params()
  masks_fn = jax.jit(pruning.magnitude_masks, static_argnames="scope")
  for target in (0.3, 0.5, 0.7, 0.9, 0.95, 0.99):
    pruned = pruning.apply_masks(params, masks_fn(params, target, scope=scope))
    report = pruning.sparsity_report(pruned)
    assert abs(report["overall"] - target) < 0.01, (scope, target, report["overall"])
    if scope == "per_tensor":
      for name, s in report["per_tensor"].items():
        assert abs(s - target) < 0.01 or np.prod(pruning_shape(params, name)) < 100, (name, s)
    # Biases and batch-norm never pruned.
    assert np.all(np.asarray(pruned["fc"]["bias"]) == np.asarray(params["fc"]["bias"]))
    assert np.all(np.asarray(pruned["bn1"]["scale"]) == 1.0)


def pruning_shape(params, name):
  node = params
  for k in name.split("/"):
    node = node[k]
  return node.shape


def test_global_scope_prunes_smallest_magnitudes_overall():
  params = {"a": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}, "b": {"kernel": jnp.array([[0.5, 5.0]]),
                                                                   "bias": jnp.array([0.0, 0.1])}}
  masks = pruning.magnitude_masks(params, 0.5, "global")
  np.testing.assert_array_equal(masks["a"]["kernel"], [[False, False], [True, True]])
  np.testing.assert_array_equal(masks["b"]["kernel"], [[False, True]])
  assert masks["b"]["bias"].shape == ()


class TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3), use_bias=False)(x)))
    x = nn.Dense(16)(x.mean(axis=(1, 2)))
    return nn.Dense(2)(nn.relu(x)), {}


def pruned_training(final_sparsity: float, freeze_mode: str = "full", steps_run: int = 16):
  """`steps_run` core train steps of TinyNet with SGD + the pruning transformation (inside the freeze
  wrapper, as loop.build chains them); yields the state after each step."""
  prune_cfg = ml_collections.ConfigDict(dict(begin_step=2, end_step=10, frequency=2, scope="per_tensor"))
  tx = freeze.optimizer(optax.chain(optax.sgd(0.1, momentum=0.9),
                                    pruning.gradual_magnitude_pruning(prune_cfg, final_sparsity)), freeze_mode)
  state = create_train_state(init_key(0), TinyNet(), (8, 8, 3), tx)
  state = state.replace(apply_fn=freeze.frozen_batch_norm(state.apply_fn, freeze_mode))
  step = jax.jit(jax.vmap(steps.train_step, in_axes=(None, 0), out_axes=(None, None), axis_name=steps.AXIS))
  rng = np.random.default_rng(0)
  for _ in range(steps_run):
    batch = {"image": rng.normal(size=(2, 8, 8, 8, 3)).astype(np.float32),  # 2 "devices" of 8
             "label": rng.integers(0, 2, (2, 8)).astype(np.int32)}
    state, metrics = step(state, batch)
    assert np.isfinite(metrics["loss"])
    yield jax.device_get(state)


def pruning_state(opt_state) -> pruning.PruningState:
  is_pruning = lambda x: isinstance(x, pruning.PruningState)
  return next(x for x in jax.tree.leaves(opt_state, is_leaf=is_pruning) if is_pruning(x))


def test_masks_keep_pruned_weights_zero_through_training():
  ever_pruned = None
  for state in pruned_training(0.8):
    masks = pruning_state(state.opt_state).masks
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(masks)):
      assert np.all(np.where(m, 0.0, p) == 0.0)  # Every masked weight is exactly zero.
    pruned = [~np.asarray(m) for m in jax.tree.leaves(masks)]
    if ever_pruned is not None:  # Pruned weights never come back (sparsity is monotone).
      assert all(np.all(now[before]) for now, before in zip(pruned, ever_pruned))
    ever_pruned = pruned
  report = pruning.sparsity_report(state.params)
  assert abs(report["overall"] - 0.8) < 0.01
  assert set(report["per_tensor"]) == {"Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"}
  assert np.any(state.params["Dense_0"]["bias"] != 0)  # Biases are never masked and do train.


def test_frozen_weights_stay_unpruned():
  """Only what trains is pruned: with Conv_0 and the BN frozen, their weights stay as initialised."""
  first = next(pruned_training(0.8, "Dense_0,Dense_1", steps_run=1))
  *_, last = pruned_training(0.8, "Dense_0,Dense_1")
  np.testing.assert_array_equal(last.params["Conv_0"]["kernel"], first.params["Conv_0"]["kernel"])
  assert np.all(last.params["Conv_0"]["kernel"] != 0)
  report = pruning.sparsity_report(last.params)["per_tensor"]
  assert report["Conv_0/kernel"] == 0.0 and abs(report["Dense_0/kernel"] - 0.8) < 0.01


def test_population_recomputes_masks_only_on_update_steps():
  """In a population (vmap over models) the update-step predicate is every model's: lax.cond stays
  a branch instead of a select that sorts every kernel on every step."""
  from jax_resnets.training import population  # pylint: disable=g-import-not-at-top
  params = {"conv": {"kernel": jnp.arange(24.0).reshape(2, 3, 4) - 10.0}}
  cfg = ml_collections.ConfigDict(dict(begin_step=2, end_step=4, frequency=1, scope="per_tensor"))
  tx = pruning.gradual_magnitude_pruning(cfg, 0.5)
  stacked = jax.tree.map(lambda x: jnp.stack([x, -x]), params)
  state = jax.vmap(tx.init)(stacked)
  update = population.over_models(tx.update, in_axes=(0, 0, 0))
  primitives = {e.primitive.name for e in jax.make_jaxpr(update)(stacked, state, stacked).jaxpr.eqns}
  assert "cond" in primitives and "sort" not in primitives, primitives
  # The same masks as each model pruned alone.
  zero = jax.tree.map(jnp.zeros_like, stacked)
  for _ in range(4):
    _, state = jax.jit(update)(zero, state, stacked)
  for k in range(2):
    alone = tx.init(jax.tree.map(lambda x: x[k], stacked))
    for _ in range(4):
      _, alone = tx.update(jax.tree.map(lambda x: x[k], zero), alone, jax.tree.map(lambda x: x[k], stacked))
    np.testing.assert_array_equal(state.masks["conv"]["kernel"][k], alone.masks["conv"]["kernel"])
  assert not bool(state.masks["conv"]["kernel"].all())
