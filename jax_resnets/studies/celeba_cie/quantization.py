"""Post-training quantization simulated in float32 JAX with TFLite's rounding and clipping.

Methods (`METHODS`), applied to a trained model's variables:
  float16 / bfloat16: every float parameter and BN statistic is rounded to the 16-bit type
    and computed in float32 again (TFLite "float16 quantization" dequantizes on load).
  int8_hybrid ("dynamic range"): conv and dense kernels -> int8, per-tensor symmetric
    (scale = max|w| / 127, q = clip(round(w / scale), -127, 127)); activations stay float.
  int8_fixed ("full integer"): int8 weights as above, and every activation that enters a
    conv or dense layer (the network input, post-ReLU and post-residual-add tensors) is
    quantized per tensor, asymmetric: range [min, max] calibrated over the first 100
    training examples (extended to include 0), scale = (max - min) / 255,
    zero_point = round(-128 - min / scale), q = clip(round(x / scale) + zero_point, -128, 127).
Rounding is half away from zero, as TFLite's `std::round`. With `fold_batchnorm` (default,
as the TFLite converter does) a conv kernel is first folded with its BN's per-channel factor
gamma / sqrt(var + eps), the folded kernel is quantized, and the factor is divided out again:
the unchanged model (conv with Q(w * f) / f, then BN) computes what the folded, quantized graph does.
Simplifications (also under Known limits in BUILD_NOTES.md): biases stay float (TFLite: int32 with scale s_in * s_w,
a negligible error), and layer outputs are not quantized separately from the next layer's input.
"""
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_resnets.studies.celeba_cie import pruning
from jax_resnets.training import freeze

METHODS = ("float16", "bfloat16", "int8_hybrid", "int8_fixed")
BN_EPSILON = 1e-5  # ResNet's BatchNorm epsilon (torchvision's).
QMIN, QMAX = -128, 127


def round_half_away(x):
  """TFLite rounding: halves go away from zero (jnp.round would go to even)."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def symmetric_int8(w):
  """Per-tensor symmetric int8: returns (q int8, scale)."""
  scale = jnp.max(jnp.abs(w)) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  q = jnp.clip(round_half_away(w / scale), -127, 127).astype(jnp.int8)
  return q, scale


def fake_quant_weight(w):
  q, scale = symmetric_int8(w)
  return q.astype(jnp.float32) * scale


def activation_params(lo, hi):
  """TFLite asymmetric int8 (scale, zero_point) for a calibrated range [lo, hi]."""
  lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
  scale = (hi - lo) / (QMAX - QMIN)
  scale = jnp.where(scale > 0, scale, 1.0)
  zero_point = jnp.clip(round_half_away(QMIN - lo / scale), QMIN, QMAX)
  return scale, zero_point


def fake_quant_activation(x, lo, hi):
  scale, zero_point = activation_params(lo, hi)
  q = jnp.clip(round_half_away(x / scale) + zero_point, QMIN, QMAX)
  return ((q - zero_point) * scale).astype(x.dtype)


def cast_roundtrip(variables, dtype):
  """float16 / bfloat16 weights: every float leaf rounded to `dtype` and back to float32."""
  return jax.tree.map(lambda x: x.astype(dtype).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      variables)


def bn_path_for(kernel_path: str) -> str | None:
  """'layer1/0/conv1/kernel' -> 'layer1/0/bn1'; '.../downsample/0/kernel' -> '.../downsample/1'."""
  parts = kernel_path.split("/")[:-1]
  if not parts:
    return None
  last = parts[-1]
  if last.startswith("conv"):
    return "/".join(parts[:-1] + ["bn" + last[4:]])
  if last == "0" and len(parts) > 1 and parts[-2] == "downsample":
    return "/".join(parts[:-1] + ["1"])
  return None


def _lookup(tree, path: str):
  for key in path.split("/"):
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def bn_factor(variables, kernel_path: str):
  """gamma / sqrt(var + eps) of the BN after this conv (None if it has none)."""
  bn = bn_path_for(kernel_path)
  params, stats = (_lookup(variables.get(c, {}), bn) if bn else None for c in ("params", "batch_stats"))
  if params is None or stats is None or "scale" not in params:
    return None
  return params["scale"] / jnp.sqrt(stats["var"] + BN_EPSILON)


def quantize_kernels(variables, fold_batchnorm: bool = True):
  """int8 per-tensor symmetric fake-quantization of every conv/dense kernel (BN-folded if asked)."""
  def one(path, w):
    if not pruning.is_prunable(path, w):
      return w
    f = bn_factor(variables, freeze.path_str(path)) if fold_batchnorm else None
    if f is None:
      return fake_quant_weight(w)
    safe = jnp.where(f != 0, f, 1.0)
    return jnp.where(f != 0, fake_quant_weight(w * safe) / safe, w)
  params = jax.tree_util.tree_map_with_path(one, variables["params"])
  return {**variables, "params": params}


def _is_quantized_layer(context) -> bool:
  return context.method_name == "__call__" and context.module.has_variable("params", "kernel")


def calibrate(apply_fn: Callable, variables, images) -> dict:
  """{layer path: [min, max]} of the inputs of every conv/dense layer over `images`.

  Pure and jit-able (the ranges are sown into a collection by a method interceptor), so a
  population is calibrated with one vmapped call.
  """
  def record(next_fun, args, kwargs, context):
    if _is_quantized_layer(context):
      x = args[0]
      context.module.sow("activation_ranges", "range", jnp.stack([jnp.min(x), jnp.max(x)]).astype(jnp.float32))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    _, state = apply_fn(variables, images, train=False, mutable=["activation_ranges"])
  flat = flax.traverse_util.flatten_dict(state["activation_ranges"], sep="/")
  return {k[:-len("/range")]: v[0] for k, v in flat.items()}


def fixed_point_apply(apply_fn: Callable) -> Callable:
  """apply_fn(variables, x, train=False) with int8 activations at every conv/dense input.

  The returned function takes `variables = {..., 'activation_ranges': {path: [min, max]}}`
  (a pytree, so it can be vmapped over a population).
  """
  def apply(variables, x, train: bool = False):
    ranges = variables["activation_ranges"]
    model_vars = {k: v for k, v in variables.items() if k != "activation_ranges"}

    def quantize_input(next_fun, args, kwargs, context):
      if _is_quantized_layer(context):
        r = ranges["/".join(context.module.path)]
        args = (fake_quant_activation(args[0], r[0], r[1]), *args[1:])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(quantize_input):
      return apply_fn(model_vars, x, train=train)
  return apply


def quantize(method: str, variables, fold_batchnorm: bool = True):
  """Weights of `variables` under `method` (activation ranges for int8_fixed come from `calibrate`)."""
  if method == "float16":
    return cast_roundtrip(variables, jnp.float16)
  if method == "bfloat16":
    return cast_roundtrip(variables, jnp.bfloat16)
  if method in ("int8_hybrid", "int8_fixed"):
    return quantize_kernels(variables, fold_batchnorm)
  raise ValueError(f"cie.quantization: unknown method {method!r} (known: {', '.join(METHODS)})")
