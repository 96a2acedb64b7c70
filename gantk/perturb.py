"""Image perturbations: what happens to images after they leave a model (recompression, rescaling,
cropping, filtering), for robustness evaluation and for training robust decoders/classifiers.

Images are float tensors ``(B, C, H, W)`` in ``[-1, 1]``, gantk's network convention. Strengths
are in the units people quote: noise standard deviation on the ``[0, 1]`` scale, blur kernel size
in pixels, JPEG quality, fraction of the side kept by a centre crop, resize factor, brightness
factor. :data:`SWEEPS` holds the strengths of the standard robustness sweep.

Every perturbation is deterministic given its ``generator`` and is differentiable except JPEG;
:func:`jpeg_straight_through` passes gradients through JPEG as if it were the identity (real JPEG
forward, identity backward), the usual way to train through it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from gantk.errors import GantkError
from gantk.nn.distributed import Dist


def _to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8, rounded the way image files are."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def _from_uint8(arr: np.ndarray, like: Tensor) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    return (t.to(device=like.device, dtype=like.dtype) / 127.5) - 1


def gaussian_noise(
    x: Tensor, std: float, generator: torch.Generator | None = None, dist: Dist | None = None
) -> Tensor:
    """Add N(0, std²) noise, ``std`` on the [0, 1] scale (so 2·std on [-1, 1]), then clip.

    ``dist``: ``x`` is this process's share of a batch split across processes; the noise is
    drawn for the whole batch and the share kept, so the processes together add the noise one
    process would (a draw split in two is not the draw of the whole)."""
    shape = x.shape[1:]

    def draw(count: int) -> Tensor:
        return torch.randn((count, *shape), generator=generator, device="cpu", dtype=torch.float32)

    noise = draw(x.shape[0]) if dist is None else dist.draw(x.shape[0], draw)
    return (x + 2 * std * noise.to(device=x.device, dtype=x.dtype)).clamp(-1, 1)


def gaussian_blur(x: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur with a ``kernel_size`` square kernel (odd) and torchvision's default sigma
    0.3·((k-1)/2 - 1) + 0.8, reflect padding; ``kernel_size`` 1 is the identity."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise GantkError(f"blur kernel size must be a positive odd number, got {kernel_size}")
    if kernel_size == 1:
        return x
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    taps = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    kernel_1d = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel_1d = (kernel_1d / kernel_1d.sum()).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    pad = kernel_size // 2
    # Reflect needs the pad to be smaller than the side; replicate is the fallback for tiny images.
    mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
    out = F.pad(x, (pad, pad, pad, pad), mode=mode)
    out = F.conv2d(out, kernel_1d.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel_1d.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """Real JPEG round trip (PIL, 4:2:0 chroma subsampling as most encoders do) at ``quality``."""
    if not 1 <= quality <= 100:
        raise GantkError(f"JPEG quality must be in 1..100, got {quality}")
    out = []
    for image in _to_uint8(x):
        buffer = io.BytesIO()
        mode = "L" if image.shape[2] == 1 else "RGB"
        Image.fromarray(image.squeeze(2) if mode == "L" else image, mode).save(
            buffer, format="JPEG", quality=int(quality)
        )
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode))
        out.append(decoded[..., None] if mode == "L" else decoded)
    return _from_uint8(np.stack(out), x)


def jpeg_straight_through(x: Tensor, quality: int) -> Tensor:
    """JPEG in the forward pass, identity in the backward pass."""
    return x + (jpeg(x, quality) - x).detach()


def center_crop(x: Tensor, fraction: float) -> Tensor:
    """Keep the central ``fraction`` of each side (the result is smaller; decoders resize)."""
    if not 0 < fraction <= 1:
        raise GantkError(f"crop fraction must be in (0, 1], got {fraction}")
    height, width = x.shape[-2:]
    new_h, new_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return x[..., top : top + new_h, left : left + new_w]


def random_crop(x: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Keep ``fraction`` of each side at a random position (the attack of thesis §4.4.4 crops
    "with a random offset"), so the cut falls on any border, not always evenly on all four."""
    if not 0 < fraction <= 1:
        raise GantkError(f"crop fraction must be in (0, 1], got {fraction}")
    height, width = x.shape[-2:]
    new_h, new_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top = int(torch.randint(height - new_h + 1, (), generator=generator))
    left = int(torch.randint(width - new_w + 1, (), generator=generator))
    return x[..., top : top + new_h, left : left + new_w]


