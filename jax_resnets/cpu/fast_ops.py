"""CPU-fast equivalents of ResNet pieces: same forward values, same parameters, cheaper gradients.

Measured in docs/performance.md (`python -m benchmarks.bench ...`); tests/test_perf_equivalence.py
checks each against the reference op (values and gradients).

* `max_pool_3x3_s2`: torchvision's MaxPool2d(3, 2, padding=1). The forward is `nn.max_pool`
  itself (bitwise equal); the backward replaces XLA:CPU's select-and-scatter (95 ms at the
  64x64 ResNet-18 stem, b64, against torch's 5.7 ms) by nine strided compares and one fused
  sum of interior-padded arrays. Ties go to the first maximum in raster order of the window,
  as XLA's select-and-scatter (`>=` select) and torch do.
* `AutoConv`: `nn.Conv`'s parameters and call signature; per conv, `conv_plan` picks who
  computes it and its gradients, measured fastest at that shape (`python -m
  benchmarks.bench_convs`): one matmul per kernel tap over the outputs where that tap is
  inside the map (`kn2row_conv`) where the output map is at most `SMALL_MAP` a side (XLA:CPU
  turns those into a swapped-operand conv costing ~0.4 s per 3x3 conv at 2x2 maps); oneDNN
  (`onednn.py`, CPU, output maps of 5+ pixels a side, Winograd where it applies); else
  `lax.conv_general_dilated` (what `nn.Conv` computes). `jax.vmap` over models (population
  training) loops over the models instead of making a grouped conv; convs traced inside
  `models_in_parallel()` (population.py's vmapped steps) go to oneDNN at every map size, which
  runs the models in parallel, one core each.
* `BatchNorm`: `nn.BatchNorm`'s variables and values; in a population's training step on the
  CPU, oneDNN computes the statistics, the normalization and a following ReLU in one op and the
  gradients in one (`onednn.batch_norm`), each model on one core.
"""
import contextlib
import contextvars
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

from jax_resnets.cpu import onednn
from jax_resnets.models import resnet
from jax_resnets.models.padding import explicit_padding

_POOL_WINDOW, _POOL_STRIDE, _POOL_PAD = 3, 2, 1


def _reference_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (_POOL_WINDOW,) * 2, (_POOL_STRIDE,) * 2, padding=((_POOL_PAD,) * 2,) * 2)


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """NHWC max-pool 3x3, stride 2, padding 1 (-inf): the max of the nine strided window views
  (one fusion; the same values as XLA:CPU's reduce-window, 2.4x faster at the 64 px stem:
  docs/performance.md), with a scatter-free backward."""
  out_hw = output_size(x.shape, (_POOL_WINDOW, _POOL_WINDOW), (_POOL_STRIDE,) * 2, ((_POOL_PAD,) * 2,) * 2)
  return functools.reduce(jnp.maximum, [view for _, view in _window_views(_pool_padded(x), out_hw)])


def _pool_padded(x: jax.Array) -> jax.Array:
  p = _POOL_PAD
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)


def _pool_fwd(x):
  y = max_pool_3x3_s2(x)
  return y, (x, y)


def _window_views(xp: jax.Array, out_hw: tuple[int, int]):
  """Yields ((di, dj), view): xp[:, di + 2i, dj + 2j, :] for every window offset, raster order."""
  n, _, _, c = xp.shape
  ho, wo = out_hw
  for di in range(_POOL_WINDOW):
    for dj in range(_POOL_WINDOW):
      end = (n, di + _POOL_STRIDE * (ho - 1) + 1, dj + _POOL_STRIDE * (wo - 1) + 1, c)
      yield (di, dj), lax.slice(xp, (0, di, dj, 0), end, (1, _POOL_STRIDE, _POOL_STRIDE, 1))


