"""oneDNN convolutions and batch norms on XLA:CPU, called through `jax.ffi` (measured in
docs/performance.md).

XLA:CPU runs convolutions with Eigen; its kernel-gradient convs (plus the layout copies it makes
for them) and strided input-gradient convs are 1.35-1.6x slower than oneDNN's, which PyTorch uses
(`python -m benchmarks.bench_convs`). jaxlib's own oneDNN switches do not reach convolutions, so
this module calls oneDNN itself: `onednn.cc` holds three XLA FFI handlers (forward, input
gradient, kernel gradient; NHWC / HWIO, float32) which `conv(strides, padding, algorithm)` ties
together with `jax.custom_vjp`. `algorithm="winograd"` (3x3 stride-1 convs, where `has_winograd()`)
takes about half the time of the direct conv, for all three. Under `jax.vmap` (a
population: training/population.py) one call runs all models' convs, in parallel, one core each
(no per-model slices and stacking: K=8 population step 1.16 -> ~0.7 x 8 single runs).
`batch_norm(relu, epsilon)` is a training-mode batch norm (+ ReLU) in one oneDNN op forward and
one backward, where XLA makes ~10 passes over the activations.

The library comes from the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels 2023.1 = oneDNN 3.1
(requirements.txt; Linux x86-64; 3.2 dropped the Winograd convs), or from `$ONEDNN_ROOT` (include/
and lib/). The handlers are compiled with the system C++ compiler on first use into
`$JAX_RESNETS_CACHE` (default ~/.cache/jax_resnets), keyed by a hash of the source, the jaxlib
version and the oneDNN location; later processes load the cached library. Where any of that is
missing, `available()` is False, says why in `why_not()`, and `model.conv=auto` / `model.norm=fast`
keep XLA's convs and flax's batch norm (same values to float tolerance: tests/test_onednn_conv.py,
tests/test_onednn_batch_norm.py).
"""
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

_SOURCE = pathlib.Path(__file__).with_suffix(".cc")
_FORWARD, _BACKWARD_DATA, _BACKWARD_WEIGHTS = "OnednnConvForward", "OnednnConvBackwardData", "OnednnConvBackwardWeights"
_BN_FORWARD, _BN_BACKWARD = "OnednnBatchNormForward", "OnednnBatchNormBackward"
_HEADER = pathlib.Path("include", "oneapi", "dnnl", "dnnl.hpp")
_LIB_DIRS = ("lib", "lib64", "lib/x86_64-linux-gnu")


def _find() -> tuple[pathlib.Path, pathlib.Path] | None:
  """(prefix, library folder) of the first of $ONEDNN_ROOT, this Python's prefix (where the
  wheels put it), /usr that holds oneDNN's headers and libdnnl.so."""
  for root in filter(None, (os.environ.get("ONEDNN_ROOT"), sys.prefix, "/usr")):
    root = pathlib.Path(root)
    libs = [root / d for d in _LIB_DIRS if list((root / d).glob("libdnnl.so*"))]
    if (root / _HEADER).exists() and libs:
      return root, libs[0]
  return None


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("JAX_RESNETS_CACHE", pathlib.Path.home() / ".cache" / "jax_resnets"))


