r"""Accuracy parity on real data: the project's CLI vs a plain PyTorch twin, over N seeds.

  python -m benchmarks.parity --make_digits=/tmp/digits   # once: sklearn digits as an image folder
  python -m benchmarks.parity --dataset=/tmp/digits --config=configs/cifar10_resnet34.py \
      --seeds=3 --out=/tmp/parity --config.model.depth=18 --config.model.width=8 \
      --config.num_epochs=5 --config.batch_size=64 --config.dataset.image_size=32

`--dataset` is any name the data layer knows (prepared with `python -m jax_resnets.data.prepare`)
or a folder DIR/<split>/<class>/<image> (image_folder). Seed s trains once with
`python -m jax_resnets.main` (a subprocess, workdir OUT/jax/seed_s; a finished one is reused)
and once with benchmarks/parity_torch.py (same architecture, init scheme, optimizer, schedule,
augmentation, normalisation, batch size, epochs; its own data order and random numbers).
OUT gets parity.md (per-epoch test accuracy, mean +- std per side, the final difference with
a 95% Welch t-interval over seeds, wall times), parity.png and parity.json (raw curves).
The same recipe trained twice should differ only by seed noise: an interval that excludes 0
means one side does something else (init, BN, weight decay, schedule offsets, augmentation).
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FlagValues()
_DATASET = flags.DEFINE_string("dataset", None, "Dataset name (prepared) or an image-folder directory.",
                               flag_values=FLAGS)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per side (0..N-1).", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Output folder (workdirs, parity.md, parity.png, parity.json).",
                           flag_values=FLAGS)
_MAKE_DIGITS = flags.DEFINE_string("make_digits", None, "Write sklearn's digits as an image folder here "
                                   "(train/test, <digit>/*.png, 32x32 RGB) and exit.", flag_values=FLAGS)
_DIGITS_SIZE = flags.DEFINE_integer("digits_size", 32, "Side of the written digit images.", flag_values=FLAGS)
_SIDES = flags.DEFINE_list("sides", ["jax", "torch"], "Which sides to run (both for a comparison).",
                           flag_values=FLAGS)
_CONFIG = flags.DEFINE_string("config", None, "Study config (configs/*.py[:arg]); --config.key=value "
                              "overrides apply to both sides.", flag_values=FLAGS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE_NAMES = {"jax": "project (JAX)", "torch": "PyTorch"}


def make_digits(root: str, size: int = 32, test_fraction: float = 0.25) -> dict[str, int]:
  """sklearn's 8x8 digits (values 0..16) as root/{train,test}/<digit>/<i>.png, size x size RGB.

  A real dataset that ships inside an installable package, so parity runs offline. The split is
  fixed (stratified, random_state=0); bilinear upscaling keeps the strokes smooth.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  index = list(range(len(digits.target)))
  train, test = train_test_split(index, test_size=test_fraction, random_state=0, stratify=digits.target)
  for split, rows in (("train", train), ("test", test)):
    for i in rows:
      folder = os.path.join(root, split, str(digits.target[i]))
      os.makedirs(folder, exist_ok=True)
      grey = Image.fromarray((digits.images[i] * (255 / 16)).round().astype("uint8"))
      grey.resize((size, size), Image.BILINEAR).convert("RGB").save(os.path.join(folder, f"{i:04d}.png"))
  return {"train": len(train), "test": len(test)}


WRAPPER = '''"""The study config {path} on dataset {name!r}, written by benchmarks/parity.py."""
import importlib.util

_spec = importlib.util.spec_from_file_location("parity_study_config", {path!r})
_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_study)


def get_config(arg=None):
  config = _study.get_config(arg)
  config.dataset.name = {name!r}
  if {root!r}:
    config.dataset.root = {root!r}  # image_folder; a key the base config may not have.
  return config
'''


def write_wrapper(config_flag: str, dataset: str, out: str) -> str:
  """OUT/parity_config.py: the study config on `dataset`, as a --config value ("file[:arg]").

  A wrapper config rather than --config.dataset.* flags: a key such as dataset.root may not be
  in the study's config, and a locked config takes no new key from the command line.
  """
  path, _, arg = config_flag.partition(":")
  root = os.path.abspath(dataset) if os.path.isdir(dataset) else ""
  os.makedirs(out, exist_ok=True)
  wrapper = os.path.join(os.path.abspath(out), "parity_config.py")
  with open(wrapper, "w") as f:
    f.write(WRAPPER.format(path=os.path.abspath(os.path.join(ROOT, path)), root=root,
                           name="image_folder" if root else dataset))
  return f"{wrapper}:{arg}" if arg else wrapper


