"""Freeze modes: frozen params and BN statistics bit-identical after training steps."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_resnets import config_lib
from jax_resnets.models import resnet
from jax_resnets.training import freeze, steps
from jax_resnets.training.state import TrainState

WIDTH = 4


def random_variables(model, size=16, seed=0) -> dict:
  """Random params and BN statistics from shapes only (no eager `model.init`)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(1.0, 0.3, s.shape), s.dtype), dict(shapes))


def flat(tree):
  return {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(jax.device_get(tree)).items()}


def test_frozen_parameters_and_statistics_bit_identical():
  """3 steps of SGD with momentum and weight decay 0.1 through `steps.train_step`: any leak of an
  update into a frozen leaf shows. A prefix list here; head_only and final_block are checked end
  to end (imported weights -> loop -> checkpoint) in test_transfer_grid.py."""
  mode, trainable_roots = "layer3.1,fc", ("layer3/1/", "fc/")
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=WIDTH, bn_axis_name=steps.AXIS)
  variables = random_variables(model)
  tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9))
  tx = freeze.optimizer(tx, mode)  # What loop.build does with config.freeze.
  before = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]),
                      rng=jax.random.key_data(jax.random.key(0)),
                      apply_fn=freeze.frozen_batch_norm(model.apply, mode), tx=tx)
  state = before
  step = jax.jit(jax.vmap(steps.train_step, in_axes=(None, 0), out_axes=(None, None), axis_name=steps.AXIS))
  rng = np.random.default_rng(1)
  for _ in range(3):
    batch = {"image": jnp.asarray(rng.normal(size=(2, 8, 16, 16, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, (2, 8)))}
    state, _ = step(state, batch)
  for collection in ("params", "batch_stats"):
    old, new = flat(getattr(before, collection)), flat(getattr(state, collection))
    for k in old:
      if k.startswith(trainable_roots):
        assert not np.array_equal(old[k], new[k]), f"{collection} {k} should train in mode {mode}"
      else:
        assert np.array_equal(old[k], new[k]), f"{collection} {k} changed although frozen in mode {mode}"


def test_frozen_backbone_runs_bn_on_running_statistics():
  """head_only: the frozen backbone computes the same features in training as in eval."""
  model = resnet.ResNet(depth=18, num_classes=10, stem="cifar", width=WIDTH)
  variables = random_variables(model)
  rng = np.random.default_rng(0)
  apply = freeze.frozen_batch_norm(model.apply, "head_only")
  x = jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32)
  (_, train_out), updates = jax.jit(lambda v, x: apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  _, eval_out = jax.jit(lambda v, x: apply(v, x, train=False))(variables, x)
  np.testing.assert_array_equal(np.asarray(train_out["features"]), np.asarray(eval_out["features"]))
  assert jax.tree.all(jax.tree.map(np.array_equal, updates["batch_stats"], variables["batch_stats"]))
  (_, plain_out), _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  assert not np.allclose(np.asarray(plain_out["features"]), np.asarray(eval_out["features"]))


def test_full_mode_changes_nothing():
  tx = optax.sgd(0.1)
  assert freeze.optimizer(tx, "full") is tx and freeze.frozen_batch_norm(print, "full") is print


def test_prefixes_match_whole_path_components():
  """'layer3.1' trains layer3/1/... but not layer3/10/... (ResNet-152's layer3 has 36 blocks)."""
  model = resnet.ResNet(depth=152, num_classes=10, stem="cifar", width=4)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  mask = freeze.trainable_mask(params, "layer3.1,fc")
  assert all(jax.tree.leaves(mask["layer3"]["1"])) and all(jax.tree.leaves(mask["fc"]))
  for block in ("10", "11", "19", "0", "2"):
    assert not any(jax.tree.leaves(mask["layer3"][block])), block
  labels = freeze.optimizer(optax.sgd(0.1), "layer3/1").init(params)  # flax-style prefixes too
  assert labels is not None
  with pytest.raises(Exception, match="matches no parameter"):
    freeze.check(params, "layer3.99")


def test_param_counts_and_bad_prefix():
  params = {"conv1": {"kernel": jnp.zeros((3, 3, 3, 4))}, "layer3": {"10": {"conv1": {"kernel": jnp.zeros(5)}},
                                                                     "1": {"conv1": {"kernel": jnp.zeros(7)}}},
            "fc": {"kernel": jnp.zeros((4, 10)), "bias": jnp.zeros(10)}}
  assert freeze.param_counts(params, "head_only") == (50, 50 + 108 + 12)
  assert freeze.param_counts(params, "layer3.1") == (7, 170)  # Not layer3.10.
  assert freeze.param_counts(params, ["layer3/10", "fc"]) == (55, 170)
  assert freeze.param_counts(params, "full") == (170, 170)
  with pytest.raises(config_lib.ConfigError, match="'layer5' matches no parameter"):
    freeze.check(params, "layer5,fc")
  mask = freeze.trainable_mask(params, "final_block")
  assert mask["fc"]["kernel"] and not mask["layer3"]["1"]["conv1"]["kernel"]