def resize(x: Tensor, factor: float) -> Tensor:
    """Rescale both sides by ``factor`` (bilinear, antialiased when shrinking)."""
    if factor <= 0:
        raise GantkError(f"resize factor must be positive, got {factor}")
    height, width = x.shape[-2:]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=factor < 1)


def brightness(x: Tensor, factor: float) -> Tensor:
    """Multiply intensities (on the [0, 1] scale) by ``factor`` and clip."""
    if factor < 0:
        raise GantkError(f"brightness factor must be non-negative, got {factor}")
    return (((x + 1) * factor) - 1).clamp(-1, 1)


def combined(x: Tensor, strength: float) -> Tensor:
    """JPEG, then centre crop, then brightness, all at one ``strength`` in [0, 1] (0: none):
    JPEG quality 100 - 60·s, crop keeping 1 - 0.3·s of each side, brightness 1 + 0.3·s."""
    if not 0 <= strength <= 1:
        raise GantkError(f"combined strength must be in [0, 1], got {strength}")
    if strength == 0:
        return x
    out = jpeg(x, round(100 - 60 * strength))
    out = center_crop(out, 1 - 0.3 * strength)
    return brightness(out, 1 + 0.3 * strength)


Perturbation = Callable[[Tensor, float, torch.Generator | None], Tensor]

PERTURBATIONS: dict[str, Perturbation] = {
    "noise": lambda x, s, g: gaussian_noise(x, s, g),
    "blur": lambda x, s, g: gaussian_blur(x, int(s)),
    "jpeg": lambda x, s, g: jpeg(x, int(s)),
    "crop": lambda x, s, g: center_crop(x, s),
    "resize": lambda x, s, g: resize(x, s),
    "brightness": lambda x, s, g: brightness(x, s),
    "combined": lambda x, s, g: combined(x, s),
}

# The standard robustness sweep (strengths from weak to strong; the first one of noise, blur,
# crop, resize and brightness is the identity so every curve starts at the clean value).
SWEEPS: dict[str, list[float]] = {
    "noise": [0.0, 0.01, 0.02, 0.05, 0.1, 0.2],
    "blur": [1, 3, 5, 7, 9, 13, 17],
    "jpeg": [90, 80, 75, 70, 60, 50, 40, 30],
    "crop": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3],
    "resize": [1.0, 0.75, 0.5, 0.35, 0.25],
    "brightness": [1.0, 0.8, 1.2, 0.6, 1.5],
    "combined": [0.0, 0.25, 0.5, 0.75, 1.0],
}


def apply(
    name: str, x: Tensor, strength: float, generator: torch.Generator | None = None
) -> Tensor:
    """Apply the perturbation ``name`` at ``strength``."""
    if name not in PERTURBATIONS:
        raise GantkError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name](x, strength, generator)


