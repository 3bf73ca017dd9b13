"""Hierarchy training on CIFAR-100: flat vs hierarchical heads on one backbone, in stages.

Each stage is one run of the core loop (own workdir, checkpoints, results.json, resumable)
that starts from the previous stage's latest checkpoint (`init.from_workdir`; parameters
are taken by path and shape, the rest keep their fresh initialisation):
  stage1: the backbone (PhiNet or ResNet) fine-tuned with a flat C-way head (`head.name`:
          original | adaptive | adaptive_nonlinear), softmax cross-entropy.
  stage2: the hierarchy head's parent classifier, parent-only loss (its child heads are
          untrained, so stage 2 reports parent accuracy only).
  stage2_children: the child heads of all parents at once on the parent-only model, with
          the parent classifier and the backbone frozen, CE(child | true parent) only (seed
          001's step 4: no reported row may use an untrained child head).
  stage3: parent and child heads jointly with
          parent_weight * CE(parent) + child_weight * CE(child | true parent).
Stages 2-3 set `config.freeze` (training/freeze.py): stage 2 trains `head/parent` only,
stage2_children `head/child_*` only, stage 3 `head`; stages 2 and 3 also the backbone unless
`hierarchy.freeze_backbone` (frozen parameters get zero updates and keep their BN statistics;
the frozen backbone also gets no backward pass). Every stage scores its eval split on the C
fine labels and writes `hierarchy_metrics.json`; `hierarchy.stage=all` runs the stages in
DIR/<stage> and `report.md` / `results.json` compare flat vs hierarchical (hard and soft
routing). With `hierarchy.sweep_root` (set by the `:d_sweep` grid) each finished run also
rewrites the grid's all-heads report and d plot (sweep.py).
"""
import copy
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jax_resnets import config_lib, models
from jax_resnets.data import sources
from jax_resnets.studies.hierarchy import metrics as hier
from jax_resnets.studies.hierarchy import heads
from jax_resnets.studies.hierarchy import phinet
from jax_resnets.studies.hierarchy import sweep
from jax_resnets.training import checkpointing, freeze, loop, steps

STAGES = ("stage1", "stage2", "stage2_children", "stage3")
LOSSES = {"stage2": "parent", "stage2_children": "child", "stage3": "parent_child"}
CHILD_PARAMS = "head/child_kernel,head/child_bias"  # freeze.py prefixes match whole path names.


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
  h = hier.build(config.hierarchy, config.dataset)
  if config.hierarchy.stage != "all":
    run_stage(config, workdir, h)
    return finish(config, workdir, stage_chain(workdir))
  previous = config.init.get("from_workdir")
  for i, stage in enumerate(STAGES):
    stage_dir = os.path.join(workdir, stage)
    run_stage(stage_config(config, i, previous), stage_dir, h)
    previous = stage_dir
  h.write(workdir)
  return finish(config, workdir, stage_chain(previous))


def finish(config: ml_collections.ConfigDict, workdir: str, chain: dict) -> dict:
  """The run's report; then the sweep's all-heads report if this run is a grid cell."""
  results = write_report(workdir, chain)
  root = config.hierarchy.get("sweep_root")
  if root and jax.process_index() == 0:
    sweep.write(root)
  return results


