"""Simulated post-training quantization against numpy references of TFLite's arithmetic."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jax_resnets.studies.celeba_cie import quantization as q


def np_round(x):  # TFLite's std::round: halves away from zero.
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def np_weight_int8(w):
  scale = np.abs(w).max() / 127.0
  return np.clip(np_round(w / scale), -127, 127) * scale


def np_activation_int8(x, lo, hi):
  lo, hi = min(lo, 0.0), max(hi, 0.0)
  scale = (hi - lo) / 255.0
  zp = np.clip(np_round(-128 - lo / scale), -128, 127)
  return (np.clip(np_round(x / scale) + zp, -128, 127) - zp) * scale


def test_weight_round_trip_matches_numpy_including_halves():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(q.fake_quant_weight(jnp.asarray(w))), np_weight_int8(w), rtol=1e-6, atol=1e-7)
  # max|w| = 31.75 gives scale 0.25 exactly: -0.375 and 0.625 are -1.5 and 2.5 steps.
  qi, scale = q.symmetric_int8(jnp.asarray([-31.75, -0.375, 0.0, 0.625, 31.75]))
  np.testing.assert_array_equal(np.asarray(qi), [-127, -2, 0, 3, 127])  # Half away from zero, not to even.
  assert qi.dtype == jnp.int8 and float(scale) == 0.25


def test_activation_round_trip_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1.3, 4.0, size=1000).astype(np.float32)
  for lo, hi in ((-1.0, 3.0), (0.5, 3.0), (-2.0, -0.1)):  # Range always extended to include 0.
    got = np.asarray(q.fake_quant_activation(jnp.asarray(x), lo, hi))
    np.testing.assert_allclose(got, np_activation_int8(x, lo, hi), rtol=1e-5, atol=1e-6)
  assert np.unique(np.asarray(q.fake_quant_activation(jnp.asarray(x), -1.0, 3.0))).size <= 256


def test_float16_and_bfloat16_round_trip():
  w = np.random.default_rng(2).normal(size=(64,)).astype(np.float32) * 1e3
  variables = {"params": {"fc": {"kernel": jnp.asarray(w)}}}
  f16 = np.asarray(q.quantize("float16", variables)["params"]["fc"]["kernel"])
  bf16 = np.asarray(q.quantize("bfloat16", variables)["params"]["fc"]["kernel"])
  np.testing.assert_array_equal(f16, w.astype(np.float16).astype(np.float32))
  np.testing.assert_array_equal(bf16, w.astype(ml_dtypes.bfloat16).astype(np.float32))
  assert f16.dtype == np.float32 and not np.array_equal(f16, w)


def test_batchnorm_folding_quantizes_the_folded_kernel():
  rng = np.random.default_rng(3)
  w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
  gamma, var = rng.uniform(0.1, 3, 4).astype(np.float32), rng.uniform(0.1, 2, 4).astype(np.float32)
  variables = {"params": {"layer1": {"0": {"conv1": {"kernel": w}, "bn1": {"scale": gamma, "bias": np.zeros(4)}}}},
               "batch_stats": {"layer1": {"0": {"bn1": {"mean": np.zeros(4), "var": var}}}}}
  f = gamma / np.sqrt(var + 1e-5)
  expected = np_weight_int8(w * f) / f
  got = np.asarray(q.quantize("int8_hybrid", variables)["params"]["layer1"]["0"]["conv1"]["kernel"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  unfolded = np.asarray(q.quantize("int8_hybrid", variables, fold_batchnorm=False)["params"]["layer1"]["0"]["conv1"]["kernel"])
  np.testing.assert_allclose(unfolded, np_weight_int8(w), rtol=1e-6, atol=1e-7)
  assert q.bn_path_for("layer2/0/downsample/0/kernel") == "layer2/0/downsample/1"
  assert q.bn_path_for("fc/kernel") is None


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(6, name="hidden")(x))
    return nn.Dense(2, name="out")(h), {}


def test_fixed_point_calibration_and_forward_match_numpy():
  model = MLP()
  rng = np.random.default_rng(4)
  calib, x = rng.normal(size=(100, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32) * 1.5
  variables = model.init(jax.random.key(0), calib[:1])
  ranges = q.calibrate(model.apply, variables, calib)
  p = jax.tree.map(np.asarray, variables["params"])
  h_calib = np.maximum(calib @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0)
  np.testing.assert_allclose(ranges["hidden"], [calib.min(), calib.max()], rtol=1e-6)
  np.testing.assert_allclose(ranges["out"], [h_calib.min(), h_calib.max()], rtol=1e-5)

  quantized = {**q.quantize("int8_fixed", variables), "activation_ranges": ranges}
  logits, _ = q.fixed_point_apply(model.apply)(quantized, jnp.asarray(x))
  w1, w2 = np_weight_int8(p["hidden"]["kernel"]), np_weight_int8(p["out"]["kernel"])
  h = np.maximum(np_activation_int8(x, *ranges["hidden"]) @ w1 + p["hidden"]["bias"], 0)
  expected = np_activation_int8(h, *ranges["out"]) @ w2 + p["out"]["bias"]
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
  assert not np.allclose(np.asarray(logits), np.asarray(model.apply(variables, x)[0]), atol=1e-6)
