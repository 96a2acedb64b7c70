"""How well a fingerprint survives what happens to images (and models) after release.

:func:`image_sweep` perturbs fingerprinted images (:mod:`gantk.perturb`: noise, blur, JPEG,
crop, resize, brightness, their combination) at increasing strengths and decodes them;
:func:`model_sweep` perturbs a generator trained on fingerprinted data (weight quantization,
weight noise: Fig. 5.3 of the thesis) and decodes what it generates. Each row gives the mean bit
accuracy, the fraction of images detected at the false-positive rate, and the median p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.artificial import to_tensor
from gantk.fingerprint.native import read_bits
from gantk.fingerprint.stego import StegoDecoder
from gantk.perturb import SWEEPS, apply

QUANTIZATION_BITS = [16, 12, 10, 8, 6, 4]
WEIGHT_NOISE = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]


def _score(decoded: np.ndarray, expected: np.ndarray, limit: int) -> dict:
    matches = (decoded == expected).sum(axis=1)
    n = expected.shape[-1]
    return {
        "bit_accuracy": float(matches.mean() / n),
        "detection_rate": float((matches >= limit).mean()),
        "median_p_value": float(np.median(fpbits.p_value(matches, n))),
        "folder_p_value": fpbits.folder_test(decoded, expected)["p_value"],
    }


def image_sweep(
    images: list[torch.Tensor],
    expected: np.ndarray,
    decoder: StegoDecoder,
    names: Iterable[str],
    fpr: float,
    seed: int = 0,
    advance: Callable[[int], None] | None = None,
    design: str = "native",
) -> list[dict]:
    """One row per (perturbation, strength); ``expected`` is (count, bits), one row per image;
    images are read the way ``design`` embedded them."""
    limit = fpbits.threshold(decoder.config.bits, fpr)
    rows = []
    for name in names:
        for strength in SWEEPS[name]:
            generator = torch.Generator().manual_seed(seed)
            perturbed = [apply(name, image, strength, generator) for image in images]
            decoded = read_bits(decoder, perturbed, design)
            rows.append({"perturbation": name, "strength": strength,
                         **_score(decoded, expected, limit)})  # fmt: skip
            if advance:
                advance(1)
    return rows


def quantize_(module: torch.nn.Module, bits: int) -> None:
    """Uniform symmetric quantization of every weight tensor to ``bits`` bits, per tensor."""
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for param in module.parameters():
            scale = param.abs().max().clamp_min(1e-12) / levels
            param.copy_((param / scale).round() * scale)


def add_weight_noise_(
    module: torch.nn.Module, relative_std: float, generator: torch.Generator
) -> None:
    """Gaussian noise with std ``relative_std`` times each tensor's own std."""
    with torch.no_grad():
        for param in module.parameters():
            spread = param.std() if param.numel() > 1 else param.abs()
            noise = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
            param.add_(noise * spread * relative_std)


def model_sweep(
    generator_path: Path,
    expected: np.ndarray,
    decoder: StegoDecoder,
    count: int,
    fpr: float,
    seed: int = 0,
    device: str = "cpu",
    advance: Callable[[int], None] | None = None,
    design: str = "native",
) -> list[dict]:
    """Rows for weight quantization and weight noise of a generator; ``expected`` is one
    fingerprint (bits,), the one embedded in its training data."""
    from gantk.gan.generate import load_generator, render
    from gantk.gan.sampling import latents_for

    limit = fpbits.threshold(decoder.config.bits, fpr)
    seeds = list(range(seed, seed + count))
    cases = [("weight quantization", b) for b in QUANTIZATION_BITS]
    cases += [("weight noise", s) for s in WEIGHT_NOISE]
    rows = []
    for name, strength in cases:
        G = load_generator(generator_path, device)
        if name == "weight quantization":
            quantize_(G, int(strength))
        elif strength:
            add_weight_noise_(G, float(strength), torch.Generator().manual_seed(seed))
        images = [to_tensor(img) for img in render(G, latents_for(seeds, G), 1.0)]
        decoded = read_bits(decoder, images, design)
        score = _score(decoded, np.broadcast_to(expected, decoded.shape), limit)
        rows.append({"perturbation": name, "strength": strength, **score})
        if advance:
            advance(1)
    return rows


def plot(rows: list[dict], path: Path, threshold_accuracy: float) -> None:
    """Bit accuracy against strength, one panel per perturbation, with the detection line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["perturbation"] for r in rows))
    cols = min(4, len(names))
    grid_rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(grid_rows, cols, figsize=(3.2 * cols, 2.6 * grid_rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        points = [r for r in rows if r["perturbation"] == name]
        xs = list(range(len(points)))
        ax.plot(xs, [r["bit_accuracy"] for r in points], marker="o")
        ax.axhline(threshold_accuracy, color="red", linestyle="--", linewidth=1)
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(xs, [f"{r['strength']:g}" for r in points], fontsize=7)
        ax.set_ylim(0.4, 1.02)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("bit accuracy", fontsize=8)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