def _build(prefix: pathlib.Path, lib_dir: pathlib.Path) -> pathlib.Path:
  """Compiles onednn.cc once per (source, jaxlib, oneDNN) into the cache; returns the .so."""
  key = hashlib.sha256(_SOURCE.read_bytes() + jaxlib.__version__.encode() + str(lib_dir).encode()).hexdigest()
  target = _cache_dir() / f"onednn-{key[:16]}.so"
  if target.exists():
    return target
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    raise RuntimeError("no C++ compiler (g++ / c++ / $CXX) on PATH")
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    out = pathlib.Path(tmp) / target.name
    cmd = [compiler, "-O2", "-std=c++17", "-fopenmp", "-shared", "-fPIC", str(_SOURCE), f"-I{jax.ffi.include_dir()}",
           f"-I{prefix / 'include'}", f"-L{lib_dir}", "-ldnnl", f"-Wl,-rpath,{lib_dir}", "-o", str(out)]
    logging.info("Compiling the oneDNN conv and batch-norm handlers: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
      lines = done.stderr.strip().splitlines() or [f"{compiler} exited with {done.returncode}"]
      detail = next((line for line in lines if "error" in line), lines[-1])  # the first error
      raise RuntimeError(f"compiling {_SOURCE.name} failed: {detail}")
    os.replace(out, target)  # atomic: concurrent processes each build, one file wins
  return target


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
  """(the built, loaded and registered handlers, None), or (None, why not in one line)."""
  if sys.platform != "linux":
    return None, f"oneDNN ops are built for Linux only (this is {sys.platform})"
  found = _find()
  if found is None:
    return None, ("oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp, or set ONEDNN_ROOT "
                  "to a folder with include/oneapi/dnnl and lib/libdnnl.so)")
  try:
    library = ctypes.cdll.LoadLibrary(str(_build(*found)))
  except (OSError, RuntimeError) as e:
    return None, f"oneDNN ops unavailable: {e}"
  library.OnednnBatchNormWorkspace.argtypes = [ctypes.c_int64] * 5
  library.OnednnBatchNormWorkspace.restype = ctypes.c_int64
  for name in (_FORWARD, _BACKWARD_DATA, _BACKWARD_WEIGHTS, _BN_FORWARD, _BN_BACKWARD):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
  return library, None


def why_not() -> str | None:
  """None when the oneDNN handlers are built, loaded and registered; else the reason, in one line."""
  return _load()[1]


def available() -> bool:
  return why_not() is None


def applicable(x: jax.Array, k: jax.Array, pads) -> bool:
  """True where `conv` can compute this NHWC / HWIO, stride-only conv: float32 on the CPU backend,
  oneDNN built (else logs once why not)."""
  return (jax.default_backend() == "cpu" and x.ndim == 4 and x.dtype == jnp.float32
          and k.dtype == jnp.float32 and all(p >= 0 for pair in pads for p in pair) and _built())


def _built() -> bool:
  """available(), else logs once why not (the ops fall back)."""
  if why_not() is not None:
    _warn_once(why_not())
    return False
  return True


@functools.cache
def _warn_once(reason: str) -> None:
  logging.warning("%s; convolutions fall back to XLA's and batch norms to flax's (slower on CPU: docs/performance.md).",
                  reason)


@functools.cache
def has_winograd() -> bool:
  """True where the loaded oneDNN has Winograd convs (F(4x4, 3x3); oneDNN 3.0-3.1 on AVX-512)."""
  library = _load()[0]
  return library is not None and bool(library.OnednnHasWinograd())


def winograd_applies(lhs_shape, rhs_shape, strides, out_hw) -> bool:
  """Where oneDNN's Winograd beats its direct conv (per-shape timings: docs/performance.md): 3x3,
  stride 1, channels in blocks of 16 and at least WINOGRAD_MIN_CHANNELS, output maps of at least
  WINOGRAD_MIN_MAP px a side and WINOGRAD_MIN_PIXELS output pixels in the batch. Below those its
  transforms and layout copies cost more than the multiplies it saves."""
  kh, kw, c, f = rhs_shape
  return ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and c % 16 == 0 and f % 16 == 0
          and min(c, f) >= WINOGRAD_MIN_CHANNELS and min(out_hw) >= WINOGRAD_MIN_MAP
          and lhs_shape[0] * out_hw[0] * out_hw[1] >= WINOGRAD_MIN_PIXELS)


WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_MAP, WINOGRAD_MIN_PIXELS = 64, 4, 1024
_ALGORITHMS = {"direct": 0, "winograd": 1}  # onednn.cc: Algorithm


