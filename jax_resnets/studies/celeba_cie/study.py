"""Compression bias on CelebA (Hooker et al. 2020, "Characterising Bias in Compressed Models").

  python -m jax_resnets.main --config=configs/celeba_cie.py --workdir=DIR

For each level, a population of `cie.num_seeds` models (seeds config.seed + k) predicts
`dataset.label_attribute` (Blond_Hair): the dense baseline (sparsity 0), gradual magnitude
pruning to each of `cie.sparsities` (same seeds), and post-training quantization of the
baseline population (`cie.quantization`). Each trained level is a run of the core loop
(training/loop.py) in DIR/levels/<level>: a population vmapped in one program, with its own
checkpoints (a killed level resumes where it stopped), TensorBoard curves (mean and std over
the models) and results.json; pruning is an optax transformation (pruning.py) chained after the
optimizer. Every model's test predictions go into `predictions.csv`; the CIE sets, metrics,
subgroup audit, report.md, plots and results.json are all computed from that table.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jax_resnets import backend, config_lib, models
from jax_resnets.data import celeba, pipeline, sources
from jax_resnets.studies.celeba_cie import cie, pruning, quantization
from jax_resnets.studies.celeba_cie import report as report_cie
from jax_resnets.training import checkpointing, freeze, loop, population, steps

BASELINE = "baseline"


def validate(config: ml_collections.ConfigDict, total_steps: int) -> None:
  check = config_lib.check
  c, p = config.cie, config.pruning
  check(config.dataset.name == "celeb_a", "dataset.name", config.dataset.name, "the CIE study needs celeb_a")
  check(config.dataset.get("label_attribute") in celeba.ATTRIBUTES, "dataset.label_attribute",
        config.dataset.get("label_attribute"), "must be one of the 40 CelebA attributes")
  check(c.num_seeds >= 1, "cie.num_seeds", c.num_seeds, "must be >= 1")
  tie_rule = c.get("tie_rule", "odd_only")
  check(tie_rule in cie.TIE_RULES, "cie.tie_rule", tie_rule, f"known: {', '.join(cie.TIE_RULES)}")
  check(c.num_seeds % 2 or tie_rule != "odd_only", "cie.num_seeds", c.num_seeds,
        "even: modal labels can tie; use an odd population or choose a tie rule, e.g. cie.tie_rule=label_0")
  check(all(0 < s < 1 for s in c.sparsities), "cie.sparsities", c.sparsities, "each must be in (0, 1)")
  check(all(m in quantization.METHODS for m in c.quantization), "cie.quantization", c.quantization,
        f"known: {', '.join(quantization.METHODS)}")
  check(0 < c.taxicab_top_fraction <= 1, "cie.taxicab_top_fraction", c.taxicab_top_fraction, "must be in (0, 1]")
  check(c.calibration_examples >= 1, "cie.calibration_examples", c.calibration_examples, "must be >= 1")
  check(p.scope in pruning.SCOPES, "pruning.scope", p.scope, f"known: {', '.join(pruning.SCOPES)}")
  check(p.frequency >= 1, "pruning.frequency", p.frequency, "must be >= 1")
  check(0 <= p.begin_step < p.end_step <= total_steps, "pruning.end_step", p.end_step,
        f"need 0 <= begin_step ({p.begin_step}) < end_step <= total steps ({total_steps})")
  check(config.cv_folds == 0 or config.cv_folds >= 2, "cv_folds", config.cv_folds, "0 (off) or >= 2")


def level_table(config: ml_collections.ConfigDict) -> dict:
  """level name -> {'kind', 'sparsity', 'method'}; the baseline first."""
  out = {BASELINE: {"kind": "baseline", "sparsity": 0.0, "method": None}}
  out.update({f"prune_{s:g}": {"kind": "pruning", "sparsity": float(s), "method": None} for s in config.cie.sparsities})
  out.update({m: {"kind": "quantization", "sparsity": None, "method": m} for m in config.cie.quantization})
  return out


def build_model(config: ml_collections.ConfigDict):
  return models.build_model(config.model, sources.spec(config.dataset).num_classes, bn_axis_name=steps.AXIS,
                            backend=config.backend)


def total_steps(config: ml_collections.ConfigDict) -> int:
  return config.num_train_steps or config.num_epochs * (
      pipeline.num_examples(config.dataset, config.dataset.train_split) // config.batch_size)


def backbone_overlay(config: ml_collections.ConfigDict) -> Callable | None:
  """The MLA adapter's frozen backbone: model k gets model k of the baseline level of the ResNet run
  in `model.backbone_checkpoint` (its params and BN statistics, under `backbone/`)."""
  if config.model.name != "mla_adapter":
    return None
  path = config.model.get("backbone_checkpoint")
  if not path:
    raise config_lib.ConfigError(
        "config error: model.backbone_checkpoint is empty: the MLA adapter needs a trained ResNet-18 "
        "backbone; run the ResNet study first (e.g. configs/celeba_cie.py:smoke --workdir=W) and pass "
        "--config.model.backbone_checkpoint=W/levels/baseline")
  try:
    saved, _ = checkpointing.read_latest(path)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(f"config error: model.backbone_checkpoint={path!r}: {e}") from e
  return functools.partial(overlay, saved=saved, prefix="backbone")


def overlay(state, saved: dict, prefix: str):
  """`state` (a population) with model k's variables under `prefix` taken from model k mod K' of
  `saved` (a population checkpoint tree); keys the model lacks are skipped, shapes must match."""
  matched, out = 0, {}
  for collection in ("params", "batch_stats"):
    flat = flax.traverse_util.flatten_dict(getattr(state, collection), sep="/")
    for key, value in flax.traverse_util.flatten_dict(saved.get(collection, {}), sep="/").items():
      target, value = f"{prefix}/{key}", np.asarray(value)
      if target not in flat:
        continue
      if flat[target].shape != value.shape:
        raise config_lib.ConfigError(f"config error: backbone {collection}/{key} has shape {value.shape[1:]}, the "
                                     f"model's {target} {flat[target].shape[1:]} (model.width/depth or cie.num_seeds "
                                     "differ from the backbone run's)")
      flat[target], matched = jnp.asarray(value), matched + 1
    out[collection] = flax.traverse_util.unflatten_dict(flat, sep="/")
  if not matched:
    raise config_lib.ConfigError(f"config error: no backbone variable matches the model's {prefix}/*")
  return state.replace(params=out["params"], batch_stats=out["batch_stats"])


def train_population(config, workdir: str, model, sparsity: float, overlay=None, train_source=None) -> dict:
  """One level's population trained (or resumed, or read back when finished) by the core loop;
  returns its numpy variables with a leading model axis. `overlay`: `backbone_overlay(config)`."""
  tx_wrap = lambda tx: optax.chain(tx, pruning.gradual_magnitude_pruning(config.pruning, sparsity))
  run = loop.build(config, workdir, model=model, seeds=seeds_of(config), tx_wrap=tx_wrap,
                   prepare_state=overlay, train_source=train_source)
  loop.train_and_evaluate(config, workdir, run=run, validate=functools.partial(validation_metrics, config=config))
  return jax.device_get({"params": run.state.params, "batch_stats": run.state.batch_stats})


def validation_metrics(run, state, config) -> dict:
  """Epoch-end `eval/loss` and `eval/accuracy` on `cie.validation_split` (CelebA's validation
  split), so the test split stays untouched until the study's predictions (and the train-vs-
  validation curves in report.md are against data the models never trained on)."""
  metrics, _ = loop.evaluate(run, state, config.cie.get("validation_split") or config.dataset.eval_split)
  return {f"eval/{k}": v for k, v in metrics.items()}


def seeds_of(config) -> list[int]:
  return [config.seed + k for k in range(config.cie.num_seeds)]


def logits_fn(config, apply_fn: Callable):
  """[K, B, C] logits of every model (variables with a leading model axis) on shared images."""
  per_model = backend.resolve(config.backend).per_model
  return jax.jit(population.over_models(lambda v, x: apply_fn(v, x, train=False)[0], per_model))


def predict(config, model, variables, apply_fn=None, source=None):
  """[K, N] predicted labels on the eval split (or `source`), and its ids, labels, attributes."""
  preds, ids, labels, attributes = [], [], [], []
  logits_of = logits_fn(config, apply_fn or model.apply)
  for batch in pipeline.eval_batches(config.dataset, config.dataset.eval_split, config.batch_size, source=source):
    real = batch["mask"] > 0
    logits = logits_of(variables, batch["image"])
    preds.append(np.asarray(jnp.argmax(logits, -1))[:, real])
    ids.append(batch["id"][real])
    labels.append(batch["label"][real])
    attributes.append(batch["attributes"][real])
  return np.concatenate(preds, 1), np.concatenate(ids), np.concatenate(labels), np.concatenate(attributes)


def calibration_images(config) -> np.ndarray:
  """The first `cie.calibration_examples` training images, preprocessed without augmentation."""
  n = config.cie.calibration_examples
  batch = next(iter(pipeline.eval_batches(config.dataset, config.dataset.train_split, n)))
  return batch["image"][batch["mask"] > 0]


def quantized_population(config, model, method: str, base: dict):
  """(variables, apply_fn) of the baseline population under a post-training quantization method."""
  fold = config.cie.fold_batchnorm
  variables = jax.jit(jax.vmap(lambda v: quantization.quantize(method, v, fold)))(base)
  if method != "int8_fixed":
    return variables, None
  images = jnp.asarray(calibration_images(config))
  per_model = backend.resolve(config.backend).per_model
  calibrate = jax.jit(population.over_models(lambda v, x: quantization.calibrate(model.apply, v, x), per_model))
  return {**variables, "activation_ranges": calibrate(base, images)}, quantization.fixed_point_apply(model.apply)


def achieved_sparsity(variables: dict) -> dict:
  k = len(jax.tree.leaves(variables["params"])[0])
  reports = [pruning.sparsity_report(jax.tree.map(lambda x: x[i], variables["params"])) for i in range(k)]
  per_tensor = {t: float(np.mean([r["per_tensor"][t] for r in reports])) for t in reports[0]["per_tensor"]}
  overall = [r["overall"] for r in reports]
  return {"achieved_sparsity": float(np.mean(overall)), "achieved_per_model": overall,
          "achieved_per_tensor": per_tensor}


def run_levels(config, workdir: str, model, levels: dict, timing: dict):
  """Trains/evaluates every level; returns the PredictionTable and the baseline variables."""
  seeds, table, base, overlay = seeds_of(config), None, None, backbone_overlay(config)
  for level, meta in levels.items():
    t0 = time.time()
    if meta["kind"] == "quantization":
      variables, apply_fn = quantized_population(config, model, meta["method"], base)
    else:
      level_dir = os.path.join(workdir, "levels", level)
      variables, apply_fn = train_population(config, level_dir, model, meta["sparsity"], overlay), None
      meta.update(achieved_sparsity(variables))
      base = variables if level == BASELINE else base
    preds, ids, labels, attributes = predict(config, model, variables, apply_fn)
    if table is None:
      table = report_cie.PredictionTable(ids, labels, attributes, {})
    table.preds[level] = dict(zip(seeds, preds))
    timing[f"{level} (s)"] = round(time.time() - t0, 1)
    logging.info("level %s: accuracy %s", level, np.round((preds == labels).mean(1), 4))
  return table, base


def collapsed(table, level: str) -> bool:
  """Whether a level's population learned nothing: mean accuracy no better than always predicting
  the test set's majority class (e.g. every model says "not Blond" at 99% sparsity)."""
  majority = max(table.labels.mean(), 1 - table.labels.mean())
  return float((table.population(level) == table.labels[None]).mean()) <= majority + 1e-9