def validate(config: ml_collections.ConfigDict) -> None:
  c, check = config.hierarchy, config_lib.check
  check(c.stage in (*STAGES, "all"), "hierarchy.stage", c.stage, f"known: {', '.join(STAGES)}, all")
  check(c.grouping in hier.GROUPINGS, "hierarchy.grouping", c.grouping, f"known: {', '.join(hier.GROUPINGS)}")
  check(c.grouping == "coarse" or c.num_parents > 0, "hierarchy.num_parents", c.num_parents,
        f"must be > 0 for grouping={c.grouping}")
  check(c.parent_weight >= 0 and c.child_weight > 0, "hierarchy.child_weight", (c.parent_weight, c.child_weight),
        "parent_weight must be >= 0 and child_weight > 0")
  check(config.head.name in heads.HEADS[:3], "head.name", config.head.name,
        f"the flat head of stage1: {', '.join(heads.HEADS[:3])}")
  check(config.head.activation in heads.ACTIVATIONS, "head.activation", config.head.activation,
        f"known: {', '.join(heads.ACTIVATIONS)}")
  check(not (config.dataset.mixup_alpha or config.dataset.cutmix_alpha), "dataset.mixup_alpha",
        (config.dataset.mixup_alpha, config.dataset.cutmix_alpha), "hierarchy losses need hard labels: set 0")
  check(not c.stage_epochs or len(c.stage_epochs) == len(STAGES), "hierarchy.stage_epochs", c.stage_epochs,
        f"one per stage: {', '.join(STAGES)}")
  check(not c.stage_learning_rates or len(c.stage_learning_rates) == len(STAGES), "hierarchy.stage_learning_rates",
        c.stage_learning_rates, f"one per stage: {', '.join(STAGES)}")
  check(config.model.name in ("resnet", "phinet"), "model.name", config.model.name, "known: resnet, phinet")
  if config.model.name == "phinet":
    fields = set(phinet.PhiNet.__dataclass_fields__) - {"num_classes", "dtype", "bn_axis_name", "parent", "name"}
    unknown = sorted(set(config.model.phinet) - fields)
    check(not unknown, "model.phinet", unknown, f"unknown fields; known: {', '.join(sorted(fields))}")
    check(config.model.phinet.num_layers >= 3, "model.phinet.num_layers", config.model.phinet.num_layers,
          "must be >= 3 (blocks 1-3 are fixed)")


def stage_config(config: ml_collections.ConfigDict, index: int, from_workdir: str | None):
  """The config of stage `index` of an `all` run: per-stage epochs / learning rate if given."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.hierarchy.stage = STAGES[index]
    cfg.init.from_workdir = from_workdir
    if cfg.hierarchy.stage_epochs:
      cfg.num_epochs, cfg.num_train_steps = int(cfg.hierarchy.stage_epochs[index]), 0
    if cfg.hierarchy.stage_learning_rates:
      cfg.optim.learning_rate = float(cfg.hierarchy.stage_learning_rates[index])
  return cfg


def build_model(config: ml_collections.ConfigDict, h: hier.Hierarchy) -> heads.HeadedClassifier:
  """Backbone (no head of its own) + the stage's head."""
  stage, num_fine = config.hierarchy.stage, sources.spec(config.dataset).num_classes
  if h.num_fine != num_fine:
    raise config_lib.ConfigError(f"config error: hierarchy covers {h.num_fine} fine labels, dataset has {num_fine}")
  backbone = models.build_model(config.model, 0, bn_axis_name=steps.AXIS, backend=config.backend)
  head_cfg = config.head if stage == "stage1" else ml_collections.ConfigDict({"name": "hierarchy"})
  frozen = stage != "stage1" and (config.hierarchy.freeze_backbone or stage == "stage2_children")
  return heads.HeadedClassifier(backbone, heads.build_head(head_cfg, num_fine, h.groups), frozen_backbone=frozen)


def hierarchy_loss(logits, aux, batch, batch_stats, parent_of, child_of, parent_weight: float, child_weight: float):
  """Mean of parent_weight * CE(parent) + child_weight * CE(child of the true parent) (no extra metrics)."""
  del logits, batch_stats
  parent, child = parent_of[batch["label"]], child_of[batch["label"]]
  loss = parent_weight * steps.cross_entropy(aux["parent_logits"], parent)
  if child_weight:
    true_parent_children = jnp.take_along_axis(aux["child_logits"], parent[:, None, None], axis=1)[:, 0]
    loss = loss + child_weight * steps.cross_entropy(true_parent_children, child)
  return loss.mean(), {}


def stage_train_step(config: ml_collections.ConfigDict, h: hier.Hierarchy, stage: str):
  """The core train step with the stage's hierarchy loss (None: stage 1's cross-entropy)."""
  if stage not in LOSSES:
    return None
  c = config.hierarchy
  weights = {"stage2": (1.0, 0.0), "stage2_children": (0.0, 1.0), "stage3": (c.parent_weight, c.child_weight)}
  loss = functools.partial(hierarchy_loss, parent_of=jnp.asarray(h.parent_of), child_of=jnp.asarray(h.child_of),
                           parent_weight=weights[stage][0], child_weight=weights[stage][1])
  return functools.partial(steps.train_step, loss_fn=loss)