def _pool_bwd(residuals, dy):
  """dx: dy routed to the first maximum of each window; the 9 routes summed in one fusion."""
  x, y = residuals
  p = _POOL_PAD
  xp = _pool_padded(x)
  hp, wp = xp.shape[1:3]
  ho, wo = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, dy.dtype)
  for (di, dj), view in _window_views(xp, (ho, wo)):
    first = (view == y) & ~taken
    taken = taken | first
    g = jnp.where(first, dy, jnp.zeros((), dy.dtype))
    # Transpose of the strided slice: interior padding puts g[i, j] at (di + 2i, dj + 2j).
    hi_h, hi_w = hp - di - _POOL_STRIDE * (ho - 1) - 1, wp - dj - _POOL_STRIDE * (wo - 1) - 1
    dxp = dxp + lax.pad(g, jnp.zeros((), dy.dtype),
                        ((0, 0, 0), (di, hi_h, _POOL_STRIDE - 1), (dj, hi_w, _POOL_STRIDE - 1), (0, 0, 0)))
  return (dxp[:, p:hp - p, p:wp - p, :],)


max_pool_3x3_s2.defvjp(_pool_fwd, _pool_bwd)


# Output maps at most this many pixels a side use kn2row_conv. At 4x4 oneDNN's Winograd is faster
# (b128 512->512: 17-34 ms per part against kn2row's 27-45 ms: docs/performance.md).
SMALL_MAP = 2
_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  return len(lhs_shape) == 4 and lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC) == (
      lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers))


def output_size(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation=None) -> list[int]:
  """[Ho, Wo] of a NHWC / HWIO conv."""
  dilation = tuple(rhs_dilation or (1, 1))
  pads = explicit_padding(padding, lhs_shape[1:3], rhs_shape[:2], tuple(window_strides), dilation)
  return [(n + lo + hi - (k - 1) * d - 1) // s + 1
          for n, (lo, hi), k, s, d in zip(lhs_shape[1:3], pads, rhs_shape[:2], window_strides, dilation)]


def prefers_matmul(lhs_shape, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, small_map: int = SMALL_MAP) -> bool:
  """True for a 2-D NHWC conv, k > 1, no input dilation, whose output map is <= small_map a side."""
  if len(lhs_shape) != 4 or max(rhs_shape[:2]) == 1 or any(d != 1 for d in (lhs_dilation or (1, 1))):
    return False
  if not _is_nhwc(lhs_shape, rhs_shape, dimension_numbers):
    return False
  out = output_size(lhs_shape, rhs_shape, window_strides, padding, rhs_dilation)
  return max(out) <= small_map


def _tap_span(size: int, out_size: int, stride: int, tap: int, pad_lo: int) -> tuple[int, int, slice] | None:
  """(first output, end output, input slice) along one axis for the outputs whose window puts
  kernel tap `tap` on a real input pixel (output o reads input o * stride + tap - pad_lo)."""
  outs = [o for o in range(out_size) if 0 <= o * stride + tap - pad_lo < size]
  if not outs:
    return None
  first, last = (o * stride + tap - pad_lo for o in (outs[0], outs[-1]))
  return outs[0], outs[-1] + 1, slice(first, last + 1, stride)


def kn2row_conv(x: jax.Array, k: jax.Array, strides, padding, precision=None) -> jax.Array:
  """A NHWC / HWIO conv as one matmul per kernel tap, each over only the outputs whose window
  puts that tap inside the map, summed (kn2row-as, Vasudevan et al. 2017).

  On small maps most of im2col's patches are padding (5 of 9 taps at ResNet-18's 2x2 layer4
  maps) and XLA:CPU's own conv is a swapped-operand conv costing ~0.4 s; here every multiply
  meets a real pixel, no patch or block matrix is built (XLA only copies each tap k[a, b] out of
  k), and JAX's autodiff of the slices and pads gives both gradients. It took the 64 px ResNet-18
  eval step from 67.5 to 60.6 ms (docs/performance.md).
  """
  n, h, w, _ = x.shape
  kh, kw, _, f = k.shape
  (lo_h, _), (lo_w, _) = explicit_padding(padding, (h, w), (kh, kw), tuple(strides), (1, 1))
  ho, wo = output_size(x.shape, k.shape, strides, padding)
  dtype = jnp.result_type(x, k)
  out = jnp.zeros((n, ho, wo, f), jnp.promote_types(dtype, jnp.float32))  # bf16 taps summed in f32, as a conv
  # Copy the taps out of k when x is ready, not at the start of the program (they only need k):
  # there they ran beside the stem's oneDNN conv and slowed it (stem 6.95 -> 5.61 ms with this
  # order). XLA:CPU drops optimization barriers, so the order is a data dependency: k + 0 * x[0, 0, 0, 0].
  k = k + jnp.zeros((), k.dtype) * lax.stop_gradient(x[0, 0, 0, 0])
  for a in range(kh):
    for b in range(kw):
      rows, cols = _tap_span(h, ho, strides[0], a, lo_h), _tap_span(w, wo, strides[1], b, lo_w)
      if rows is not None and cols is not None:
        z = jnp.matmul(x[:, rows[2], cols[2]], k[a, b], precision=precision, preferred_element_type=out.dtype)
        out = out + jnp.pad(z, ((0, 0), (rows[0], ho - rows[1]), (cols[0], wo - cols[1]), (0, 0)))
  return out.astype(dtype)


