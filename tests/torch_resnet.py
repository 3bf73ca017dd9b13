"""A minimal torch ResNet with torchvision's module names, for conversion tests only.

torchvision is not installable here, so this mirrors `torchvision.models.resnet` (v1.5:
stride on the 3x3 conv of bottlenecks) closely enough that its `state_dict()` has the
same keys and shapes as a torchvision checkpoint. `width` scales every stage like the
flax ResNet's `width`; `disabled_skips` removes the residual add of named blocks while
keeping their `downsample` modules (as a torchvision checkpoint has them).
"""
from typing import Sequence

import torch
from torch import nn

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
               152: (3, 8, 36, 3)}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, skip: bool = True):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample, self.skip = downsample, skip

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.skip:
      out = out + (x if self.downsample is None else self.downsample(x))
    return self.relu(out)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, skip: bool = True):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample, self.skip = downsample, skip

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.skip:
      out = out + (x if self.downsample is None else self.downsample(x))
    return self.relu(out)


class ResNet(nn.Module):
  """torchvision `ResNet` (ImageNet stem) with a `width` knob."""

  def __init__(self, depth: int = 18, num_classes: int = 1000, width: int = 64,
               disabled_skips: Sequence[str] = ()):
    super().__init__()
    block = BasicBlock if depth < 50 else Bottleneck
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, n in enumerate(STAGE_SIZES[depth]):
      setattr(self, f"layer{i + 1}", self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2,
                                                      f"layer{i + 1}", disabled_skips))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride, name, disabled_skips):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, skip=f"{name}.0" not in disabled_skips)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, skip=f"{name}.{j}" not in disabled_skips) for j in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random BN affine parameters and running statistics, so eval mode tests them too."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g))
        m.bias.copy_(0.2 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
  return model
