r"""torchvision ResNet checkpoints -> this project's params / batch_stats (never downloads).

  python -m jax_resnets.models.torchvision_import resnet152-394f9c45.pth [--out=DIR]
  python -m jax_resnets.models.torchvision_import stand_in.safetensors --write_random --depth=18 --width=4

Reads a torchvision state dict (`.pth` with torch when it is installed, `.safetensors`
with the `safetensors` package, no torch needed), renames and transposes every tensor
(conv OIHW -> HWIO, linear OI -> IO, BN weight/bias/running_* -> scale/bias/mean/var) and
saves the result as an orbax checkpoint `{"params", "batch_stats"}` (by default next to
the file, `<file>.orbax`), which later runs load instead of the `.pth`.

`--config.init.checkpoint=PATH` starts a run from such a file or orbax directory. A bare
file name is looked up in `$JAX_RESNETS_WEIGHTS` (default `~/.cache/jax_resnets/weights`)
and in torch hub's cache (`$TORCH_HOME/hub/checkpoints`). Matching against the model:
the head (`fc`) is re-initialised when its class count differs; the `downsample` tensors
of blocks whose skip is disabled are skipped (the block has no shortcut); any other
missing, unexpected or mis-shaped tensor fails naming it.
"""
import argparse
import os
import sys

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jax_resnets.config_lib import ConfigError

# torchvision's file names (IMAGENET1K_V1, then V2 where it exists).
TORCHVISION_FILES = {
    18: ("resnet18-f37072fd.pth",),
    34: ("resnet34-b627a593.pth",),
    50: ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    101: ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
    152: ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"),
}

Flat = dict[tuple[str, ...], np.ndarray]  # ("params"|"batch_stats", *module path, leaf) -> array


class WeightsError(ConfigError):
  """The checkpoint does not fit the model; the message names the tensor."""


def weights_dirs() -> list[str]:
  """Where bare weight-file names are looked up, first match wins."""
  torch_home = os.environ.get("TORCH_HOME", os.path.expanduser("~/.cache/torch"))
  return [os.environ.get("JAX_RESNETS_WEIGHTS", os.path.expanduser("~/.cache/jax_resnets/weights")),
          os.path.join(torch_home, "hub", "checkpoints")]


def resolve(path: str, depth: int | None = None) -> str:
  """An existing file/directory for `path`, or FileNotFoundError saying what to put where."""
  path = os.path.expanduser(path)
  candidates = [path] + [os.path.join(d, os.path.basename(path)) for d in weights_dirs()]
  for candidate in candidates:
    if os.path.exists(candidate):
      return candidate
  expected = TORCHVISION_FILES.get(depth, ())
  want = (f"torchvision's ImageNet ResNet-{depth} file is {' or '.join(expected)}" if expected
          else "expected a torchvision ResNet state dict")
  raise FileNotFoundError(
      f"pretrained weights {path!r} not found ({want}; .pth or .safetensors): put it in "
      f"$JAX_RESNETS_WEIGHTS (now {weights_dirs()[0]}) or pass --config.init.checkpoint=/full/path "
      "(this code never downloads)")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """`.safetensors` (no torch needed) or a torch `.pth` state dict -> numpy arrays; a damaged file
  (truncated, corrupt, not a state dict) is one WeightsError naming it."""
  try:
    return _read_state_dict(path)
  except WeightsError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (torch / safetensors raise many types on bad bytes)
    raise WeightsError(f"{path} cannot be read as a weights file ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}); download it again") from e


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError(f"reading {path} needs torch (not installed); convert it to .safetensors or to an "
                       "orbax checkpoint on a machine with torch: python -m jax_resnets.models."
                       "torchvision_import FILE") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def torch_to_flax(state_dict: dict[str, np.ndarray]) -> Flat:
  """Renames and transposes every tensor; drops `num_batches_tracked`."""
  out = {}
  for key, value in state_dict.items():
    *module, leaf = key.split(".")
    value = np.asarray(value)
    if leaf == "num_batches_tracked":
      continue
    if leaf == "weight" and value.ndim == 4:
      out[("params", *module, "kernel")] = value.transpose(2, 3, 1, 0)
    elif leaf == "weight" and value.ndim == 2:
      out[("params", *module, "kernel")] = value.T
    elif leaf in ("weight", "bias"):
      out[("params", *module, "scale" if leaf == "weight" else "bias")] = value
    elif leaf in ("running_mean", "running_var"):
      out[("batch_stats", *module, "mean" if leaf == "running_mean" else "var")] = value
    else:
      raise WeightsError(f"unexpected tensor {key!r} in the checkpoint (not a torchvision ResNet layer)")
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def torch_name(key: tuple[str, ...]) -> str:
  """("params", "layer1", "0", "conv1", "kernel") -> "layer1.0.conv1.weight" (for messages)."""
  _, *module, leaf = key
  names = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}
  return ".".join([*module, names[leaf]])


