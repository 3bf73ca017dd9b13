"""Face classification and open-set verification (VGGFace2 subset, 11-785 HW2P2 layout).

One training run of a `FaceNet` (or ResNet) with the losses of `config.loss` (softmax CE
with label smoothing, ArcFace, CosFace, + center loss, + batch-hard triplet), evaluated
every epoch on the classification dev split and/or the verification dev split; training
stops early when `faces.early_stopping_metric` has not improved for `faces.patience`
epochs and the best checkpoint (orbax, DIR/best) is the one used afterwards. Then, by
`faces.task`:
  classification: test-split predictions -> classification_submission.csv (id,label)
  verification:   threshold chosen on unknown_dev (or `faces.threshold`), unknown_test
                  predictions -> verification_submission.csv (id,label; n000000 = no match);
                  the headline dev accuracy (and early stopping) is held out: k-fold over
                  unknown_dev (`faces.threshold_folds`), the in-sample one is labelled so
  both:           the two in sequence, from the same best checkpoint.
Writes report.md, results.json and TensorBoard events. Trained by the core loop
(training/loop.py: checkpoints, resume, SIGTERM) with the core train step given the face
losses as its objective; the center-loss centers are non-trainable state kept in
`batch_stats` (checkpointed and replicated) and updated after each step.
"""
import copy
import csv
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax import lax

from jax_resnets import config_lib, models
from jax_resnets.data import sources
from jax_resnets.studies.faces import losses as face_losses
from jax_resnets.studies.faces import verification
from jax_resnets.training import checkpointing, loop, steps, summary
from jax_resnets.training.steps import AXIS

TASKS = ("classification", "verification", "both")
CENTERS = "center_loss_centers"  # batch_stats entry holding the center-loss centers.


def default_config() -> ml_collections.ConfigDict:
  """`config.faces`: task, splits, early stopping, verification settings."""
  return ml_collections.ConfigDict(dict(
      task="both", dev_split="dev", test_split="test", known_split="known", unknown_dev_split="unknown_dev",
      unknown_test_split="unknown_test", early_stopping_metric="", early_stopping_mode="max", patience=5,
      gallery="mean", threshold=ml_collections.FieldReference(None, field_type=float), chunk_size=1024,
      threshold_folds=5))  # k of the held-out (k-fold) dev verification accuracy, the headline.


def stopping_metric(config) -> str:
  """The validation metric that drives early stopping and the best checkpoint.

  verification/accuracy is the held-out (k-fold threshold) dev accuracy: stopping on the
  in-sample one would reward thresholds that overfit unknown_dev.
  """
  if config.faces.early_stopping_metric:
    return config.faces.early_stopping_metric
  return "dev/accuracy" if config.faces.task == "classification" else "verification/accuracy"


def check_config(config) -> None:
  f, loss = config.faces, config.loss
  bad = lambda key, value, why: config_lib.ConfigError(f"config error: {key}={value!r} ({why})")
  if f.task not in TASKS:
    raise bad("faces.task", f.task, f"known: {', '.join(TASKS)}")
  if f.gallery not in verification.MODES:
    raise bad("faces.gallery", f.gallery, f"known: {', '.join(verification.MODES)}")
  if loss.classifier not in face_losses.CLASSIFIERS:
    raise bad("loss.classifier", loss.classifier, f"known: {', '.join(face_losses.CLASSIFIERS)}")
  if loss.classifier in ("arcface", "cosface") and config.model.get("head") != "cosine":
    raise bad("model.head", config.model.get("head"), f"loss.classifier={loss.classifier} needs head='cosine'")
  if loss.classifier == "none" and not (loss.center_weight or loss.triplet_weight):
    raise bad("loss.classifier", "none", "needs loss.center_weight or loss.triplet_weight > 0")
  if (config.dataset.mixup_alpha or config.dataset.cutmix_alpha) and (
      loss.classifier != "softmax" or loss.center_weight or loss.triplet_weight):
    raise bad("dataset.mixup_alpha", config.dataset.mixup_alpha, "MixUp/CutMix only with the plain softmax loss")
  if f.get("threshold_folds", 5) < 2:
    raise bad("faces.threshold_folds", f.threshold_folds, "k-fold held-out threshold: >= 2")
  if f.early_stopping_mode not in ("min", "max") or f.patience < 1:
    raise bad("faces.patience", (f.patience, f.early_stopping_mode), "patience >= 1, mode 'min' or 'max'")


