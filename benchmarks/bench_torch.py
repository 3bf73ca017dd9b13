"""Reference PyTorch ResNet (torchvision's module layout) for benchmarks and conversion tests.

Imported only by `python -m benchmarks.bench --vs-torch` and by tests; the training path never
imports torch. torchvision is not installable here, so this mirrors `torchvision.models.resnet`
(BasicBlock / Bottleneck v1.5: its `state_dict()` has a torchvision checkpoint's keys and shapes)
plus the CIFAR stem our `ResNet(stem='cifar')` uses, a `width` knob, and `disabled_skips`, which
removes the residual add of named blocks while keeping their `downsample` modules.
"""
import os
from typing import Callable, Sequence

# Before torch loads libgomp: idle OpenMP workers sleep instead of spinning. Interleaved with
# JAX on 2 cores, spinning workers slowed the next JAX step by 10-25% while torch's own speed
# was the same either way (docs/performance.md, benchmark method).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch.nn.functional as F
from torch import nn

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
               152: (3, 8, 36, 3)}


def residual(block: nn.Module, x):
  if not block.skip:
    return 0.0
  return x if block.downsample is None else block.downsample(x)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, skip: bool = True):
    super().__init__()
    self.skip = skip
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + residual(self, x))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, skip: bool = True):
    super().__init__()
    self.skip = skip
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + residual(self, x))


class ResNet(nn.Module):
  """torchvision ResNet; `stem='cifar'` = 3x3/1 conv1 and no max-pool (as our flax ResNet)."""

  def __init__(self, depth: int = 18, num_classes: int = 1000, width: int = 64, stem: str = "imagenet",
               disabled_skips: Sequence[str] = ()):
    super().__init__()
    block = BasicBlock if depth < 50 else Bottleneck
    self.inplanes = width
    if stem == "imagenet":
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    else:
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      self.maxpool = nn.Identity()
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    for i, n in enumerate(STAGE_SIZES[depth]):
      name = f"layer{i + 1}"
      setattr(self, name, self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2,
                                           [f"{name}.{j}" not in disabled_skips for j in range(n)]))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

  def _make_layer(self, block, planes: int, blocks: int, stride: int, skips: list[bool]):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, skip=skips[0])]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, skip=skips[j]) for j in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def compile_unavailable() -> str | None:
  """Why torch.compile cannot run here (None if it may): inductor's CPU code needs a C++ compiler."""
  import shutil  # pylint: disable=g-import-not-at-top
  if not hasattr(torch, "compile"):
    return f"torch {torch.__version__} has no torch.compile"
  if torch.cuda.is_available():
    return None  # Triton kernels on the GPU; a host compiler is still used for wrappers.
  if os.environ.get("CXX"):  # Inductor compiles with $CXX when it is set.
    cxx = os.environ["CXX"]
    return None if shutil.which(cxx) else f"CXX={cxx} is not an executable compiler (inductor's CPU kernels)"
  found = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
  return None if found else "no C++ compiler (g++/clang++) for inductor's CPU kernels"


def steps(depth: int, stem: str, width: int, num_classes: int, batch: int, image: int,
          channels_last: bool = False, dtype: str = "float32", seed: int = 0,
          compile_model: bool = False) -> tuple[Callable, Callable]:
  """(train_step, eval_step) closures on one fixed random batch: SGD momentum 0.9, cross-entropy.

  bfloat16: autocast (weights stay float32), as our `model.dtype=bfloat16`. On a CUDA device
  when torch has one (a GPU benchmark compares like with like), else CPU. compile_model: the
  model under `torch.compile` (inductor; compiled lazily, on the first train / eval call: the
  first calls are the compile, errors included); the optimizer step stays eager.
  """
  torch.manual_seed(seed)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = ResNet(depth, num_classes, width, stem).to(device=device, memory_format=fmt)
  x = torch.randn(batch, 3, image, image).to(device=device, memory_format=fmt)
  y = torch.randint(0, num_classes, (batch,)).to(device)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  forward = torch.compile(model) if compile_model else model
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def train_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = F.cross_entropy(forward(x).float(), y)
    loss.backward()
    opt.step()
    return loss.item()

  def eval_step():
    model.eval()
    with torch.inference_mode(), autocast():
      return forward(x).float().sum().item()

  return train_step, eval_step