def config_args(argv: list[str]) -> list[str]:
  """The --config.key=value overrides as given, for the project's CLI (the wrapper replaces --config)."""
  return [a for a in argv if a.startswith("--config.")]


def load_config(config_flag: str, overrides: list[str]):
  """The config the CLI will see (config_flags, same overrides), checked for the torch twin."""
  from benchmarks import parity_torch  # pylint: disable=g-import-not-at-top
  from jax_resnets import config_lib  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  try:
    values(["parity", f"--config={config_flag}", *overrides])
    config = values.config
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError, OSError) as e:
    raise config_lib.ConfigError(f"config error: {str(e).splitlines()[0]}") from e
  config_lib.validate(config)
  parity_torch.check(config)
  return config


def run_project(args: list[str], seed: int, workdir: str) -> dict:
  """One seed through `python -m jax_resnets.main`; per-epoch eval/accuracy from its events."""
  from jax_resnets.studies.classification import study  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, "-m", "jax_resnets.main", *args, f"--config.seed={seed}", f"--workdir={workdir}"]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  process_s = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"project run failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  curve = [v for _, v in study.read_scalars(workdir).get("eval/accuracy", [])]
  return {"accuracy": curve, "wall_time_s": results["wall_time_s"], "process_s": process_s,
          "steps": results["steps"], "train_img_per_sec": results.get("train_img_per_sec"),
          "run_img_per_sec": results["steps"] * results["config"]["batch_size"] / results["wall_time_s"]}


def run_torch(config, seed: int, data: dict) -> dict:
  from benchmarks import parity_torch  # pylint: disable=g-import-not-at-top
  if not data:
    data["train"] = parity_torch.load_split(config, config.dataset.train_split)
    data["test"] = parity_torch.load_split(config, config.dataset.eval_split)
  return parity_torch.train(config, seed, data["train"], data["test"])


def mean_std(values) -> tuple[float, float]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.asarray(values, float)
  return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def final_difference(runs: dict) -> dict:
  """Project minus torch final accuracy, with a 95% Welch t-interval over seeds (needs >= 2 each)."""
  from jax_resnets.compare import stats  # pylint: disable=g-import-not-at-top
  a, b = ([r["accuracy"][-1] for r in runs[s]] for s in ("jax", "torch"))
  if min(len(a), len(b)) < 2:
    return {"value": mean_std(a)[0] - mean_std(b)[0], "lo": None, "hi": None, "verdict": "no interval (1 seed)"}
  d = stats.welch(a, b)
  verdict = "same within noise" if d.lo <= 0 <= d.hi else "DIFFERENT (interval excludes 0)"
  return {"value": d.value, "lo": d.lo, "hi": d.hi, "verdict": verdict}


def epoch_table(runs: dict) -> list[str]:
  sides = [s for s in ("jax", "torch") if runs.get(s)]
  epochs = max(len(r["accuracy"]) for s in sides for r in runs[s])
  lines = ["| epoch | " + " | ".join(f"{SIDE_NAMES[s]} acc (mean ± std)" for s in sides) + " |",
           "|---|" + "---|" * len(sides)]
  for e in range(epochs):
    cells = [mean_std([r["accuracy"][e] for r in runs[s] if len(r["accuracy"]) > e]) for s in sides]
    lines.append(f"| {e + 1} | " + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in cells) + " |")
  return lines


def wall_lines(runs: dict) -> list[str]:
  out = []
  for s in (s for s in ("jax", "torch") if runs.get(s)):
    m, sd = mean_std([r["wall_time_s"] for r in runs[s]])
    extra = ""
    if s == "jax":
      pm, psd = mean_std([r["process_s"] for r in runs[s]])
      extra = f" (train loop incl. compilation; whole process {pm:.1f} ± {psd:.1f} s)"
    out.append(f"- {SIDE_NAMES[s]} wall time per seed: {m:.1f} ± {sd:.1f} s{extra}")
  if runs.get("jax") and runs["jax"][0].get("train_img_per_sec"):
    tm, tsd = mean_std([r["train_img_per_sec"] for r in runs["jax"]])
    rm, rsd = mean_std([r["run_img_per_sec"] for r in runs["jax"]])
    out.append(f"- {SIDE_NAMES['jax']} train img/s: {tm:.1f} ± {tsd:.1f} in the train loop (input pipeline "
               f"included; compilation, evaluation, checkpoints not), {rm:.1f} ± {rsd:.1f} over the whole "
               "loop: compare with `python -m benchmarks.bench`'s step img/s for the same model and batch")
  return out


