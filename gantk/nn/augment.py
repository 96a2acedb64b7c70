"""Differentiable augmentation of every image a GAN discriminator sees, for small datasets.

Two families, both applied to reals and fakes alike and differentiable with respect to the
image (the generator learns through them, and R1 differentiates through them twice):

- :class:`AdaptiveAugment`: the pipeline of StyleGAN2-ADA (Karras et al. 2020, "Training
  Generative Adversarial Networks with Limited Data", its 'bgc' set): x-flip, 90° rotations and
  integer translation (the "blit" group), isotropic and anisotropic scaling, rotation and
  fractional translation ("geometric"), brightness, contrast, luma flip, hue rotation and
  saturation ("colour"). Each transform is applied to each image independently with
  probability ``p`` (rotation: with 1 - sqrt(1 - p) before and after the anisotropic scaling, so
  that some rotation happens with probability p), all geometric ones composed into one affine
  map and resampled once (bilinear, reflected at the border), the colour ones into one 4x4
  matrix. Strengths are the paper's (Appendix B). :class:`AdaController` tunes ``p`` from the
  sign of D's outputs on reals.
- :func:`diff_augment`: DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for
  Data-Efficient GAN Training"): colour (brightness, saturation, contrast), translation by up to
  1/8 of the size with zero fill, cutout of a square half the size; every image, always.

Images are float (B, C, H, W) in [-1, 1], C = 3 (colour transforms) or any (geometric only).
Randomness comes from a ``torch.Generator`` the caller owns, so a resumed run draws the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# StyleGAN2-ADA's strengths (its augment.py defaults), in log2 units for the log-normal ones.
SCALE_STD = 0.2  # isotropic scale: lognormal, std 0.2 * ln 2
ROTATE_MAX = 1.0  # rotation: uniform in +-1 * pi
ANISO_STD = 0.2
XFRAC_STD = 0.125  # fractional translation, in units of the image size
XINT_MAX = 0.125  # integer translation, fraction of the image size
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5
HUE_MAX = 1.0
SATURATION_STD = 1.0
LUMA_AXIS = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)


def _uniform(n: int, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _gate(n: int, p: float, gen: torch.Generator) -> Tensor:
    """1.0 where the transform applies to an image (probability p), else 0.0."""
    return (torch.rand(n, generator=gen) < p).float()


def _matrix(n: int, rows: list[list[Tensor | float]]) -> Tensor:
    """A batch of (n, k, k) matrices from rows of per-image values (tensors) or constants."""
    return torch.stack(
        [torch.stack([torch.as_tensor(v).float().expand(n) for v in row], dim=1) for row in rows],
        dim=1,
    )


def translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    n = tx.shape[0]
    return _matrix(n, [[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    n = sx.shape[0]
    return _matrix(n, [[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def rotate2d(theta: Tensor) -> Tensor:
    n = theta.shape[0]
    c, s = theta.cos(), theta.sin()
    return _matrix(n, [[c, -s, 0], [s, c, 0], [0, 0, 1]])


def geometric_matrix(n: int, size: tuple[int, int], p: float, gen: torch.Generator) -> Tensor:
    """(n, 3, 3) maps from output to input pixel coordinates, centred, in pixels: the inverse of
    the transforms (what resampling needs), as StyleGAN2-ADA composes them."""
    height, width = size
    eye = torch.eye(3).expand(n, 3, 3)
    m = eye.clone()
    # x-flip
    flip = 1 - 2 * (_gate(n, p, gen) * torch.randint(0, 2, (n,), generator=gen).float())
    m = m @ scale2d(flip, torch.ones(n))
    # 90-degree rotations
    quarter = _gate(n, p, gen) * torch.randint(0, 4, (n,), generator=gen).float()
    m = m @ rotate2d(-quarter * math.pi / 2)
    # integer translation (whole pixels)
    on = _gate(n, p, gen)
    tx = torch.round((_uniform(n, gen) * 2 - 1) * XINT_MAX * width) * on
    ty = torch.round((_uniform(n, gen) * 2 - 1) * XINT_MAX * height) * on
    m = m @ translate2d(-tx, -ty)
    # isotropic scaling
    s = 2 ** (torch.randn(n, generator=gen) * SCALE_STD * _gate(n, p, gen))
    m = m @ scale2d(1 / s, 1 / s)
    # rotation, anisotropic scaling, rotation
    p_rot = 1 - math.sqrt(max(0.0, 1 - p))
    theta = (_uniform(n, gen) * 2 - 1) * math.pi * ROTATE_MAX * _gate(n, p_rot, gen)
    m = m @ rotate2d(-theta)
    a = 2 ** (torch.randn(n, generator=gen) * ANISO_STD * _gate(n, p, gen))
    m = m @ scale2d(1 / a, a)
    theta = (_uniform(n, gen) * 2 - 1) * math.pi * ROTATE_MAX * _gate(n, p_rot, gen)
    m = m @ rotate2d(-theta)
    # fractional translation
    on = _gate(n, p, gen)
    tx = torch.randn(n, generator=gen) * XFRAC_STD * width * on
    ty = torch.randn(n, generator=gen) * XFRAC_STD * height * on
    return m @ translate2d(-tx, -ty)


def colour_matrix(n: int, p: float, gen: torch.Generator) -> Tensor:
    """(n, 4, 4) maps of homogeneous RGB (images in [-1, 1], centred on grey 0)."""
    v = torch.cat([LUMA_AXIS, torch.zeros(1)])  # the luma axis, homogeneous direction
    vv = torch.outer(v, v)
    eye = torch.eye(4)
    c = eye.expand(n, 4, 4).clone()
    b = torch.randn(n, generator=gen) * BRIGHTNESS_STD * _gate(n, p, gen)
    brightness = eye.repeat(n, 1, 1)
    brightness[:, :3, 3] = b[:, None]
    c = brightness @ c
    k = 2 ** (torch.randn(n, generator=gen) * CONTRAST_STD * _gate(n, p, gen))
    contrast = eye.repeat(n, 1, 1)
    contrast[:, :3, :3] *= k[:, None, None]
    c = contrast @ c
    flip = _gate(n, p, gen) * torch.randint(0, 2, (n,), generator=gen).float()
    c = (eye - 2 * vv * flip[:, None, None]) @ c  # Householder reflection of the luma axis
    theta = (_uniform(n, gen) * 2 - 1) * math.pi * HUE_MAX * _gate(n, p, gen)
    c = _rotation_about(LUMA_AXIS, theta) @ c
    s = 2 ** (torch.randn(n, generator=gen) * SATURATION_STD * _gate(n, p, gen))
    saturation = vv + (eye - vv) * s[:, None, None]
    saturation[:, 3, 3] = 1.0
    return saturation @ c


def _rotation_about(axis: Tensor, theta: Tensor) -> Tensor:
    """(n, 4, 4) rotations by ``theta`` about the unit ``axis`` (Rodrigues)."""
    n = theta.shape[0]
    x, y, z = axis.tolist()
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    rot = torch.eye(3) + theta.sin()[:, None, None] * k + (1 - theta.cos())[:, None, None] * (k @ k)
    out = torch.eye(4).repeat(n, 1, 1)
    out[:, :3, :3] = rot
    return out


def warp(images: Tensor, inverse: Tensor) -> Tensor:
    """Resample ``images`` through the pixel-space maps ``inverse`` (output -> input, centred
    coordinates), bilinear, reflected at the border."""
    _, _, height, width = images.shape
    # Pixel units to grid_sample's [-1, 1] (align_corners=False: edges at -1 and 1).
    to_norm = torch.diag(torch.tensor([2 / width, 2 / height, 1.0]))
    from_norm = torch.diag(torch.tensor([width / 2, height / 2, 1.0]))
    theta = (to_norm @ inverse @ from_norm)[:, :2, :]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


class AdaptiveAugment(nn.Module):
    """StyleGAN2-ADA's augmentation pipeline at strength ``p`` (a buffer: saved with D's run)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, images: Tensor, gen: torch.Generator) -> Tensor:
        p = float(self.p)
        if p <= 0:
            return images
        n = images.shape[0]
        inverse = geometric_matrix(n, images.shape[-2:], p, gen)
        colour = colour_matrix(n, p, gen)
        out = warp(images, inverse)
        if images.shape[1] == 3:
            c = colour.to(out)
            out = torch.einsum("bij,bjhw->bihw", c[:, :3, :3], out) + c[:, :3, 3, None, None]
        return out


