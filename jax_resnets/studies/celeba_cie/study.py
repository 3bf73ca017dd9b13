"""Compression bias on CelebA (Hooker et al. 2020, "Characterising Bias in Compressed Models").

  python -m jax_resnets.main --config=configs/celeba_cie.py --workdir=DIR

For each level, a population of `cie.num_seeds` models (seeds config.seed + k) predicts
`dataset.label_attribute` (Blond_Hair): the dense baseline (sparsity 0), gradual magnitude
pruning to each of `cie.sparsities` (trained with the pruning schedule, same seeds), and
post-training quantization of the baseline population (`cie.quantization`). All pruning
levels share one compiled, vmapped train step (the final sparsity is an input). Every
model's test predictions go into `predictions.csv`; the CIE sets, metrics, subgroup audit,
report.md, plots and results.json are all computed from that table. A trained population
is saved under DIR/populations/, so a re-run skips levels already trained.
"""
import json
import os
import time

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jax_resnets import config_lib, models
from jax_resnets.studies.celeba_cie import pruning
from jax_resnets.studies.celeba_cie import quantization
from jax_resnets.data import celeba, pipeline, sources
from jax_resnets.studies.celeba_cie import report as report_cie
from jax_resnets.training import loop, population, summary

BASELINE = "baseline"


def check(ok: bool, key: str, value, expected: str) -> None:
  if not ok:
    raise config_lib.ConfigError(f"config error: {key}={value!r} ({expected})")


def validate(config: ml_collections.ConfigDict, total_steps: int) -> None:
  c, p = config.cie, config.pruning
  check(config.dataset.name == "celeb_a", "dataset.name", config.dataset.name, "the CIE study needs celeb_a")
  check(config.dataset.get("label_attribute") in celeba.ATTRIBUTES, "dataset.label_attribute",
        config.dataset.get("label_attribute"), "must be one of the 40 CelebA attributes")
  check(c.num_seeds >= 1, "cie.num_seeds", c.num_seeds, "must be >= 1")
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


def build(config: ml_collections.ConfigDict):
  """(Population, total_steps, steps_per_epoch) for the study's model and optimizer."""
  n_train = pipeline.num_examples(config.dataset, config.dataset.train_split)
  steps_per_epoch = max(n_train // config.batch_size, 1)
  total = config.num_train_steps or config.num_epochs * steps_per_epoch
  validate(config, total)
  model = models.build_model(config.model, sources.spec(config.dataset).num_classes, backend=config.backend)
  tx = population.make_optimizer(config.optim, steps_per_epoch, total, tuple(config.model.get("trainable", ())))
  pop = population.Population(model, tx, loop.image_shape(config.dataset), config.pruning, config.label_smoothing,
                              pretrained=load_backbone(config.model.get("backbone_checkpoint")))
  return pop, total, steps_per_epoch


def load_backbone(path: str | None) -> dict | None:
  """A population file (DIR/populations/<level>.msgpack of a ResNet run) to freeze under the adapter."""
  if not path:
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f"model.backbone_checkpoint: {path} does not exist (expected a populations/<level>.msgpack "
                            "written by an earlier ResNet run of this study)")
  with open(path, "rb") as f:
    variables = flax.serialization.msgpack_restore(f.read())
  drop = ("fc",)  # The ResNet head is replaced by the adapter's.
  return {c: {k: v for k, v in variables.get(c, {}).items() if k not in drop} for c in ("params", "batch_stats")}


def seeds_of(config) -> list[int]:
  return [config.seed + k for k in range(config.cie.num_seeds)]


def tensorboard_logger(workdir: str, level: str, seeds: list[int], schedule: pruning.Schedule):
  writers = [summary.Writer(os.path.join(workdir, "tensorboard", level, f"seed_{s}")) for s in seeds]

  def log(step: int, values: dict) -> None:
    for k, w in enumerate(writers):
      w.scalars(step, {**{n: v[k] for n, v in values.items()}, "pruning/target_sparsity": schedule.sparsity(step)})
    logging.info("%s step %d: loss %s", level, step, np.round(values["train/loss"], 4))
  return log, writers


def train_level(config, workdir: str, pop, level: str, sparsity: float, total: int) -> dict:
  """Trains (or restores) one level's population; returns numpy variables with a model axis."""
  path = os.path.join(workdir, "populations", f"{level}.msgpack")
  if os.path.exists(path):
    with open(path, "rb") as f:
      return flax.serialization.msgpack_restore(f.read())
  seeds, chunk = seeds_of(config), config.cie.models_per_program or config.cie.num_seeds
  parts = []
  for i in range(0, len(seeds), chunk):
    log, writers = tensorboard_logger(workdir, level, seeds[i:i + chunk],
                                      pruning.schedule_from_config(config.pruning, sparsity))
    state = population.train(pop, config.dataset, seeds[i:i + chunk], sparsity, total, config.batch_size, log,
                             config.log_every_steps)
    parts.append(jax.device_get(population.variables_of(state)))
    for w in writers:
      w.close()
  variables = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    f.write(flax.serialization.msgpack_serialize(variables))
  os.replace(path + ".tmp", path)
  return variables