@functools.lru_cache(maxsize=None)
def conv(strides: tuple[int, int], pads: tuple[tuple[int, int], tuple[int, int]],
         algorithm: str = "direct") -> Callable:
  """f(x [N,H,W,C], k [kh,kw,C,F]) -> [N,Ho,Wo,F]: `lax.conv_general_dilated(x, k, strides, pads,
  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))` and its gradients, computed by oneDNN with
  `algorithm` ("direct" or "winograd": same values to float tolerance, ~2e-5 relative). Under
  `jax.vmap` (a population of models) one call runs every model's conv, the models in parallel
  on one core each (onednn.cc: RunModels)."""
  if (reason := why_not()) is not None:
    raise RuntimeError(reason)
  attrs = dict(strides=np.asarray(strides, np.int64), padding=np.asarray([*pads[0], *pads[1]], np.int64),
               algorithm=np.int64(_ALGORITHMS[algorithm]))

  def call(target, shape, *operands):
    result = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(target, result, vmap_method="expand_dims")(*operands, **attrs)

  def out_shape(x, k):
    ho, wo = ((n + lo + hi - kk) // s + 1 for n, (lo, hi), kk, s in zip(x.shape[1:3], pads, k.shape[:2], strides))
    return (x.shape[0], ho, wo, k.shape[3])

  @jax.custom_vjp
  def f(x, k):
    return call(_FORWARD, out_shape(x, k), x, k)

  def f_fwd(x, k):
    return f(x, k), (x, k)

  def f_bwd(residuals, dy):
    x, k = residuals
    dk = call(_BACKWARD_WEIGHTS, k.shape, x, dy)
    return call(_BACKWARD_DATA, x.shape, dy, k, dk), dk  # dx after dk (onednn.cc: BackwardData)

  f.defvjp(f_fwd, f_bwd)
  return f


def batch_norm_applies(x: jax.Array) -> bool:
  """True where `batch_norm` can normalize x: NHWC float32 on the CPU backend, oneDNN built (else
  logs once why not)."""
  return jax.default_backend() == "cpu" and x.ndim == 4 and x.dtype == jnp.float32 and _built()


@functools.lru_cache(maxsize=None)
def batch_norm(relu: bool, epsilon: float) -> Callable:
  """f(x [N,H,W,C], scale [C], shift [C]) -> (y, mean, var) with the batch's statistics: mean and
  var (biased) over N, H, W, and y = (x - mean) / sqrt(var + epsilon) * scale + shift, then ReLU
  where `relu`: flax's `nn.BatchNorm` in training (+ `nn.relu`), in one oneDNN op for the forward
  and one for the backward, whose gradients go through the statistics as flax's do. mean and var
  come out of `lax.stop_gradient` (running averages only). Under `jax.vmap` one call runs every
  model's, in parallel (onednn.cc: ForEachModel)."""
  if (reason := why_not()) is not None:
    raise RuntimeError(reason)
  attrs = dict(act=np.int64(1 if relu else 0), eps=np.float32(epsilon))
  library = _load()[0]

  def forward(x, scale, shift):
    n, h, w, c = x.shape
    workspace = library.OnednnBatchNormWorkspace(n, h, w, c, int(relu)) if relu else 0
    if workspace < 0:
      raise RuntimeError(f"oneDNN could not make a batch norm + ReLU for shape {x.shape}")
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    results = (f32(x.shape), f32((c,)), f32((c,)), jax.ShapeDtypeStruct((workspace,), jnp.uint8))
    return jax.ffi.ffi_call(_BN_FORWARD, results, vmap_method="expand_dims")(x, scale, shift, **attrs)

  @jax.custom_vjp
  def f(x, scale, shift):
    return forward(x, scale, shift)[:3]

  def f_fwd(x, scale, shift):
    y, mean, var, workspace = forward(x, scale, shift)
    return (y, mean, var), (x, scale, mean, var, workspace)

  def f_bwd(residuals, cotangents):
    x, scale, mean, var, workspace = residuals
    results = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, scale, scale))
    call = jax.ffi.ffi_call(_BN_BACKWARD, results, vmap_method="expand_dims")
    return call(x, scale, mean, var, workspace, cotangents[0], **attrs)  # mean, var: stop_gradient

  f.defvjp(f_fwd, f_bwd)

  def normalize(x, scale, shift):
    y, mean, var = f(x, scale, shift)
    return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
  return normalize