# ---------------------------------------------------------------- the core step's loss and extra state


def face_loss(loss_cfg):
  """The core train step's objective: the face losses of `config.loss` on logits and embedding."""
  def loss_fn(logits, aux, batch, batch_stats):
    return face_losses.total_loss(loss_cfg, logits, aux["features"], batch["label"], batch_stats.get(CENTERS))
  return loss_fn


def update_centers(loss_cfg):
  """After each step: the center-loss centers (kept in `batch_stats`, so checkpointed and replicated)
  move towards this step's embeddings, summed over the global batch (N devices update as one)."""
  def after_update(state, outputs, batch):
    centers = state.batch_stats[CENTERS]
    diff_sum, counts = lax.psum(face_losses.center_update_terms(outputs["features"], batch["label"], centers), AXIS)
    new = face_losses.update_centers(centers, diff_sum, counts, loss_cfg.center_alpha)
    return state.replace(batch_stats={**state.batch_stats, CENTERS: new})
  return after_update


def build(config, workdir: str) -> loop.Run:
  """The core loop's run with the face losses (+ centers); best checkpoint by the stopping metric."""
  model = models.build_model(config.model, sources.spec(config.dataset).num_classes, bn_axis_name=AXIS,
                             backend=config.backend)

  def add_centers(state):
    if not config.loss.center_weight:
      return state
    shape = jax.eval_shape(lambda: state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                                                  jnp.zeros((1, *loop.image_shape(config.dataset)))))
    dim = shape[1]["features"].shape[-1]
    centers = jnp.zeros((sources.spec(config.dataset).num_classes, dim), jnp.float32)
    return state.replace(batch_stats={**state.batch_stats, CENTERS: centers})

  train_step = functools.partial(steps.train_step, loss_fn=face_loss(config.loss),
                                 after_update=update_centers(config.loss) if config.loss.center_weight else None)
  return loop.build(config, workdir, model=model, train_step=train_step, prepare_state=add_centers)


# ---------------------------------------------------------------- evaluation


def embed(run: loop.Run, state, split: str) -> dict:
  """Logits, embeddings and labels of every example of `split` (in order), + labelled accuracy."""
  metrics, outs = loop.evaluate(run, state, split)
  return {**outs, "accuracy": metrics["accuracy"]}


def strings(ds_cfg, split: str, key: str) -> list[str]:
  """A string field ('file_name', 'identity') of every example: the pipeline drops strings."""
  source = sources.make_source(ds_cfg, split)
  return [str(source[i][key]) for i in range(len(source))]


def identity_names(ds_cfg, split: str, labels: np.ndarray) -> list[str]:
  """names[label] for the gallery split (label = index among the known identities)."""
  names = {}
  for label, name in zip(labels, strings(ds_cfg, split, "identity")):
    names.setdefault(int(label), name)
  return [names.get(k, f"identity_{k}") for k in range(int(labels.max()) + 1)]


