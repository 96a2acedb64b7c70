"""PSNR and SSIM: SSIM equals scikit-image's default structural_similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gantk.metrics.image_quality import psnr_db, ssim


@pytest.mark.parametrize("shape", [(128, 96, 3), (7, 9, 3), (30, 30)])
def test_ssim_equals_scikit_image(shape) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, shape), 0, 255).astype(np.uint8)
    reference = metrics.structural_similarity(
        a, b, channel_axis=2 if len(shape) == 3 else None, data_range=255
    )
    assert ssim(a, b) == pytest.approx(reference, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_images_smaller_than_the_window_is_nan() -> None:
    assert math.isnan(ssim(np.zeros((6, 40, 3), np.uint8), np.zeros((6, 40, 3), np.uint8)))


def test_psnr() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE = 256 / 48
    assert psnr_db(a, b) == pytest.approx(10 * math.log10(255**2 * 48 / 256))
    assert psnr_db(a, a) == math.inf
