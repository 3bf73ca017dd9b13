"""The project's training step equals a plain PyTorch training step, step by step.

Same initial weights (torch -> flax with `models/torchvision_import.py`), same batches: the
project's `train_step` (mapped over one device with `DataParallel`, optimizer and schedule
from `config.optim`) and a textbook PyTorch loop (`torch.optim.SGD` / `AdamW`,
`torch.optim.lr_scheduler`, `F.cross_entropy(label_smoothing=...)`, BN in train mode) must
give the same loss, learning rate, parameters and BN running statistics after every step.
This is the safety net for refactors of `jax_resnets/training/`: only the `project_*`
helpers below touch the project's training API.
"""
import copy
import dataclasses
import math

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jax_resnets import config_lib
from jax_resnets.models import registry
from jax_resnets.models import torchvision_import as tvi
from jax_resnets.training import optim
from jax_resnets.training import parallel
from jax_resnets.training import state as state_lib
from jax_resnets.training import steps
import torch_resnet

NUM_CLASSES = 10
BATCH = 8
STEPS_PER_EPOCH = 2
NUM_STEPS = 6  # 3 epochs: crosses the warm-up's end, both step decays and the first SGDR restart.
# (depth, stem, width, image size). At 32 px ResNet-50's layer4 BN averages 8 values (1x1 maps)
# and torch's own float32 step is ~1e-3 off its float64 one; at 64 px ~4e-4 (conv1, |w| ~ 10).
MODELS = {"r18_cifar": (18, "cifar", 4, 16), "r50_imagenet": (50, "imagenet", 4, 64)}
# Allowed |project - torch float32|: atol + rtol * |torch| + NOISE * (that leaf's largest
# |torch float32 - torch float64|): a bug must stand out from float32 rounding, which deep BN
# nets amplify (ResNet-50's first step: ~2e-4 in conv1 for torch against itself).
PARAM_TOL = dict(rtol=1e-5, atol=1e-6)
STATS_TOL = dict(rtol=1e-5, atol=1e-6)
LOSS_TOL = dict(rtol=1e-6, atol=1e-6)
NOISE = 4.0


# ---- The project's API (the only code to adapt when its signatures change). ------------------

def optim_config(**overrides):
  """`config.optim` of the base config with the case's overrides."""
  cfg = config_lib.base_config().optim
  cfg.update(overrides)
  return cfg


def project_schedule_and_tx(cfg, total_steps: int = NUM_STEPS):
  schedule = optim.learning_rate_schedule(cfg, STEPS_PER_EPOCH, total_steps)
  return schedule, optim.create_optimizer(cfg, schedule)


def project_state(model_name: str, torch_state_dict: dict, tx):
  """A fresh train state whose params/batch_stats are the torch model's (via the converter)."""
  depth, stem, width, size = MODELS[model_name]
  model_cfg = config_lib.base_config().model
  model_cfg.update(depth=depth, stem=stem, width=width)
  model = registry.build_model(model_cfg, NUM_CLASSES, bn_axis_name=steps.AXIS, backend="xla")
  state = state_lib.create_train_state(jax.random.key(0), model, (size, size, 3), tx)
  template = {"params": state.params, "batch_stats": state.batch_stats}
  variables, report = tvi.match(tvi.torch_to_flax(torch_state_dict), template)
  assert report["loaded"] == len(jax.tree.leaves(template)), report
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                       opt_state=tx.init(variables["params"]))


def project_stepper(label_smoothing: float):
  """`step(state, images_nhwc, labels) -> (state, loss)`: the train step as the loop runs it."""
  dp = parallel.DataParallel("shard_map", jax.devices()[:1]).compile_steps(label_smoothing=label_smoothing)

  def step(state, images, labels):
    state, metrics = dp.train_step(state, dp.shard({"image": images, "label": labels}))
    return state, dp.host_metrics(metrics)["loss"]

  return dp.replicate, step


def project_torch_names(state) -> dict:
  """The state's params and BN statistics as torchvision state-dict entries (numpy)."""
  host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  return tvi.to_torchvision(host)