def match(config, known: dict, unknown: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(identity scores [N, K], best identity index [N], best similarity [N])."""
  k = int(known["label"].max()) + 1
  vectors, ids = verification.gallery(known["features"], known["label"], k, config.faces.gallery)
  scores = verification.identity_scores(unknown["features"], vectors, ids, k, config.faces.chunk_size)
  best, similarity = verification.best_match(scores)
  return scores, best, similarity


def verify_dev(run: loop.Run, state) -> tuple[dict, dict]:
  """Dev verification: held-out accuracy (headline), in-sample accuracy, threshold, pair metrics."""
  cfg = run.config
  known, dev = embed(run, state, cfg.faces.known_split), embed(run, state, cfg.faces.unknown_dev_split)
  names = identity_names(cfg.dataset, cfg.faces.known_split, known["label"])
  truth = strings(cfg.dataset, cfg.faces.unknown_dev_split, "identity")
  scores, best, similarity = match(cfg, known, dev)
  best_names = np.asarray(names, dtype=object)[best]
  acc = verification.dev_accuracies(best_names, similarity, truth, cfg.faces.get("threshold_folds", 5),
                                    cfg.faces.threshold)
  metrics = {**{f"verification/{k}": v for k, v in acc.items()},
             "verification/no_match_fraction": float(np.mean(np.asarray(truth) == verification.NO_MATCH)),
             **{f"verification/{k}": v for k, v in verification.pair_metrics(scores, dev["label"]).items()}}
  return metrics, {"known": known, "names": names, "threshold": acc["threshold"]}


def validate(run: loop.Run, state) -> dict:
  """The per-epoch validation metrics of the task."""
  metrics = {}
  if run.config.faces.task in ("classification", "both"):
    metrics["dev/accuracy"] = embed(run, state, run.config.faces.dev_split)["accuracy"]
  if run.config.faces.task in ("verification", "both"):
    metrics.update(verify_dev(run, state)[0])
  return metrics


# ---------------------------------------------------------------- training with early stopping


class EarlyStopping:
  """Patience on a validation metric; its state lives in DIR/early_stopping.json (resumable)."""

  def __init__(self, workdir: str, metric: str, mode: str, patience: int):
    self.path, self.metric, self.mode, self.patience = os.path.join(workdir, "early_stopping.json"), metric, mode, patience
    self.state = {"best": None, "best_step": None, "bad_epochs": 0, "stopped_at": None}
    if os.path.exists(self.path):
      try:
        with open(self.path) as f:
          self.state = {**self.state, **json.load(f)}
      except (ValueError, OSError) as e:  # A truncated file (killed mid-write) must not end in a traceback.
        raise config_lib.ConfigError(f"{self.path} is damaged ({type(e).__name__}: {e}); delete it to recompute "
                                     "early stopping from the next evaluation") from e

  def improved(self, value: float) -> bool:
    best = self.state["best"]
    return best is None or (value > best if self.mode == "max" else value < best)

  def update(self, step: int, metrics: dict) -> bool:
    """Records this evaluation; True when training should stop."""
    value = metrics[self.metric]
    if self.improved(value):
      self.state.update(best=value, best_step=step, bad_epochs=0)
    else:
      self.state["bad_epochs"] += 1
    if self.state["bad_epochs"] >= self.patience:
      self.state["stopped_at"] = step
    if jax.process_index() == 0:  # Written aside and renamed: a kill never leaves half a file.
      with open(self.path + ".tmp", "w") as f:
        json.dump(self.state, f)
      os.replace(self.path + ".tmp", self.path)
    return self.state["stopped_at"] is not None


def restore_best(run: loop.Run):
  """The train state with the params/batch_stats of the best evaluation (replicated)."""
  state = jax.device_get(run.dp.unreplicate(run.state))
  try:
    step, best = checkpointing.restore_best(run.workdir, run.config.checkpoint,
                                            {"params": state.params, "batch_stats": state.batch_stats})
  except FileNotFoundError:
    return run.dp.replicate(state)
  logging.info("Using the best checkpoint: step %d.", step)
  return run.dp.replicate(state.replace(**best))


# ---------------------------------------------------------------- outputs


def write_csv(path: str, rows) -> None:
  """Kaggle submission: header `id,label`, one (image file name, label) row per image."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label"])
    writer.writerows(rows)


def classify(run: loop.Run, state) -> dict:
  """Dev accuracy and test-split predictions -> classification_submission.csv."""
  cfg = run.config
  dev, test = embed(run, state, cfg.faces.dev_split), embed(run, state, cfg.faces.test_split)
  predicted = np.argmax(test["logits"], -1)
  files = strings(cfg.dataset, cfg.faces.test_split, "file_name")
  if jax.process_index() == 0:
    write_csv(os.path.join(run.workdir, "classification_submission.csv"), zip(files, predicted.tolist()))
  return {"dev/accuracy": dev["accuracy"], "test/accuracy_if_labelled": test["accuracy"],
          "test/num_images": len(files)}


def verify(run: loop.Run, state) -> dict:
  """Dev metrics (threshold chosen there) and unknown_test predictions -> verification_submission.csv."""
  cfg = run.config
  metrics, gallery = verify_dev(run, state)
  test = embed(run, state, cfg.faces.unknown_test_split)
  _, best, similarity = match(cfg, gallery["known"], test)
  predicted = verification.predict(best, similarity, gallery["names"], gallery["threshold"])
  files = strings(cfg.dataset, cfg.faces.unknown_test_split, "file_name")
  if jax.process_index() == 0:
    write_csv(os.path.join(run.workdir, "verification_submission.csv"), zip(files, predicted.tolist()))
  metrics["verification/test_no_match_fraction"] = float(np.mean(predicted == verification.NO_MATCH))
  return metrics


