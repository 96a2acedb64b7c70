"""``digits`` and ``stacked-digits``: sklearn's 8x8 handwritten digits, upsampled.

Stacked-digits follows the Stacked-MNIST protocol used for mode coverage (Inclusive GAN, ch.7):
each image holds three independently drawn digits in its R, G and B channels, so there are
1000 modes and the label is the mode id 100*R + 10*G + B.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gantk.io.dataset_base import ArrayDataset


def _digit_bank(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as grayscale uint8 (N, R, R) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    up = np.stack(
        [
            np.asarray(
                Image.fromarray(g).resize((resolution, resolution), Image.Resampling.BILINEAR)
            )
            for g in gray
        ]
    )
    return up, digits.target.astype(np.int64)


def build_digits(count: int, resolution: int, seed: int) -> ArrayDataset:
    gray, labels = _digit_bank(resolution)
    gray, labels = gray[:count], labels[:count]
    return ArrayDataset(
        np.repeat(gray[..., None], 3, axis=3), "builtin:digits", labels, [str(d) for d in range(10)]
    )


def build_stacked_digits(count: int, resolution: int, seed: int) -> ArrayDataset:
    gray, labels = _digit_bank(resolution)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(gray), size=(count, 3))
    images = np.stack([gray[picks[:, c]] for c in range(3)], axis=3)
    modes = labels[picks[:, 0]] * 100 + labels[picks[:, 1]] * 10 + labels[picks[:, 2]]
    return ArrayDataset(images, "builtin:stacked-digits", modes, [f"{m:03d}" for m in range(1000)])