def eval_batches(config, source=None):
  """Padded eval batches of `dataset.eval_split`, or of `source` (a held-out CV fold)."""
  if source is None:
    return pipeline.eval_batches(config.dataset, config.dataset.eval_split, config.batch_size)
  length = -(-len(source) // config.batch_size) * config.batch_size
  ds = grain.MapDataset.source(pipeline.MaskedShard(source, 0, len(source), length))
  return ds.map(pipeline._preprocess(config.dataset, train=False)).batch(config.batch_size)  # pylint: disable=protected-access


def predict(config, pop, variables, apply_fn=None, source=None):
  """[K, N] predicted labels on the eval split (or `source`), and its ids, labels, attributes."""
  preds, ids, labels, attributes = [], [], [], []
  for batch in eval_batches(config, source):
    real = batch["mask"] > 0
    logits = pop.logits(variables, batch["image"], apply_fn)
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


def quantized_population(config, pop, method: str, base: dict):
  """(variables, apply_fn) of the baseline population under a post-training quantization method."""
  fold = config.cie.fold_batchnorm
  variables = jax.jit(jax.vmap(lambda v: quantization.quantize(method, v, fold)))(base)
  if method != "int8_fixed":
    return variables, None
  images = jnp.asarray(calibration_images(config))
  ranges = population.per_model(lambda v, x: quantization.calibrate(pop.model.apply, v, x))(base, images)
  return {**variables, "activation_ranges": ranges}, quantization.fixed_point_apply(pop.model.apply)


def achieved_sparsity(variables: dict) -> dict:
  k = len(jax.tree.leaves(variables["params"])[0])
  reports = [pruning.sparsity_report(jax.tree.map(lambda x: x[i], variables["params"])) for i in range(k)]
  per_tensor = {t: float(np.mean([r["per_tensor"][t] for r in reports])) for t in reports[0]["per_tensor"]}
  overall = [r["overall"] for r in reports]
  return {"achieved_sparsity": float(np.mean(overall)), "achieved_per_model": overall,
          "achieved_per_tensor": per_tensor}


def run_levels(config, workdir: str, pop, total: int, levels: dict, timing: dict):
  """Trains/evaluates every level; returns the PredictionTable and the baseline variables."""
  seeds, table, base = seeds_of(config), None, None
  for level, meta in levels.items():
    t0 = time.time()
    if meta["kind"] == "quantization":
      variables, apply_fn = quantized_population(config, pop, meta["method"], base)
    else:
      variables, apply_fn = train_level(config, workdir, pop, level, meta["sparsity"], total), None
      meta.update(achieved_sparsity(variables))
      base = variables if level == BASELINE else base
    preds, ids, labels, attributes = predict(config, pop, variables, apply_fn)
    if table is None:
      table = report_cie.PredictionTable(ids, labels, attributes, {})
    table.preds[level] = dict(zip(seeds, preds))
    timing[f"{level} (s)"] = round(time.time() - t0, 1)
    logging.info("level %s: accuracy %s", level, np.round((preds == labels).mean(1), 4))
  return table, base


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
  t_start = time.time()
  pop, total, _ = build(config)
  levels, timing = level_table(config), {}
  table, base = run_levels(config, workdir, pop, total, levels, timing)
  report_cie.write_csv(table, os.path.join(workdir, "predictions.csv"))
  table = report_cie.read_csv(os.path.join(workdir, "predictions.csv"))  # Report only what the file holds.
  pruned = [l for l, m in levels.items() if m["kind"] == "pruning"]
  grid_level = config.cie.grid_level or (pruned[-1] if pruned else list(levels)[-1])
  params = jax.tree.map(lambda x: x[0], base["params"])
  results = {
      "analysis": report_cie.analyse(table, BASELINE, config.cie.taxicab_top_fraction),
      "levels": levels, "top_fraction": config.cie.taxicab_top_fraction, "total_steps": total,
      "num_test": int(table.ids.size), "grid_level": grid_level,
      "model": f"{config.model.name}-{config.model.depth} width {config.model.width}",
      "num_params": models.parameter_count(params),
      "trainable_params": population.count_trainable(params, tuple(config.model.get("trainable", ()))),
      "config": config.to_dict(),
  }
  if config.cv_folds:
    results["cv"] = cross_validate(config, pop, total)
  timing["total (s)"] = round(time.time() - t_start, 1)
  results["timing"] = timing
  write_outputs(config, workdir, table, results)
  return results


def write_outputs(config, workdir: str, table, results: dict) -> None:
  report_cie.plot_subgroup_rates(results, os.path.join(workdir, "subgroup_rates.png"))
  report_cie.plot_cie_fraction(results, os.path.join(workdir, "cie_fraction.png"))
  cie_grid(config, workdir, table, results, results["grid_level"])
  report_cie.write_report(results, os.path.join(workdir, "report.md"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=str, allow_nan=True)


def cross_validate(config, pop, total: int) -> dict:
  """k-fold CV of the baseline: a population per fold trained on the other folds (same steps)."""
  train = sources.make_source(config.dataset, config.dataset.train_split)
  folds = np.array_split(np.random.default_rng(config.seed).permutation(len(train)), config.cv_folds)
  accuracy = []
  for f, held_out in enumerate(folds):
    rest = np.concatenate([x for g, x in enumerate(folds) if g != f])
    state = population.train(pop, config.dataset, seeds_of(config), 0.0, total, config.batch_size,
                             source=population.Subset(train, tuple(int(i) for i in rest)))
    preds, _, labels, _ = predict(config, pop, population.variables_of(state),
                                  source=population.Subset(train, tuple(int(i) for i in held_out)))
    accuracy.append(float((preds == labels).mean()))
    logging.info("cv fold %d/%d: accuracy %.4f", f + 1, config.cv_folds, accuracy[-1])
  return {"folds": config.cv_folds, "accuracy": accuracy, "accuracy_mean": float(np.mean(accuracy)),
          "accuracy_std": float(np.std(accuracy))}
