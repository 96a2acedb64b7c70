"""Independent definitions of the patch ops for tests: plain Python loops over numpy arrays, no
unfold, no broadcasting, no padding helpers."""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _offsets(kernel_size: int) -> list[tuple[int, int]]:
    half = kernel_size // 2
    return [(dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]


def _source(i: int, size: int, reflect: bool) -> int | None:
    """The image row/column a padded coordinate reads (None: zero padding)."""
    if 0 <= i < size:
        return i
    if not reflect:
        return None
    return -i if i < 0 else 2 * (size - 1) - i


def naive_unfold(x: Tensor, kernel_size: int, dilation: int, reflect: bool = False) -> np.ndarray:
    xs = x.detach().double().numpy()
    batch, channels, height, width = xs.shape
    out = np.zeros((batch, channels, kernel_size**2, height, width))
    for b in range(batch):
        for c in range(channels):
            for p, (dy, dx) in enumerate(_offsets(kernel_size)):
                for i in range(height):
                    for j in range(width):
                        y = _source(i + dy * dilation, height, reflect)
                        xx = _source(j + dx * dilation, width, reflect)
                        if y is not None and xx is not None:
                            out[b, c, p, i, j] = xs[b, c, y, xx]
    return out


def naive_patch_attention(
    values: Tensor, weights: Tensor, kernel_size: int, dilation: int, reflect: bool = False
) -> np.ndarray:
    vs = values.detach().double().numpy()
    ws = weights.detach().double().numpy()
    batch, channels, height, width = vs.shape
    w_channels = ws.shape[1]
    out = np.zeros_like(vs)
    for b in range(batch):
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    total = 0.0
                    for p, (dy, dx) in enumerate(_offsets(kernel_size)):
                        y = _source(i + dy * dilation, height, reflect)
                        xx = _source(j + dx * dilation, width, reflect)
                        if y is not None and xx is not None:
                            total += ws[b, c % w_channels, p, i, j] * vs[b, c, y, xx]
                    out[b, c, i, j] = total
    return out