def default_grid_level(table, levels: dict) -> str:
  """The highest pruning sparsity whose population has not collapsed (its CIE are the compression's
  choices, not a constant prediction); the last level when every pruned level collapsed."""
  pruned = [l for l, m in levels.items() if m["kind"] == "pruning"]
  alive = [l for l in pruned if not collapsed(table, l)]
  return (alive or pruned or list(levels))[-1]


def cie_grid(config, workdir: str, table, results: dict, level: str) -> None:
  """Up to 16 modal CIE images of `level`, captioned with label / baseline / compressed modal labels."""
  source = sources.make_source(config.dataset, config.dataset.eval_split)
  ids = results["analysis"][level]["cie"]["modal"]["ids"][:16]
  pos = {int(i): j for j, i in enumerate(table.ids)}
  base = report_cie.cie.modal_labels(table.population(BASELINE))
  comp = report_cie.cie.modal_labels(table.population(level))
  male, young = celeba.ATTRIBUTES.index("Male"), celeba.ATTRIBUTES.index("Young")
  captions = [f"id {i} y={table.labels[pos[i]]} b={base[pos[i]]} c={comp[pos[i]]}\n"
              f"{'M' if table.attributes[pos[i], male] else 'F'} {'Y' if table.attributes[pos[i], young] else 'O'}"
              for i in ids]
  images = [np.asarray(source[i]["image"]) for i in ids]
  report_cie.plot_cie_grid(images, captions, os.path.join(workdir, "cie_grid.png"),
                           f"Modal CIE at {level} (y label, b baseline modal, c compressed modal)")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  t_start, total = time.time(), total_steps(config)
  validate(config, total)
  model, levels, timing = build_model(config), level_table(config), {}
  table, base = run_levels(config, workdir, model, levels, timing)
  report_cie.write_csv(table, os.path.join(workdir, "predictions.csv"))
  table = report_cie.read_csv(os.path.join(workdir, "predictions.csv"))  # Report only what the file holds.
  grid_level = config.cie.grid_level or default_grid_level(table, levels)
  params = jax.tree.map(lambda x: x[0], base["params"])
  results = {
      "analysis": report_cie.analyse(table, BASELINE, config.cie.taxicab_top_fraction),
      "levels": levels, "top_fraction": config.cie.taxicab_top_fraction, "total_steps": total,
      "num_test": int(table.ids.size), "grid_level": grid_level,
      "model": f"{config.model.name}-{config.model.depth} width {config.model.width}",
      "num_params": models.parameter_count(params),
      "trainable_params": freeze.param_counts(params, config.freeze)[0],
      "config": config.to_dict(),
      "curves": {l: report_cie.read_curves(os.path.join(workdir, "levels", l)) for l, m in levels.items()
                 if m["kind"] != "quantization"},
  }
  if config.cv_folds:
    results["cv"] = cross_validate(config, workdir, model, table)
  timing["total (s)"] = round(time.time() - t_start, 1)
  results["timing"] = timing
  write_outputs(config, workdir, table, results)
  return results