def report(runs: dict, header: list[str]) -> str:
  lines = ["# Accuracy parity: project vs PyTorch", "", *header, "", *epoch_table(runs), ""]
  if runs.get("jax") and runs.get("torch"):
    d = final_difference(runs)
    interval = f"[{d['lo']:+.4f}, {d['hi']:+.4f}]" if d["lo"] is not None else "n/a"
    lines += [f"Final test accuracy, project - PyTorch: {d['value']:+.4f}, 95% Welch t-interval over seeds "
              f"{interval}: {d['verdict']}.", ""]
  return "\n".join(lines + wall_lines(runs)) + "\n"


def plot(runs: dict, path: str) -> None:
  """Per-epoch test accuracy, mean with a ± std band, one colour per side."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for s in (s for s in ("jax", "torch") if runs.get(s)):
    n = min(len(r["accuracy"]) for r in runs[s])
    acc = np.array([r["accuracy"][:n] for r in runs[s]])
    x, mean, std = np.arange(1, n + 1), acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else 0 * acc[0]
    ax.plot(x, mean, marker="o", label=f"{SIDE_NAMES[s]} (n={len(acc)})")
    ax.fill_between(x, mean - std, mean + std, alpha=0.25)
  ax.set(xlabel="epoch", ylabel="test accuracy", title="parity: mean ± std over seeds")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_all(argv: list[str]) -> dict:
  config_flag = write_wrapper(_CONFIG.value, _DATASET.value, _OUT.value)
  config = load_config(config_flag, config_args(argv))
  args = [f"--config={config_flag}", *config_args(argv)]
  runs, data = {s: [] for s in _SIDES.value}, {}
  for seed in range(_SEEDS.value):
    if "jax" in runs:
      runs["jax"].append(run_project(args, seed, os.path.join(_OUT.value, "jax", f"seed_{seed}")))
    if "torch" in runs:
      runs["torch"].append(run_torch(config, seed, data))
    print(f"seed {seed}: " + "  ".join(f"{s} final {runs[s][-1]['accuracy'][-1]:.4f} "
                                       f"({runs[s][-1]['wall_time_s']:.1f}s)" for s in runs), flush=True)
  return {"runs": runs, "args": args, "config": config}


def main(argv):
  """argv: what our flags left, i.e. the --config.key=value overrides."""
  if stray := [a for a in argv[1:] if not a.startswith("--config.")]:
    raise app.UsageError(f"unknown arguments: {' '.join(stray)}")
  if _MAKE_DIGITS.value:
    counts = make_digits(_MAKE_DIGITS.value, _DIGITS_SIZE.value)
    print(f"wrote {counts} images to {_MAKE_DIGITS.value} (use --dataset={_MAKE_DIGITS.value} "
          f"--config.dataset.image_size={_DIGITS_SIZE.value})")
    return 0
  if not (_DATASET.value and _OUT.value and _CONFIG.value):
    raise app.UsageError("--dataset, --config and --out are required (or --make_digits=DIR)")
  from benchmarks import parity_torch  # pylint: disable=g-import-not-at-top
  from jax_resnets import config_lib  # pylint: disable=g-import-not-at-top
  from jax_resnets.data import sources  # pylint: disable=g-import-not-at-top
  try:
    result = run_all(argv)
  except (parity_torch.Unsupported, config_lib.ConfigError, sources.DataError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  write_outputs(result, sys.argv)
  return 0


def write_outputs(result: dict, argv: list[str]) -> None:
  os.makedirs(_OUT.value, exist_ok=True)
  c = result["config"]
  header = [f"Command: `python -m benchmarks.parity {' '.join(argv[1:])}`", "",
            f"ResNet-{c.model.depth} ({c.model.stem} stem, width {c.model.width}), {c.optim.name} lr "
            f"{c.optim.learning_rate} {c.optim.schedule}, batch {c.batch_size}, {c.num_epochs} epochs, "
            f"augment {tuple(c.dataset.augment)}, dataset {c.dataset.name} "
            f"({c.dataset.get('root') or c.dataset.get('data_dir') or ''}), seeds 0..{_SEEDS.value - 1}."]
  with open(os.path.join(_OUT.value, "parity.md"), "w") as f:
    f.write(text := report(result["runs"], header))
  plot(result["runs"], os.path.join(_OUT.value, "parity.png"))
  with open(os.path.join(_OUT.value, "parity.json"), "w") as f:
    json.dump({"runs": result["runs"], "args": result["args"], "config": c.to_dict()}, f, indent=2, default=str)
  print(text)
  print(f"wrote {_OUT.value}/parity.md, parity.png, parity.json")


if __name__ == "__main__":
  sys.exit(main(FLAGS(sys.argv, known_only=True)))