def _parse_choices(text: str, choices: list[str], what: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(choices)
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise GantkError(
            f"unknown {what}(s) {', '.join(unknown) or repr(text)}; "
            f"choose from {', '.join(choices)} or all"
        )
    return names


def parse_names(text: str) -> list[str]:
    """``"jpeg,blur"`` -> ``["jpeg", "blur"]``, validated; ``"all"`` -> every perturbation."""
    return _parse_choices(text, list(PERTURBATIONS), "perturbation")


# Training ranges of RandomPerturbation: milder than the sweep's extremes, as peers do.
TRAINING_RANGES: dict[str, tuple[float, float]] = {
    "noise": (0.0, 0.05),
    "blur": (1, 5),
    "jpeg": (50, 95),
    "crop": (0.7, 1.0),
    "resize": (0.5, 1.0),
    "brightness": (0.7, 1.3),
    "combined": (0.0, 0.6),
}


class RandomPerturbation:
    """Training-time augmentation: each batch gets one perturbation drawn from ``names`` (or
    none, with probability ``p_clean``) at a random strength within its training range, and the
    result is resized back to the input size so a fixed-resolution network can take it.
    JPEG is straight-through so gradients reach the network before it."""

    def __init__(self, names: list[str], p_clean: float = 0.25) -> None:
        self.names = names
        self.p_clean = p_clean

    def __call__(self, x: Tensor, generator: torch.Generator, dist: Dist | None = None) -> Tensor:
        """``dist``: ``x`` is a process's share of the batch (see :func:`gaussian_noise`)."""
        if not self.names or torch.rand((), generator=generator).item() < self.p_clean:
            return x
        name = self.names[int(torch.randint(len(self.names), (), generator=generator))]
        low, high = TRAINING_RANGES[name]
        strength = low + (high - low) * torch.rand((), generator=generator).item()
        if name == "blur":
            strength = 2 * math.floor(strength / 2) + 1  # odd kernel sizes only
        elif name == "jpeg":
            return jpeg_straight_through(x, round(strength))
        elif name == "combined":
            # Same chain as combined(), with its JPEG step straight-through so gradients pass.
            quality = round(100 - 60 * strength)
            out = center_crop(jpeg_straight_through(x, quality), 1 - 0.3 * strength)
            return _back_to(brightness(out, 1 + 0.3 * strength), x)
        elif name == "noise":
            return gaussian_noise(x, strength, generator, dist)
        return _back_to(apply(name, x, strength, generator), x)


def _back_to(out: Tensor, like: Tensor) -> Tensor:
    if out.shape[-2:] == like.shape[-2:]:
        return out
    return F.interpolate(out, size=like.shape[-2:], mode="bilinear", align_corners=False)


# Attacks on attribution (thesis Table 4.7): each image gets its own strength, drawn from these
# ranges; "combo" applies each of the four with probability 0.5. Noise: the thesis says
# "variance from U[5, 20]", but the code it follows (GANDCTAnalysis' create_perturbed_imagedata.py,
# also used by the authors' attack scripts) multiplies unit normal noise by that number, i.e. it
# is the standard deviation on the 0-255 scale: std 5-20 of 255 here too. Blur kernels are odd
# sizes 1-9; crop keeps 80-95 % of each side (5-20 % cut) at a random offset and resizes back;
# JPEG quality 10-75.
ATTACK_RANGES: dict[str, tuple[float, float]] = {
    "noise": (5 / 255, 20 / 255),
    "blur": (1, 9),
    "crop": (0.80, 0.95),
    "jpeg": (10, 75),
}
ATTACKS = (*ATTACK_RANGES, "combo")
# The order the combination applies its parts in (the paper's: crop, blur, JPEG, noise).
COMBO_ORDER = ("crop", "blur", "jpeg", "noise")


def parse_attacks(text: str) -> list[str]:
    """``"jpeg,combo"`` -> ``["jpeg", "combo"]``; ``"all"`` -> every attack."""
    return _parse_choices(text, list(ATTACKS), "attack")


def _attack_one(name: str, x: Tensor, generator: torch.Generator) -> Tensor:
    if name == "blur":
        size = 1 + 2 * int(torch.randint(5, (), generator=generator))  # 1, 3, 5, 7 or 9
        return gaussian_blur(x, size)
    low, high = ATTACK_RANGES[name]
    strength = low + (high - low) * torch.rand((), generator=generator).item()
    if name == "jpeg":
        return jpeg(x, round(strength))
    if name == "crop":
        return _back_to(random_crop(x, strength, generator), x)
    return gaussian_noise(x, strength, generator)


def random_attack(name: str, x: Tensor, generator: torch.Generator) -> Tensor:
    """Attack ``name`` (or ``combo``) on every image of ``x`` with its own random strength;
    the output has the input's size."""
    if name not in ATTACKS:
        raise GantkError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    out = []
    for image in x.split(1):
        if name == "combo":
            for part in COMBO_ORDER:
                if torch.rand((), generator=generator).item() < 0.5:
                    image = _attack_one(part, image, generator)
        else:
            image = _attack_one(name, image, generator)
        out.append(image)
    return torch.cat(out)