def stage_freeze(config: ml_collections.ConfigDict) -> str:
  """`config.freeze` (training/freeze.py trainable prefixes) of the config's stage."""
  stage, backbone = config.hierarchy.stage, ("" if config.hierarchy.freeze_backbone else ",backbone")
  if stage == "stage2":  # Parent-only loss: the child heads stay as initialised (no weight decay).
    return "head/parent" + backbone
  if stage == "stage2_children":  # Seed 001 step 4: child heads on the frozen parent-only model.
    return CHILD_PARAMS
  if stage == "stage3":
    return "head" + backbone
  return config.get("freeze", "full")


def run_stage(config: ml_collections.ConfigDict, workdir: str, h: hier.Hierarchy) -> dict:
  """Trains one stage (resuming if possible), scores it, writes hierarchy_metrics.json."""
  stage = config.hierarchy.stage
  os.makedirs(workdir, exist_ok=True)
  h.write(workdir)
  config = copy.deepcopy(config)
  with config.unlocked():
    config.freeze = stage_freeze(config)
  previous = config.init.get("from_workdir")
  r = loop.build(config, workdir, model=build_model(config, h), train_step=stage_train_step(config, h, stage),
                 prepare_state=functools.partial(init_from_workdir, workdir=previous) if previous else None)
  results = loop.train_and_evaluate(config, workdir, run=r)
  metrics = score(r, h)
  host = r.dp.unreplicate(r.state)
  out = {"stage": stage, "head": "hierarchy" if stage in LOSSES else config.head.name,
         "loss": LOSSES.get(stage, "cross_entropy"), "metrics": metrics, "final": results["final"],
         "steps": results["steps"], "num_params": results["num_params"],
         "head_params": models.parameter_count(host.params["head"]),
         "trainable_params": results.get("trainable_params"), "freeze": config.freeze,
         "from_workdir": config.init.get("from_workdir"),
         "bottleneck": config.head.bottleneck if stage == "stage1" and config.head.name != "original" else None}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "hierarchy_metrics.json"), "w") as f:
      json.dump(out, f, indent=2)
  return out


def score(r: loop.Run, h: hier.Hierarchy) -> dict:
  """Hierarchy metrics on the eval split: `flat` for stage1, `hard` and `soft` after.

  Stage 2's child heads are untrained, so it is scored on its parent classifier alone.
  """
  split = r.config.dataset.eval_split
  _, outputs = loop.evaluate(r, r.state, split)
  logits = outputs["logits"]
  source = sources.make_source(r.config.dataset, split)
  labels = np.array([int(source[i]["label"]) for i in range(len(source))])
  if r.config.hierarchy.stage == "stage1":
    return {"flat": hier.metrics(logits, labels, h, "soft")}
  if r.config.hierarchy.stage == "stage2":
    return {"parent_only": {"parent_accuracy": hier.metrics(logits, labels, h, "hard")["parent_accuracy"]}}
  return {routing: hier.metrics(logits, labels, h, routing) for routing in hier.ROUTINGS}


def init_from_workdir(state, workdir: str):
  """params / batch_stats of `workdir`'s latest checkpoint, matched by path and shape."""
  try:
    saved, step = checkpointing.read_latest(workdir)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(f"config error: init.from_workdir={workdir!r}: {e}") from e
  params, n_params = merge(state.params, saved["params"])
  batch_stats, _ = merge(state.batch_stats, saved.get("batch_stats", {}))
  if not n_params:
    raise config_lib.ConfigError(f"config error: init.from_workdir={workdir!r}: no parameter matches this model")
  logging.info("Initialised %d of %d parameter arrays from %s (step %d).", n_params,
               len(jax.tree.leaves(state.params)), workdir, step)
  # jit: one compile instead of one per parameter shape (eager optax init).
  return state.replace(params=params, batch_stats=batch_stats, opt_state=jax.jit(state.tx.init)(params))


def merge(target, saved) -> tuple[object, int]:
  """`target` with every leaf that `saved` has at the same path and shape replaced."""
  saved_leaves = {freeze.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved)}
  count = 0

  def pick(path, x):
    nonlocal count
    v = saved_leaves.get(freeze.path_str(path))
    if v is None or tuple(v.shape) != tuple(x.shape):
      return x
    count += 1
    return jnp.asarray(v, x.dtype)

  return jax.tree_util.tree_map_with_path(pick, target), count