def torch_shape(key: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  if key[-1] == "kernel":
    return tuple(shape[::-1]) if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape)


def _skipped(key: tuple[str, ...], disabled_skips, has_head: bool) -> bool:
  """A downsample of a block without shortcut, or the head of a model without one."""
  module = key[1:-1]
  if not has_head and module[:1] == ("fc",):
    return True
  return len(module) >= 3 and module[2] == "downsample" and f"{module[0]}.{module[1]}" in disabled_skips


def match(converted: Flat, variables: dict, disabled_skips=()) -> tuple[dict, dict]:
  """Fills the model's `{"params", "batch_stats"}` from `converted`; returns (variables, report).

  The report counts loaded tensors, lists skipped ones and says whether the head was
  re-initialised (kept at the model's fresh initialisation). `variables` may be abstract
  (`jax.eval_shape`) unless the head needs re-initialising.
  """
  template = flax.traverse_util.flatten_dict(variables)
  has_head = any(k[1] == "fc" for k in template)
  out, report = {}, {"loaded": 0, "skipped": [], "head_reinitialised": False}
  for key, init in sorted(template.items(), key=lambda kv: kv[0][0] != "params"):  # params first.
    if key not in converted:
      raise WeightsError(f"checkpoint has no tensor {torch_name(key)!r} (needed by the model)")
    value, expected = converted[key], tuple(np.shape(init))
    if value.shape != expected:
      head_classes_differ = key[1] == "fc" and (len(expected) == 1 or value.shape[0] == expected[0])
      if not head_classes_differ:
        raise WeightsError(f"tensor {torch_name(key)!r} has shape {torch_shape(key, value.shape)} in the "
                           f"checkpoint but the model needs {torch_shape(key, expected)}")
      out[key], report["head_reinitialised"] = init, True
      continue
    out[key] = jax.numpy.asarray(value, init.dtype)
    report["loaded"] += 1
  for key in converted.keys() - template.keys():
    if not _skipped(key, disabled_skips, has_head):
      raise WeightsError(f"unexpected tensor {torch_name(key)!r} in the checkpoint (the model has no such "
                         "layer: wrong depth or width?)")
    report["skipped"].append(torch_name(key))
  report["skipped"].sort()
  return flax.traverse_util.unflatten_dict(out), report


def save_orbax(path: str, converted: Flat) -> None:
  tree = flax.traverse_util.unflatten_dict(converted)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(path), tree)


def load_orbax(path: str) -> Flat:
  """An orbax `{"params", "batch_stats"}` tree (ours, or a run's `best/<step>/state`)."""
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(os.path.abspath(path))
  tree = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree).items()}