def write_outputs(config, workdir: str, table, results: dict) -> None:
  report_cie.plot_subgroup_rates(results, os.path.join(workdir, "subgroup_rates.png"))
  report_cie.plot_cie_fraction(results, os.path.join(workdir, "cie_fraction.png"))
  report_cie.plot_loss_curves(results, os.path.join(workdir, "loss_curves.png"))
  cie_grid(config, workdir, table, results, results["grid_level"])
  report_cie.write_report(results, os.path.join(workdir, "report.md"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=str, allow_nan=True)


CV_METRICS = ("accuracy", "precision", "recall", "f1", "cie_count")


def cross_validate(config, workdir: str, model, table) -> dict:
  """k-fold CV of the baseline: a population per fold trained on the other folds (same steps), in
  DIR/cv/fold_<f> (resumable like the levels). Per fold: the population's mean accuracy, precision,
  recall and F1 on its held-out fold, and its modal CIE count on the test split against the full
  baseline population (`table`): how far the modal labels move when only the training data change
  (a tenth fewer examples, no compression), i.e. the CIE count a compression level has to exceed."""
  train = sources.make_source(config.dataset, config.dataset.train_split)
  folds = np.array_split(np.random.default_rng(config.seed).permutation(len(train)), config.cv_folds)
  per_fold, overlay = [], backbone_overlay(config)
  for f, held_out in enumerate(folds):
    rest = np.concatenate([x for g, x in enumerate(folds) if g != f])
    variables = train_population(config, os.path.join(workdir, "cv", f"fold_{f}"), model, 0.0,
                                 overlay, Subset(train, tuple(int(i) for i in rest)))
    preds, _, labels, _ = predict(config, model, variables, source=Subset(train, tuple(int(i) for i in held_out)))
    metrics = report_cie.subgroups.population_metrics(labels, preds)
    test_preds = predict(config, model, variables)[0]
    row = {m: metrics[m] for m in CV_METRICS[:-1]}
    row["cie_count"] = int(report_cie.cie.modal_cie(table.population(BASELINE), test_preds).sum())
    per_fold.append(row)
    logging.info("cv fold %d/%d: %s", f + 1, config.cv_folds, row)
  values = {m: np.array([r[m] for r in per_fold], float) for m in CV_METRICS}
  finite = lambda v: v[np.isfinite(v)]  # Precision is undefined (NaN) for a fold without positive predictions.
  summary = lambda f, v: float(f(finite(v))) if finite(v).size else float("nan")
  return {"folds": config.cv_folds, "per_fold": per_fold, "accuracy": values["accuracy"].tolist(),
          "mean": {m: summary(np.mean, v) for m, v in values.items()},
          "std": {m: summary(np.std, v) for m, v in values.items()},
          "accuracy_mean": float(values["accuracy"].mean()), "accuracy_std": float(values["accuracy"].std())}


@dataclasses.dataclass(frozen=True)
class Subset:
  """Rows `indices` of a random-access source (the folds of k-fold CV); picklable for grain."""
  source: Any
  indices: tuple

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return self.source[self.indices[index]]