# oneDNN (onednn.py) runs the convs whose output map is at least this many pixels a side;
# below it XLA's or the matmul forms were faster in a per-shape scan (docs/performance.md). Under
# `models_in_parallel` it runs them all: one core per model beats a loop of XLA convs (K=8 step
# 350 -> 327 ms).
ONEDNN_MIN_MAP = 5
_MODELS_IN_PARALLEL = contextvars.ContextVar("models_in_parallel", default=False)


@contextlib.contextmanager
def models_in_parallel():
  """Convs and batch norms traced inside are vmapped over a population of models
  (training/population.py)."""
  token = _MODELS_IN_PARALLEL.set(True)
  try:
    yield
  finally:
    _MODELS_IN_PARALLEL.reset(token)


def conv_plan(lhs_shape, rhs_shape, window_strides, padding, use_onednn: bool,
              winograd: bool = False, population: bool = False) -> str:
  """Who computes a NHWC / HWIO conv (stride only: no dilation, no groups) and both its gradients,
  the fastest at that shape on XLA:CPU (per-op times: `python -m benchmarks.bench_convs`):
  * "kn2row" (`kn2row_conv`: one matmul per kernel tap) where the output map is <= SMALL_MAP a
    side: XLA's conv there is a swapped-operand conv costing 0.15-0.4 s;
  * "winograd" (oneDNN's Winograd) where `winograd` (the loaded oneDNN has it) and
    `onednn.winograd_applies` (3x3, stride 1, >= 64 channels, enough output pixels);
  * "onednn" (direct) when it is available and the output map is >= ONEDNN_MIN_MAP a side
    (any size for a `population`);
  * "xla" otherwise."""
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)
  if prefers_matmul(lhs_shape, rhs_shape, window_strides, padding, None, None, dn):
    return "kn2row"
  out_hw = tuple(output_size(lhs_shape, rhs_shape, window_strides, padding))
  if use_onednn and winograd and onednn.winograd_applies(lhs_shape, rhs_shape, window_strides, out_hw):
    return "winograd"
  if use_onednn and (population or min(out_hw) >= ONEDNN_MIN_MAP):
    return "onednn"
  return "xla"