# ---- The PyTorch reference. ------------------------------------------------------------------

def torch_model(model_name: str, seed: int = 0) -> torch.nn.Module:
  """Random weights with non-trivial BN affine parameters and running statistics."""
  depth, stem, width, _ = MODELS[model_name]
  torch.manual_seed(seed)
  model = torch_resnet.ResNet(depth, NUM_CLASSES, width, stem)
  return torch_resnet.randomize_(model, seed).train()


def torch_optimizer(cfg, params):
  """What a PyTorch user writes for `cfg` (L2 decay inside SGD, decoupled decay in AdamW)."""
  if cfg.name == "sgd":
    return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)
  return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.b1, cfg.b2), eps=1e-8,
                           weight_decay=cfg.weight_decay)


def torch_scheduler(cfg, opt, total_steps: int):
  """torch.optim.lr_scheduler built from the documented meaning of `cfg`, stepped per iteration.

  Warm-up: linear from 0 over `warmup_epochs`; the main schedule then starts counting at the
  end of the warm-up (torchvision's reference recipe: SequentialLR(warm-up, main)), so step
  decays and SGDR restarts come `warmup_epochs` after their nominal epoch, as in the project's
  optax.join_schedules (not at absolute epochs, as optim.py's docstring might be read). Cosine
  decays to 0 at `total_steps`; SGDR restarts after `restart_epochs`, then `restart_mult`
  times longer cycles; step decay multiplies by `decay_factor` at each of `decay_epochs`.
  """
  warmup = int(cfg.warmup_epochs * STEPS_PER_EPOCH)
  if cfg.schedule == "cosine":  # Closed form written out; torch's CosineAnnealingLR is recursive.
    span = max(total_steps, warmup + 1) - warmup
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, span) / span))
    main = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
  elif cfg.schedule == "step":
    main = torch.optim.lr_scheduler.MultiStepLR(
        opt, [int(e * STEPS_PER_EPOCH) for e in cfg.decay_epochs], gamma=cfg.decay_factor)
  elif cfg.schedule == "cosine_restarts":
    main = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=cfg.restart_epochs * STEPS_PER_EPOCH, T_mult=cfg.restart_mult, eta_min=0.0)
  else:
    main = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
  if not warmup:
    return main
  ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warmup)
  return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warmup])