def stage_chain(workdir: str) -> dict:
  """Stage name -> hierarchy_metrics.json, following init.from_workdir back from `workdir`."""
  chain, seen = {}, set()
  while workdir and os.path.abspath(workdir) not in seen:
    seen.add(os.path.abspath(workdir))
    path = os.path.join(workdir, "hierarchy_metrics.json")
    if not os.path.exists(path):
      break
    with open(path) as f:
      m = json.load(f)
    chain.setdefault(m["stage"], m)
    workdir = m.get("from_workdir")
  return {s: chain[s] for s in STAGES if s in chain}


ROWS = (("stage1", "flat", "flat"),
        ("stage2_children", "hard", "hierarchy, parent only + child heads, hard routing"),
        ("stage2_children", "soft", "hierarchy, parent only + child heads, soft routing"),
        ("stage3", "hard", "hierarchy, hard routing"), ("stage3", "soft", "hierarchy, soft routing"))
COLUMNS = ("fine_top1", "fine_top5", "parent_accuracy", "child_accuracy_mean", "errors_within_parent")
TOP5_NOTE = ("Top-5: the 5 best fine labels by p(fine) (flat head, soft routing); n/a under hard routing, "
             "which commits to one parent (its 5 best labels are that parent's children, so with 5 "
             "children per parent it would be the parent accuracy column again).")


def write_report(workdir: str, chain: dict) -> dict:
  """report.md (flat vs hierarchical heads) and results.json from the stages' metrics."""
  results = {"stages": chain, "comparison": {
      label: chain[s]["metrics"][routing] for s, routing, label in ROWS if s in chain}}
  if jax.process_index() != 0:
    return results
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(report_markdown(chain, results["comparison"]))
  return results


def fmt(value, spec: str = ".4f") -> str:
  """A metric cell: n/a for a metric a row does not have (hard routing's top-5)."""
  return "n/a" if value is None else format(value, spec)


def report_markdown(chain: dict, comparison: dict) -> str:
  """Rows only from trained heads: stage 2 (untrained children) shows its parent accuracy in text."""
  any_stage = next(iter(chain.values()))
  lines = ["# Flat vs hierarchical heads", "",
           f"Stages found: {', '.join(chain)}; metrics on the eval split's fine labels. "
           "Hard routing: argmax parent, then its child head; soft: argmax p(parent) p(child | parent). "
           "Child accuracy: the right fine label among the true parent's children; "
           "errors within parent: share of fine errors whose prediction has the true parent. " + TOP5_NOTE, "",
           "| head | " + " | ".join(COLUMNS) + " | head params | steps |",
           "|---" * (len(COLUMNS) + 3) + "|"]
  for s, routing, label in ROWS:
    if s in chain:
      m = chain[s]["metrics"][routing]
      lines.append(f"| {label} ({chain[s]['head']}) | " + " | ".join(fmt(m.get(c)) for c in COLUMNS)
                   + f" | {chain[s]['head_params']:,} | {chain[s]['steps']} |")
  if "stage2" in chain:
    lines += ["", "Stage 2 (parent classifier only; child heads not yet trained, so no fine-label row): "
              f"parent accuracy {fmt(chain['stage2']['metrics']['parent_only']['parent_accuracy'])}."]
  lines += ["", f"Backbone + head parameters (last stage): {any_stage['num_params']:,}.", ""]
  lines += per_parent_table(comparison)
  return "\n".join(lines) + "\n"


def per_parent_table(comparison: dict) -> list[str]:
  if not comparison:
    return []
  names = list(comparison)
  parents = sorted(next(iter(comparison.values()))["child_accuracy_per_parent"], key=int)
  lines = ["## Child accuracy per parent", "", "| parent | " + " | ".join(names) + " |",
           "|---" * (len(names) + 1) + "|"]
  for p in parents:
    lines.append(f"| {p} | " + " | ".join(f"{comparison[n]['child_accuracy_per_parent'].get(p, float('nan')):.3f}"
                                          for n in names) + " |")
  return lines
