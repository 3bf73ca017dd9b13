r"""Evaluate a trained run's best checkpoint: accuracy, per-class accuracy, predictions.

  python -m jax_resnets.evaluate --workdir=DIR [--split=test]

Reads the run's config from DIR/results.json (written when training ends) or, for a run
still in progress or stopped early, from `--config=configs/<name>.py[:arg]` (with the same
`--config.key=value` overrides as training); rebuilds the model; restores the best checkpoint
(DIR/best, by the metric it was kept for); evaluates with the training loop's own
`loop.evaluate`; prints the result and writes
  DIR/eval_<split>.json        accuracy, loss, per-class accuracy and counts, confusion matrix;
  DIR/predictions_<split>.csv  id (index in the split), label, prediction, confidence (softmax).
A missing workdir, config or checkpoint prints one line and exits with status 2.
"""
import csv
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from jax_resnets import backend, config_lib, models
from jax_resnets.data import sources
from jax_resnets.training import checkpointing, loop, parallel, steps
from jax_resnets.training.state import TrainState


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with, from DIR/results.json."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist")
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {path} (written when training ends); for an unfinished run pass the "
                            "training --config=configs/<name>.py[:arg] (and its overrides)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f)["config"])


def restore_best_state(config: ml_collections.ConfigDict, workdir: str, model) -> TrainState:
  """A TrainState (no optimizer) holding the best checkpoint's params and batch_stats."""
  shape = (1, *loop.image_shape(config.dataset))
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  abstract = {k: abstract.get(k, {}) for k in ("params", "batch_stats")}
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
  step, variables = checkpointing.restore_best(workdir, config.checkpoint, abstract)
  return TrainState(step=jnp.asarray(step, jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=(), rng=jax.random.key_data(jax.random.key(0)),
                    apply_fn=model.apply, tx=optax.identity())


def eval_run(config: ml_collections.ConfigDict, workdir: str, state: TrainState) -> loop.Run:
  """A `loop.Run` with what `loop.evaluate` uses (config, data parallelism); no optimizer/data iterator."""
  devices = jax.devices()[:config.num_devices] if config.get("num_devices") else None
  dp = parallel.DataParallel(config.parallel, devices).compile_steps()
  if config.batch_size % dp.num_devices:
    raise config_lib.ConfigError(f"config error: batch_size={config.batch_size} is not divisible by the "
                                 f"{dp.num_devices} devices")
  empty = {f.name: None for f in dataclasses.fields(loop.Run)}
  return loop.Run(**{**empty, "config": config, "workdir": workdir, "dp": dp, "state": state})


def split_labels(ds_cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """Labels of a split in example order (the order `loop.evaluate` returns logits in)."""
  source = sources.make_source(ds_cfg, split)
  return np.asarray([int(source[i]["label"]) for i in range(len(source))])


def summarize(metrics: dict, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """Accuracy/loss from `loop.evaluate` plus per-class accuracy and the confusion matrix."""
  predictions = np.argmax(logits, -1)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  counts = confusion.sum(1)
  per_class = [float(confusion[c, c] / counts[c]) if counts[c] else None for c in range(num_classes)]
  return {"num_examples": int(len(labels)), "accuracy": float(metrics["accuracy"]),
          "loss": float(metrics["loss"]), "per_class_accuracy": per_class, "per_class_count": counts.tolist(),
          "confusion_matrix": confusion.tolist()}


def write_predictions(path: str, logits: np.ndarray, labels: np.ndarray) -> None:
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label", "prediction", "confidence"])
    for i, (label, p) in enumerate(zip(labels, probs)):
      writer.writerow([i, int(label), int(np.argmax(p)), f"{float(np.max(p)):.6f}"])


def evaluate(workdir: str, split: str | None = None, config: ml_collections.ConfigDict | None = None) -> dict:
  """Evaluates the best checkpoint of `workdir` on `split`; writes and returns the summary."""
  config = config or load_config(workdir)
  if config.get("study", "classification") != "classification":
    raise config_lib.ConfigError(f"config error: study={config.study!r} (evaluate handles 'classification')")
  split = split or config.dataset.eval_split
  num_classes = sources.spec(config.dataset).num_classes
  model = models.build_model(config.model, num_classes, bn_axis_name=steps.AXIS, backend=config.get("backend", "auto"))
  state = restore_best_state(config, workdir, model)
  run = eval_run(config, workdir, state)
  metrics, outputs = loop.evaluate(run, run.dp.replicate(state), split)
  logits = outputs["logits"]
  labels = split_labels(config.dataset, split)
  if len(labels) != len(logits):
    raise RuntimeError(f"{len(logits)} logits for {len(labels)} examples of split {split!r}")
  summary = {"workdir": os.path.abspath(workdir), "split": split, "checkpoint_step": int(state.step),
             **summarize(metrics, logits, labels, num_classes)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
      json.dump(summary, f, indent=2)
    write_predictions(os.path.join(workdir, f"predictions_{split}.csv"), logits, labels)
  return summary


def format_summary(summary: dict) -> str:
  per_class = " ".join(f"{c}:{a:.3f}" if a is not None else f"{c}:-"
                       for c, a in enumerate(summary["per_class_accuracy"]))
  return (f"{summary['split']}: accuracy {summary['accuracy']:.4f} loss {summary['loss']:.4f} "
          f"({summary['num_examples']} examples, best checkpoint step {summary['checkpoint_step']})\n"
          f"per-class accuracy: {per_class}")


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training run's directory (with best/ and results.json).")
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's dataset.eval_split).")
config_flags.DEFINE_config_file("config", None, "Training config, if DIR/results.json does not exist yet.")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jax_resnets import errors  # pylint: disable=g-import-not-at-top
  try:
    if not os.path.isdir(FLAGS.workdir):
      raise FileNotFoundError(f"workdir {FLAGS.workdir} does not exist")
    config = FLAGS.config or load_config(FLAGS.workdir)
    backend.configure_process(config.get("backend", "auto"), eval_only=True)  # Before JAX starts.
    summary = evaluate(FLAGS.workdir, FLAGS.split, config)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_summary(summary))
  print(f"wrote {os.path.join(FLAGS.workdir, 'eval_' + summary['split'] + '.json')} and "
        f"predictions_{summary['split']}.csv")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