def load(path: str, depth: int | None = None, cache: bool = True) -> Flat:
  """A weights file or orbax directory -> converted tensors; caches `.pth` as `<file>.orbax`."""
  path = resolve(path, depth)
  if os.path.isdir(path):
    return load_orbax(path)
  cached = path + ".orbax"
  if cache and os.path.isdir(cached):
    logging.info("Using converted weights %s.", cached)
    return load_orbax(cached)
  converted = torch_to_flax(read_state_dict(path))
  if cache and jax.process_count() == 1:  # Multi-process runs only read (orbax saves are collective).
    try:
      save_orbax(cached, converted)
      logging.info("Saved converted weights to %s.", cached)
    except OSError as e:  # A read-only weights dir only costs the conversion next time.
      logging.warning("Could not cache converted weights at %s: %s", cached, e)
  return converted


def init_from_checkpoint(state, path: str, model_cfg, tx=None):
  """`state` with params/batch_stats from `path` (and a fresh `opt_state` if `tx`)."""
  converted = load(path, model_cfg.get("depth"))
  variables, report = match(converted, {"params": state.params, "batch_stats": state.batch_stats},
                            tuple(model_cfg.get("disabled_skips", ())))
  logging.info("Initialised %d tensors from %s%s%s.", report["loaded"], path,
               "; head re-initialised (class count differs)" if report["head_reinitialised"] else "",
               f"; skipped {', '.join(report['skipped'])}" if report["skipped"] else "")
  state = state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))
  return state.replace(opt_state=(tx or state.tx).init(state.params))


def to_torchvision(variables: dict) -> dict[str, np.ndarray]:
  """The inverse of `torch_to_flax`: `{"params", "batch_stats"}` -> torchvision state dict."""
  out = {}
  for key, value in flax.traverse_util.flatten_dict(variables).items():
    value = np.asarray(value, np.float32)
    if key[-1] == "kernel":
      value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
    out[torch_name(key)] = np.ascontiguousarray(value)
  return out


def write_random_checkpoint(path: str, depth: int, width: int, num_classes: int = 1000, seed: int = 0) -> str:
  """A random ResNet in torchvision's layout as `.safetensors` (no torch, no compilation).

  Stands in for ImageNet weights in offline smoke runs (see configs/cifar100_transfer_grid.py):
  He-normal convs, small random head, identity BN (scale 1, bias 0, mean 0, var 1).
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from jax_resnets.models import resnet  # pylint: disable=g-import-not-at-top
  model = resnet.ResNet(depth=depth, num_classes=num_classes, width=width)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  rng = np.random.default_rng(seed)
  fill = {"scale": np.ones, "var": np.ones, "bias": np.zeros, "mean": np.zeros}
  flat = {}
  for key, leaf in flax.traverse_util.flatten_dict(dict(shapes)).items():
    if key[-1] == "kernel":  # fan_out as the model's own init (HWIO: kh * kw * out).
      fan = leaf.shape[-1] * (np.prod(leaf.shape[:2]) if len(leaf.shape) == 4 else 1)
      flat[key] = rng.normal(0.0, np.sqrt(2.0 / fan), leaf.shape).astype(np.float32)
    else:
      flat[key] = fill[key[-1]](leaf.shape, np.float32)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(to_torchvision(flax.traverse_util.unflatten_dict(flat)), path)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description="Convert a torchvision ResNet checkpoint to orbax.")
  parser.add_argument("weights", help="torchvision .pth / .safetensors file (or a bare name, see module doc)")
  parser.add_argument("--out", default=None, help="orbax directory (default: <weights>.orbax)")
  parser.add_argument("--write_random", action="store_true",
                      help="instead write a random stand-in .safetensors to WEIGHTS (offline smoke runs)")
  parser.add_argument("--depth", type=int, default=18)
  parser.add_argument("--width", type=int, default=4)
  args = parser.parse_args()
  if args.write_random:
    print(f"wrote {write_random_checkpoint(args.weights, args.depth, args.width)}")
    return
  try:
    converted = torch_to_flax(read_state_dict(resolve(args.weights)))
    out = args.out or resolve(args.weights) + ".orbax"
    save_orbax(out, converted)
  except (ConfigError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {len(converted)} tensors to {out}")


if __name__ == "__main__":
  main()
