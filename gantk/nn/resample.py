"""FIR up/down-sampling with the [1, 3, 3, 1] low-pass filter of StyleGAN2.

Resampling through a proper low-pass filter (instead of nearest/bilinear or strided convs
alone) keeps aliasing out of both networks. Everything here is plain PyTorch: zero-insertion,
padding and a depthwise convolution with the separable 2-D filter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_FILTER = (1.0, 3.0, 3.0, 1.0)


def make_filter(taps: tuple[float, ...] = DEFAULT_FILTER) -> torch.Tensor:
    """2-D filter (outer product of ``taps``), normalized to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def filter2d(
    x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0
) -> torch.Tensor:
    """Pad ``x`` by ``pad`` = (before, after) on both spatial axes, then convolve with ``f``.

    Negative padding crops. The filter is applied depthwise (each channel on its own).
    """
    channels = x.shape[1]
    before, after = pad
    x = F.pad(x, [max(before, 0), max(after, 0), max(before, 0), max(after, 0)])
    if before < 0 or after < 0:
        h, w = x.shape[2], x.shape[3]
        x = x[:, :, max(-before, 0) : h - max(-after, 0), max(-before, 0) : w - max(-after, 0)]
    # conv2d computes correlation: flip so that this is a true convolution.
    kernel = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, kernel, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2, extra: int = 0) -> torch.Tensor:
    """Upsample by ``factor``: insert zeros between pixels, then low-pass (gain factor**2).
    ``extra`` more pixels of the filtered result on each side (the output grows by 2*extra)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, factor - 1, 0, 0, 0, factor - 1])
    x = x.reshape(b, c, h * factor, w * factor)
    taps = f.shape[0]
    pad = ((taps + factor - 1) // 2 + extra, (taps - factor) // 2 + extra)
    return filter2d(x, f, pad, gain=factor**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Low-pass, then keep every ``factor``-th pixel."""
    taps = f.shape[0]
    x = filter2d(x, f, ((taps - factor + 1) // 2, (taps - factor) // 2))
    return x[:, :, ::factor, ::factor]
