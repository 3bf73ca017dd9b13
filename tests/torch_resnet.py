"""Test helpers around the reference torch ResNet (jax_resnets/bench_torch.py)."""
import torch
from torch import nn

from benchmarks.bench_torch import ResNet  # pylint: disable=unused-import


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