@dataclasses.dataclass
class TorchRun:
  """A torch model, its optimizer and scheduler."""
  model: torch.nn.Module
  opt: torch.optim.Optimizer
  sched: object
  label_smoothing: float
  dtype: torch.dtype

  @classmethod
  def create(cls, model, cfg, label_smoothing, dtype=torch.float32, total_steps=NUM_STEPS):
    model = model.to(dtype)
    opt = torch_optimizer(cfg, model.parameters())
    return cls(model, opt, torch_scheduler(cfg, opt, total_steps), label_smoothing, dtype)

  def step(self, images, labels) -> tuple[float, float]:
    """One textbook iteration; returns (loss, learning rate used)."""
    self.opt.zero_grad(set_to_none=True)
    logits = self.model(torch.from_numpy(images).to(self.dtype))
    loss = F.cross_entropy(logits, torch.from_numpy(labels).long(), label_smoothing=self.label_smoothing)
    loss.backward()
    lr = self.opt.param_groups[0]["lr"]
    self.opt.step()
    self.sched.step()
    return loss.item(), lr

  def state_dict(self) -> dict:
    """Parameters and BN statistics as float64 numpy (torchvision names)."""
    return {k: v.detach().double().numpy().copy() for k, v in self.model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


class TorchPair:
  """The reference in float32 (compared against) and float64 (measures float32's own noise)."""

  def __init__(self, model_name: str, cfg, label_smoothing: float):
    model = torch_model(model_name)
    self.f32 = TorchRun.create(copy.deepcopy(model), cfg, label_smoothing, torch.float32)
    self.f64 = TorchRun.create(model, cfg, label_smoothing, torch.float64)

  def step(self, images, labels) -> dict:
    (loss, lr), (loss64, _) = self.f32.step(images, labels), self.f64.step(images, labels)
    return {"loss": loss, "lr": lr, "loss_noise": abs(loss - loss64)}

  def reference(self) -> tuple[dict, dict]:
    """(float32 state, per-key float32 noise)."""
    want, exact = self.f32.state_dict(), self.f64.state_dict()
    return want, {k: float(np.max(np.abs(want[k] - exact[k]))) for k in want}


# ---- Comparison. -----------------------------------------------------------------------------

def batches(model_name: str, num_steps: int, seed: int = 0):
  """Per step: NCHW float32 images (torch), their NHWC copy (flax) and int labels."""
  size = MODELS[model_name][3]
  rng = np.random.default_rng(seed)
  for _ in range(num_steps):
    x = rng.normal(size=(BATCH, 3, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    yield x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y


def mismatches(got: dict, want: dict, noise: dict, keys, tol: dict) -> tuple[float, list[str]]:
  """(largest |got - want| over `keys`, the keys beyond their allowance, each with its numbers)."""
  worst, bad = 0.0, []
  for k in keys:
    diff = np.abs(got[k] - want[k])
    allowed = tol["atol"] + tol["rtol"] * np.abs(want[k]) + NOISE * noise[k]
    worst = max(worst, float(diff.max()))
    if np.any(diff > allowed):
      bad.append(f"{k}: max abs diff {diff.max():.2e} (torch f32 vs f64: {noise[k]:.2e})")
  return worst, bad


def assert_state_matches(got: dict, ref: TorchPair, step: int) -> dict:
  """Every parameter, running_mean and running_var; returns the largest
  differences for the report."""
  want, noise = ref.reference()
  assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())
  groups = {"params": ([k for k in want if not k.endswith(("running_mean", "running_var"))], PARAM_TOL),
            "running_mean": ([k for k in want if k.endswith("running_mean")], STATS_TOL),
            "running_var": ([k for k in want if k.endswith("running_var")], STATS_TOL)}
  out = {}
  for what, (keys, tol) in groups.items():
    out[what], bad = mismatches(got, want, noise, keys, tol)
    assert not bad, f"step {step}: {what} differ from torch ({len(bad)}/{len(keys)}): {bad[:5]}"
  return out


def run_both(model_name: str, cfg, label_smoothing: float, num_steps: int = NUM_STEPS):
  """Trains both sides in lockstep, checking loss, learning rate and state after every step.

  Returns the torch pair, the project's final state (torchvision names) and the largest
  differences seen.
  """
  ref = TorchPair(model_name, cfg, label_smoothing)
  schedule, tx = project_schedule_and_tx(cfg)
  replicate, step = project_stepper(label_smoothing)
  state = replicate(project_state(model_name, ref.f32.state_dict(), tx))
  worst = {}
  for i, (x_nchw, x_nhwc, y) in enumerate(batches(model_name, num_steps)):
    lr = float(schedule(i))
    state, loss = step(state, x_nhwc, y)
    want = ref.step(x_nchw, y)
    np.testing.assert_allclose(lr, want["lr"], rtol=1e-6, atol=1e-9, err_msg=f"learning rate of step {i}")
    loss_allowed = LOSS_TOL["atol"] + LOSS_TOL["rtol"] * abs(want["loss"]) + NOISE * want["loss_noise"]
    assert abs(loss - want["loss"]) <= loss_allowed, (
        f"step {i}: loss {loss} vs torch {want['loss']} (diff {abs(loss - want['loss']):.2e}, "
        f"torch f32 vs f64 {want['loss_noise']:.2e})")
    got = project_torch_names(state)
    diffs = {**assert_state_matches(got, ref, i), "loss": abs(loss - want["loss"]), "lr": abs(lr - want["lr"])}
    worst = {k: max(worst.get(k, 0.0), v) for k, v in diffs.items()}
  print(f"\n{model_name} {cfg.name}/{cfg.schedule} ls={label_smoothing}: max abs diffs "
        + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
  return ref, got, worst


# ---- Tests. ----------------------------------------------------------------------------------

SGD = dict(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
ADAMW = dict(name="adamw", learning_rate=1e-3, weight_decay=1e-2, b1=0.9, b2=0.999)
WARMUP_COSINE = dict(schedule="cosine", warmup_epochs=1.0)
STEP_DECAY = dict(schedule="step", decay_epochs=(1, 2), decay_factor=0.1, warmup_epochs=0.0)
SGDR = dict(schedule="cosine_restarts", restart_epochs=1, restart_mult=2, warmup_epochs=0.0)

# (model, optimizer + schedule, label smoothing, steps). Step 0 is the one-step check, the next
# ones check momentum buffers and the schedule's offsets. One compile each (the optimizer is
# static in the jitted step), so few cases. ResNet-50 (width 4, ImageNet stem) one step only:
# from its second step on torch float32 is already 1e-2..1 away from torch float64 (a few
# ReLU / max-pool decisions flip on rounding and its tiny-width gradients are large), so later
# steps could not tell a bug from rounding; the schedules are model-independent (ResNet-18).
CASES = {
    "r18-sgd-warmup_cosine": ("r18_cifar", {**SGD, "nesterov": False, **WARMUP_COSINE}, 0.0, NUM_STEPS),
    "r18-nesterov-step-smoothing": ("r18_cifar", {**SGD, "nesterov": True, **STEP_DECAY}, 0.1, NUM_STEPS),
    "r18-adamw-sgdr-smoothing": ("r18_cifar", {**ADAMW, **SGDR}, 0.1, NUM_STEPS),
    "r50-nesterov-smoothing": ("r50_imagenet", {**SGD, "nesterov": True, "schedule": "constant"}, 0.1, 1),
}
_RUNS = {}


def case_run(case: str):
  """run_both for a case, once per session (the xfail test below reuses a run's final state)."""
  if case not in _RUNS:
    model_name, overrides, label_smoothing, num_steps = CASES[case]
    _RUNS[case] = run_both(model_name, optim_config(**overrides), label_smoothing, num_steps)
  return _RUNS[case]


@pytest.mark.parametrize("case", CASES)
def test_train_steps_match_torch(case):
  """Loss, learning rate, every parameter and BN running_mean and running_var (torch's unbiased
  batch variance: resnet.BatchNorm) after each step."""
  case_run(case)  # Asserts step by step, naming the step, the tensor and its difference.


SCHEDULES = {
    "constant": dict(schedule="constant"),
    "warmup_constant": dict(schedule="constant", warmup_epochs=2.0),
    "cosine": dict(schedule="cosine"),
    "warmup_cosine": dict(schedule="cosine", warmup_epochs=2.5),
    "step": dict(schedule="step", decay_epochs=(3, 7), decay_factor=0.2),
    "warmup_step": dict(schedule="step", decay_epochs=(3, 7), decay_factor=0.2, warmup_epochs=2.0),
    "sgdr": dict(schedule="cosine_restarts", restart_epochs=2, restart_mult=2),
    "warmup_sgdr": dict(schedule="cosine_restarts", restart_epochs=2, restart_mult=2, warmup_epochs=1.0),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch_lr_scheduler(name):
  """The learning rate of every step of a longer run (no model: cheap), against the torch
  scheduler stepped once per iteration after `optimizer.step()`."""
  total = 12 * STEPS_PER_EPOCH
  cfg = optim_config(**SGD, **{"warmup_epochs": 0.0, **SCHEDULES[name]})
  schedule, _ = project_schedule_and_tx(cfg, total)
  opt = torch_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
  sched = torch_scheduler(cfg, opt, total)
  want = []
  for _ in range(total):
    want.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
  got = np.array([float(schedule(s)) for s in range(total)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=f"{name}: lr per step")
  assert name == "constant" or len(set(np.round(want, 6))) > 1  # The schedule does vary.