class AdaController:
    """Tunes ``p`` as StyleGAN2-ADA does: every ``interval`` steps, r_t = E[sign(D(real))]; p
    moves by sign(r_t - target) * (images in the interval) / (``speed_kimg`` * 1000), clamped at
    0 (so p can go from 0 to 1 in ``speed_kimg`` kimg)."""

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0) -> None:
        self.target, self.interval, self.speed_kimg = target, interval, speed_kimg
        self.signs = 0.0
        self.count = 0
        self.steps = 0

    def accumulate(self, mean_sign: float) -> None:
        """One step's E[sign(D(real))] (averaged over processes by the caller)."""
        self.signs += mean_sign
        self.count += 1

    def step(self, augment: AdaptiveAugment, batch_size: int) -> float | None:
        """After a training step: the new p when it was adjusted, else None."""
        self.steps += 1
        if self.steps % self.interval or not self.count:
            return None
        rt = self.signs / self.count
        adjust = math.copysign(1.0, rt - self.target) * batch_size * self.count
        new_p = max(0.0, float(augment.p) + adjust / (self.speed_kimg * 1000))
        augment.p.fill_(min(new_p, 1.0))
        self.signs, self.count = 0.0, 0
        return float(augment.p)

    def state(self) -> dict:
        return {"signs": self.signs, "count": self.count, "steps": self.steps}

    def load_state(self, state: dict) -> None:
        self.signs = float(state["signs"])
        self.count = int(state["count"])
        self.steps = int(state["steps"])


