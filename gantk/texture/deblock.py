"""Removing the latent-cell grid from a Texture Mixer's output.

The generator upsamples each latent cell 4x by nearest neighbour, twice 2x, and a generator of
the bundled model's size leaves a faint pattern that repeats every cell: grid lines at the
cell period, the same phase everywhere on the canvas (cells start at pixel 0). Measured on
plain reconstructions of 48 held-out 128 px textures (v2 WIP, 12750 steps): the power at the
4 px period was 12.6 times that of the neighbouring frequencies, against 3.9 in the textures
themselves.

The pattern is estimated and subtracted locally: the image's detail (the image less a
low-pass that passes no cell-periodic pattern but every linear ramp, so smooth gradients are
left alone) is cut into cells, and its value at each of the cell's P x P positions averaged
over the neighbouring cells with Gaussian weights (``DEBLOCK_SIGMA`` cells); that average is
the periodic part, what the texture's own detail contributes cancelling out over many cells.
On those reconstructions it lowers the L1 error to the real textures (0.07147 -> 0.07096), so
what it takes away is error. It notches the cell period: the grid power goes to 0.1, that of
real textures put through it too (3.9 -> 0.08), which it changes by 1.15 grey levels on
average, taking 4 % of their gradient energy. Within about two sigmas (32 px) of the canvas
edge the estimate is partly off (a pure pattern there is removed to about 90 %).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Neighbourhood of the estimate, in cells: wider keeps more of the texture's own detail at
# the cell period, narrower follows a grid whose strength changes across the canvas. On the 48
# reconstructions above, sigma 2 / 4 / 8: L1 to the real textures 0.07048 / 0.07096 / 0.07126;
# real textures changed by 0.0132 / 0.0090 / 0.0068 (L1, [-1, 1] scale), their gradient
# energy by -9 / -4 / -2 %.
DEBLOCK_SIGMA = 4.0


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, h, w) with zero padding (normalised by the caller)."""
    radius = max(math.ceil(3 * sigma), 1)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, [radius] * 4)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _period_lowpass(x: Tensor, period: int) -> Tensor:
    """(N, C, H, W) smoothed by the separable ``period`` + 1 tap kernel [1/2, 1, ..., 1, 1/2] /
    ``period``: zero response at every multiple of 1/``period`` cycles per pixel, so none of a
    cell-periodic pattern, and symmetric, so linear ramps pass unchanged; the borders are
    extended by point reflection through the edge pixel (2 edge - mirror image), which
    continues a ramp where a plain mirror would fold it."""
    taps = torch.ones(period + 1, dtype=x.dtype, device=x.device)
    taps[0] = taps[-1] = 0.5
    taps = taps / period
    channels, half = x.shape[1], period // 2
    edges = F.pad(x, [half] * 4, mode="replicate")
    x = 2 * edges - F.pad(x, [half] * 4, mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def deblock(image: Tensor, period: int, sigma: float = DEBLOCK_SIGMA) -> Tensor:
    """``image`` (N, C, H, W) without its local pattern of ``period`` (even) pixels whose
    cells start at pixel 0 (see the module's docstring). A margin of fewer than ``period`` rows
    or columns at the bottom and right, not a whole cell, is left as it is."""
    if period < 2 or period % 2:
        raise ValueError(f"deblock needs an even period of at least 2 pixels, got {period}")
    n, c, height, width = image.shape
    h, w = height // period, width // period
    if h < 2 or w < 2:
        return image
    whole = image[:, :, : h * period, : w * period].float()
    # All of a cell-periodic pattern is in the detail, none of a smooth gradient.
    detail = whole - _period_lowpass(whole, period)
    # One channel per (colour, row in cell, column in cell), on the grid of cells.
    cells = detail.reshape(n, c, h, period, w, period)
    by_phase = cells.permute(0, 1, 3, 5, 2, 4).reshape(n, c * period * period, h, w)
    # Dividing by the blurred ones makes it a weighted mean near the borders too.
    weight = _gaussian_blur(torch.ones_like(by_phase[:1, :1]), sigma)
    pattern = _gaussian_blur(by_phase, sigma) / weight
    pattern = pattern.reshape(n, c, period, period, h, w).permute(0, 1, 4, 2, 5, 3)
    out = image.clone()
    out[:, :, : h * period, : w * period] = (
        whole - pattern.reshape(n, c, h * period, w * period)
    ).to(image.dtype)
    return out