def auto_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                              dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated`'s values and gradients, computed by the formulation `conv_plan`
  picks; `jax.vmap` over models runs one conv per model (or one batched matmul per tap)."""
  if kwargs or any(d != 1 for d in (lhs_dilation or (1,))):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)
  strides, dilation = tuple(window_strides), tuple(rhs_dilation or (1,) * (lhs.ndim - 2))
  padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
  plan = "xla"
  if feature_group_count == 1 and all(d == 1 for d in dilation) and _is_nhwc(lhs.shape, rhs.shape,
                                                                             dimension_numbers):
    pads = tuple(map(tuple, explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides,
                                                           (1, 1))))
    use_onednn = onednn.applicable(lhs, rhs, pads)
    plan = conv_plan(lhs.shape, rhs.shape, strides, padding, use_onednn, use_onednn and onednn.has_winograd(),
                     _MODELS_IN_PARALLEL.get())
  if plan == "kn2row":  # JAX's autodiff; its vmap is one batched matmul per tap for all models
    return kn2row_conv(lhs, rhs, strides, padding, precision)
  if plan in ("onednn", "winograd"):  # own custom_vjp (both gradients in order), vmap rule
    return onednn.conv(strides, pads, "direct" if plan == "onednn" else plan)(lhs, rhs)
  return looped_conv(strides, padding, dilation, _hashable(dimension_numbers), feature_group_count, precision)(
      lhs, rhs)


def _hashable(dimension_numbers):
  if dimension_numbers is None or isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers
  return tuple(dimension_numbers)


def _looped(fn: Callable) -> Callable:
  """`fn` whose vmap is an unrolled loop over the mapped axis (one plain call per model)."""
  fn = custom_vmap(fn)

  @fn.def_vmap
  def rule(axis_size, in_batched, *args):
    outs = [fn(*[a[i] if b else a for a, b in zip(args, in_batched)]) for i in range(axis_size)]
    return jnp.stack(outs), True
  return fn


@functools.lru_cache(maxsize=None)
def looped_conv(strides, padding, dilation, dimension_numbers, groups, precision) -> Callable:
  """`lax.conv_general_dilated` with a custom_vjp whose forward and both gradients are `_looped`:
  its vmap (a population of models: training/population.py) runs one conv per model instead of
  the grouped conv JAX's batching rule makes (XLA:CPU's grouped conv was 2.2x slower than the
  loop: docs/performance.md)."""
  def xla(x, k):
    return lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=dimension_numbers, feature_group_count=groups,
                                    precision=precision)
  forward = _looped(xla)
  grad_x = _looped(lambda x, k, dy: jax.vjp(lambda v: xla(v, k), x)[1](dy)[0])
  grad_k = _looped(lambda x, k, dy: jax.vjp(lambda w: xla(x, w), k)[1](dy)[0])

  @jax.custom_vjp
  def conv(x, k):
    return forward(x, k)

  def conv_fwd(x, k):
    return forward(x, k), (x, k)

  def conv_bwd(residuals, dy):
    x, k = residuals
    return grad_x(x, k, dy), grad_k(x, k, dy)

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


class AutoConv(nn.Conv):
  """`nn.Conv` (same parameters) whose convolution is `auto_conv_general_dilated`."""
  conv_general_dilated: Any = auto_conv_general_dilated


class BatchNorm(resnet.BatchNorm):
  """`nn.BatchNorm` (same variables, same values) that can apply a ReLU itself (`relu=True`). In a
  population's training step (traced in `models_in_parallel`), on float32 NHWC inputs on the CPU,
  oneDNN computes the statistics, the normalization and the ReLU in one op and the gradients in
  one, the models in parallel (onednn.batch_norm; K=8 step 386 -> 311 ms: docs/performance.md).
  Elsewhere it is flax's: a single model's step was as fast or faster with XLA's fusions (running
  averages, BN synced over several devices and masks are flax's too)."""
  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None, relu=False):
    running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if not self._onednn_applies(x, running, mask):
      y = super().__call__(x, use_running_average, mask=mask)
      return nn.relu(y) if relu else y
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
    y, mean, var = onednn.batch_norm(relu, float(self.epsilon))(x, scale, bias)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    n = x.size // c  # Torch's (and resnet.BatchNorm's) unbiased batch variance in the running average.
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var * (n / max(n - 1, 1))
    return y

  def _onednn_applies(self, x, use_running_average, mask) -> bool:
    """A population's batch statistics of float32 NHWC x, nothing to sync them over (at most one
    device on `axis_name`; else flax's pmean), scale and bias, oneDNN built."""
    if (not _MODELS_IN_PARALLEL.get() or use_running_average or self.is_initializing() or mask is not None
        or self.axis not in (-1, 3)):
      return False
    if self.axis_name is not None and lax.axis_size(self.axis_name) > 1:
      return False
    return (self.use_scale and self.use_bias and (self.dtype or x.dtype) == jnp.float32
            and self.param_dtype == jnp.float32 and onednn.batch_norm_applies(x))
