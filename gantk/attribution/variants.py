"""Component-analysis variants of the attribution network (thesis §4.4.3, Tables 4.4-4.5).

Each variant restricts what the classifier may look at, to find out where GAN fingerprints live:

``full``              the whole image at the network's resolution;
``predownsample@N``   low frequencies only: a Gaussian pyramid takes the image down to N×N and
                      the convolutions start there;
``residual@N``        one high-frequency band only: the image is taken down to N×N, and what the
                      network sees is that image minus its own N/2 blur (one Laplacian-pyramid
                      level, Fig. 2c: "the residual between 16×16 and 8×8" is ``residual@16``);
``postpool@N``        local patch statistics only: the convolutions run down to N×N, then the
                      feature map is averaged over all positions, so each feature sees one
                      receptive-field-sized patch;
``visnet``            the fingerprint-visualization network (:mod:`gantk.attribution.visnet`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.nn.resample import make_filter

# A 5-tap binomial filter: the usual discrete Gaussian of image pyramids (Burt & Adelson).
GAUSSIAN_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
KINDS = ("full", "predownsample", "residual", "postpool", "visnet")
HELP = "full, predownsample@N, residual@N, postpool@N or visnet (N a power of two)"


@dataclass(frozen=True)
class Variant:
    kind: str = "full"
    size: int | None = None

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}@{self.size}"

    @property
    def input_resolution(self) -> int | None:
        """Resolution the convolutions start at (None: the network's own)."""
        return self.size if self.kind in ("predownsample", "residual") else None


def parse_variant(text: str, resolution: int) -> Variant:
    """``predownsample@8`` etc. checked against the network's ``resolution``."""
    kind, _, size_text = text.strip().partition("@")
    if kind not in KINDS:
        raise GantkError(f"unknown variant {text!r}; choose {HELP}")
    if kind in ("full", "visnet"):
        if size_text:
            raise GantkError(f"variant {kind} takes no @N; choose {HELP}")
        return Variant(kind)
    try:
        size = int(size_text)
    except ValueError:
        raise GantkError(f"variant {kind} needs a size, e.g. {kind}@8; choose {HELP}") from None
    # N >= 4 for every kind: Table 4.4's last row is the 4x4 image (L-f) and the band between
    # 4x4 and 2x2 (H-f, residual@4); the network's last block works at 4x4.
    low = 4
    high = resolution if kind != "predownsample" else resolution // 2
    if size & (size - 1) or not low <= size <= high:
        raise GantkError(
            f"{kind}@{size}: N must be a power of two from {low} to {high} at resolution "
            f"{resolution}"
        )
    return Variant(kind, size)


def _pyramid_down(x: torch.Tensor) -> torch.Tensor:
    # Reflect padding: zero padding would darken the borders, and the network would learn them.
    f = make_filter(GAUSSIAN_TAPS).to(device=x.device, dtype=x.dtype)
    kernel = f[None, None].expand(x.shape[1], 1, *f.shape)
    pad = f.shape[0] // 2
    mode = "reflect" if pad < x.shape[-1] else "replicate"
    blurred = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), kernel, groups=x.shape[1])
    return blurred[..., ::2, ::2]


def gaussian_downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Halve ``x`` through the Gaussian pyramid until it is ``size`` pixels wide."""
    while x.shape[-1] > size:
        x = _pyramid_down(x)
    return x


def laplacian_band(x: torch.Tensor, size: int) -> torch.Tensor:
    """The pyramid level at ``size``: the image at ``size`` minus its blur from ``size // 2``
    (brought back up bilinearly, which handles the borders without padding artefacts)."""
    x = gaussian_downsample(x, size)
    coarse = F.interpolate(_pyramid_down(x), size=x.shape[-2:], mode="bilinear",
                           align_corners=False)  # fmt: skip
    return x - coarse


def band_limit(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """What a variant's convolutions see of ``x``."""
    if variant.kind == "predownsample":
        return gaussian_downsample(x, variant.size)
    if variant.kind == "residual":
        return laplacian_band(x, variant.size)
    return x
