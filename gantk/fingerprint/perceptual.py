"""Where a fingerprint may go unseen: a just-noticeable-difference (JND) map, and a band-pass.

The JND map is the classic pixel-domain model of Chou and Li (1995) combined as in Yang et al.
(2005): the luminance change a viewer cannot see at each pixel is the larger of two effects,
*luminance adaptation* (the eye forgives more in dark areas and somewhat more in bright ones than
in mid-grey) and *contrast masking* (edges and texture hide changes near them), combined with
the nonlinear additivity model ``LA + CM - 0.3 min(LA, CM)``. Flat skies and smooth gradients
get about 3 grey levels, textured areas several times that.

The fingerprint's residual is multiplied by the map divided by its mean over the image
(:func:`attenuation`), so its energy moves from flat regions to textured ones, in training and
at embedding alike (Meta's VideoSeal does the same with its JND map).

:func:`band_pass` removes the residual's local mean (everything coarser than a Gaussian of
``sigma`` pixels): slow luminance swells are the most visible change there is, and carry little
a decoder can rely on after cropping or resizing anyway.

Images are (B, 3, H, W) in [-1, 1]; maps are (B, 1, H, W).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.fingerprint.stego import LUMA

# Chou and Li's 5x5 weighted mean for the background luminance (the centre excluded), and their
# four directional gradient operators (horizontal, two diagonals, vertical).
_BACKGROUND = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]
_GRADIENTS = [
    [[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]],
    [[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]],
]
# Yang et al.'s overlap between the two masking effects.
OVERLAP = 0.3
# The attenuation never goes below or above these multiples of the image's mean JND, so no area
# is left without any fingerprint and none gets it all.
ATTENUATION_RANGE = (0.25, 4.0)


@functools.cache
def _kernels(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    background = torch.tensor(_BACKGROUND, dtype=dtype, device=device)[None, None] / 32
    gradients = torch.tensor(_GRADIENTS, dtype=dtype, device=device)[:, None] / 16
    return background, gradients


def luminance(images: Tensor) -> Tensor:
    """BT.601 luma on the 0-255 scale, (B, 1, H, W)."""
    weights = LUMA.to(device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return ((images + 1) * 127.5 * weights).sum(dim=1, keepdim=True)


def jnd_map(images: Tensor) -> Tensor:
    """The just-noticeable luminance change at each pixel, in grey levels (0-255 scale)."""
    luma = luminance(images.float())
    background_kernel, gradient_kernels = _kernels(luma.device, luma.dtype)
    padded = F.pad(luma, (2, 2, 2, 2), mode="replicate")
    background = F.conv2d(padded, background_kernel)
    gradient = F.conv2d(padded, gradient_kernels).abs().amax(dim=1, keepdim=True)
    dark = 17 * (1 - torch.sqrt(background.clamp_min(0) / 127)) + 3
    bright = 3 / 128 * (background - 127) + 3
    adaptation = torch.where(background <= 127, dark, bright)
    masking = (gradient * (0.0001 * background + 0.115) + (0.5 - 0.01 * background)).clamp_min(0)
    return adaptation + masking - OVERLAP * torch.minimum(adaptation, masking)


def attenuation(images: Tensor) -> Tensor:
    """The JND map over its mean per image (mean about 1), clamped to ATTENUATION_RANGE."""
    jnd = jnd_map(images)
    relative = jnd / jnd.mean(dim=(2, 3), keepdim=True)
    return relative.clamp(*ATTENUATION_RANGE)


@functools.cache
def _gaussian(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter(x: Tensor, kernel: Tensor, axis: int) -> Tensor:
    """Each row (axis -1) or column (axis -2) of (B, C, H, W) ``x`` correlated with the 1-D
    ``kernel``, keeping only whole windows ("valid"). Done as a depthwise convolution with one
    group per row or column: oneDNN's own depthwise kernel, 7-15x faster on a CPU than a
    (1, k) or (k, 1) kernel over a one- or three-channel image (measured one thread, 768 px)."""
    b, c, h, w = x.shape
    taps = kernel.numel()
    if axis == -1:
        weight = kernel.view(1, 1, 1, taps).expand(b * c * h, 1, 1, taps).contiguous()
        out = F.conv2d(x.reshape(1, b * c * h, 1, w), weight, groups=b * c * h)
        return out.view(b, c, h, w - taps + 1)
    # Columns: the same memory seen as (B*C, W, H, 1) in channels-last order, one channel per
    # column, so no transposed copy is made.
    columns = x.contiguous().as_strided((b * c, w, h, 1), (h * w, 1, w, w))
    weight = kernel.view(1, 1, taps, 1).expand(w, 1, taps, 1).contiguous()
    out = F.conv2d(columns, weight, groups=w)  # (B*C, W, H', 1)
    return out.permute(0, 3, 2, 1).reshape(b, c, h - taps + 1, w)


class _SymmetricFilter(torch.autograd.Function):
    """:func:`_filter` with a symmetric kernel, whose backward pass is the same filter over the
    zero-padded gradient (the adjoint of correlating with a symmetric kernel is correlating
    again): one cheap pass, where PyTorch's own backward of a tall (37, 1) kernel over a large
    one-channel image took 8-10x its forward."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, axis: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(kernel)
        ctx.axis = axis
        return _filter(x, kernel, axis)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (kernel,) = ctx.saved_tensors
        pad = kernel.numel() - 1
        full = F.pad(grad, (pad, pad, 0, 0) if ctx.axis == -1 else (0, 0, pad, pad))
        return _filter(full, kernel, ctx.axis), None, None


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflected borders (each channel on its own)."""
    kernel = _gaussian(float(sigma), x.device, x.dtype)
    radius = kernel.numel() // 2
    # Reflection needs the padding below the side; very small inputs replicate instead.
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    x = _SymmetricFilter.apply(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel, -1)
    return _SymmetricFilter.apply(F.pad(x, (0, 0, radius, radius), mode=mode), kernel, -2)


def band_pass(residual: Tensor, sigma: float) -> Tensor:
    """``residual`` without its local mean at scale ``sigma`` pixels."""
    return residual - gaussian_blur(residual, sigma)


SSIM_WINDOW = 7  # as gantk.metrics.image_quality.ssim (scikit-image's default)


def ssim_luma(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of the luminance of two image batches in [-1, 1] (differentiable): the same
    window and constants as the measure fingerprint-embed reports, so training can spend the
    change where SSIM (which sees changes in smooth areas most) minds it least."""
    # On [0, 2] like the 0-255 levels the reported SSIM sees (its luminance term is not
    # invariant to an offset): K1 and K2 times the data range 2.
    x, y = luminance(a.float()) / 127.5, luminance(b.float()) / 127.5
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    n = SSIM_WINDOW * SSIM_WINDOW

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    ux, uy = mean(x), mean(y)
    cov = n / (n - 1)  # sample covariances, as scikit-image
    vx, vy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean()
