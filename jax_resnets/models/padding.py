"""Padding specs as explicit (lo, hi) pairs, shared by the handmade conv and the CPU backend's convs."""
from typing import Sequence

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def explicit_padding(padding: Padding, in_size: Sequence[int], kernel_size: Sequence[int],
                     strides: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
  """'SAME' / 'VALID' / int / ints / (lo, hi) pairs -> [(lo, hi), (lo, hi)] as lax pads."""
  if isinstance(padding, str):
    if padding == "VALID":
      return [(0, 0), (0, 0)]
    if padding != "SAME":
      raise ValueError(f"HandmadeConv padding must be 'SAME', 'VALID' or explicit, got {padding!r}")
    pads = []
    for n, k, s, d in zip(in_size, kernel_size, strides, dilation):
      out = -(-n // s)  # ceil(n / s)
      total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
      pads.append((total // 2, total - total // 2))
    return pads
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(f"HandmadeConv explicit padding must give 2 spatial (lo, hi) pairs, got {padding!r}")
  return [(int(lo), int(hi)) for lo, hi in pads]