def chance_levels(config, metrics: dict) -> dict:
  """What guessing scores: 1/classes for classification; for verification the better of
  'everyone is n000000' and 'nobody is' (the latter can at best be right on matched images)."""
  out = {"dev/accuracy": 1.0 / sources.spec(config.dataset).num_classes}
  if "verification/no_match_fraction" in metrics:
    f = metrics["verification/no_match_fraction"]
    for key in ("accuracy", "accuracy_in_sample", "accuracy_2fold"):
      out[f"verification/{key}"] = max(f, 1.0 - f)
  return out


LABELS = {  # report.md meaning of the headline keys.
    "verification/accuracy": "held-out: k-fold over unknown_dev, threshold chosen on k-1 folds (headline)",
    "verification/accuracy_in_sample": "in-sample: threshold chosen and scored on all of unknown_dev",
    "verification/accuracy_2fold": "held-out, 2 folds",
    "verification/threshold": "chosen on all of unknown_dev; labels unknown_test",
    "dev/accuracy": "classification, dev split of the known identities",
}


def write_report(workdir: str, results: dict) -> None:
  """report.md: every final metric, its meaning when it is a headline, and its chance level."""
  cfg, final = results["config"], results["final"]
  chance = results["chance"]
  lines = [f"# Faces ({cfg['faces']['task']}): {cfg['model']['name']} on {cfg['dataset']['name']}"
           + (" (synthetic)" if cfg["dataset"]["synthetic"] else ""), "",
           f"Loss: {cfg['loss']}", f"Best checkpoint: step {results['best_step']} by {results['stopping_metric']}"
           f" ({'early stop at step ' + str(results['stopped_at']) if results['stopped_at'] else 'no early stop'});"
           f" {results['steps_run']} steps of {results['total_steps']}.", "",
           "| metric | meaning | value | chance |", "|---|---|---|---|"]
  for k, v in sorted(final.items()):
    value = f"{v:.4f}" if k in chance else f"{v:.4g}"
    lines.append(f"| {k} | {LABELS.get(k, '')} | {value} | {f'{chance[k]:.4f}' if k in chance else ''} |")
  lines += ["", f"Parameters: {results['num_params']:,}; wall time {results['wall_time_s']:.1f} s.",
            "Files: " + ", ".join(results["files"]) + "."]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train (early stopping), restore the best checkpoint, classify and/or verify, report."""
  check_config(config)
  config = copy.deepcopy(config)
  with config.unlocked():  # The best checkpoint is the one early stopping keeps.
    config.checkpoint.update(best_metric=stopping_metric(config), best_mode=config.faces.early_stopping_mode, best_k=1)
  t0, r = time.time(), build(config, workdir)
  stopper = EarlyStopping(workdir, stopping_metric(config), config.faces.early_stopping_mode, config.faces.patience)

  def on_epoch_end(step: int, metrics: dict) -> bool:
    r.ckpt.wait()  # The stopping state must never run ahead of the checkpoints.
    return stopper.update(step, metrics)

  if stopper.state["stopped_at"] is None:
    loop.train_and_evaluate(config, workdir, run=r, validate=validate, on_epoch_end=on_epoch_end)
  state, final = restore_best(r), {}
  if config.faces.task in ("classification", "both"):
    final.update(classify(r, state))
  if config.faces.task in ("verification", "both"):
    final.update(verify(r, state))
  files = [f for f in ("classification_submission.csv", "verification_submission.csv", "report.md", "results.json")
           if f.endswith(".md") or f.endswith(".json") or os.path.exists(os.path.join(workdir, f))]
  results = {"final": final, "chance": chance_levels(config, final), "stopping_metric": stopper.metric,
             "best_step": stopper.state["best_step"], "stopped_at": stopper.state["stopped_at"],
             "steps_run": int(jax.device_get(r.dp.unreplicate(r.state).step)), "total_steps": r.total_steps,
             "wall_time_s": time.time() - t0, "files": files,
             "num_params": models.parameter_count(jax.device_get(r.dp.unreplicate(state)).params),
             "config": config.to_dict()}
  writer = summary.Writer(workdir)
  writer.scalars(results["steps_run"], {f"final/{k}": v for k, v in final.items() if math.isfinite(v)})
  writer.close()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2, default=str)
    write_report(workdir, results)
  return results