def diff_augment(images: Tensor, gen: torch.Generator) -> Tensor:
    """DiffAugment's 'color,translation,cutout' policy, as its authors' reference code."""
    n = images.shape[0]
    dev = images.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen).to(dev, images.dtype)

    x = images
    if x.shape[1] == 3:
        x = x + (rand(n, 1, 1, 1) - 0.5)  # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean  # saturation
        mean = x.mean(dim=[1, 2, 3], keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean  # contrast
    x = _translate_zero_fill(x, 0.125, gen)
    return _cutout(x, 0.5, gen)


def _translate_zero_fill(x: Tensor, ratio: float, gen: torch.Generator) -> Tensor:
    n, _, height, width = x.shape
    sx, sy = int(width * ratio + 0.5), int(height * ratio + 0.5)
    dx = torch.randint(-sx, sx + 1, (n,), generator=gen)
    dy = torch.randint(-sy, sy + 1, (n,), generator=gen)
    padded = F.pad(x, (sx, sx, sy, sy))
    # out[i, j] = x[i - dy, j - dx] where inside, else 0: a window of the zero-padded image.
    rows = torch.arange(height)[None, :] + sy - dy[:, None]  # (n, H)
    cols = torch.arange(width)[None, :] + sx - dx[:, None]  # (n, W)
    idx_r = rows.to(x.device)[:, None, :, None].expand(n, x.shape[1], height, padded.shape[3])
    picked = padded.gather(2, idx_r)
    idx_c = cols.to(x.device)[:, None, None, :].expand(n, x.shape[1], height, width)
    return picked.gather(3, idx_c)


def _cutout(x: Tensor, ratio: float, gen: torch.Generator) -> Tensor:
    n, _, height, width = x.shape
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + (1 - ch % 2), (n,), generator=gen)
    cx = torch.randint(0, width + (1 - cw % 2), (n,), generator=gen)
    ys = torch.arange(height)[None, :, None] - (cy[:, None, None] - ch // 2)
    xs = torch.arange(width)[None, None, :] - (cx[:, None, None] - cw // 2)
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)
    return x * (~inside).to(x)[:, None]
