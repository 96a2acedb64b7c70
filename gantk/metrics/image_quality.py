"""PSNR and SSIM of an image and its altered copy (uint8 RGB arrays), numpy only.

SSIM is Wang et al. (2004) as scikit-image computes it by default, so figures compare with
papers that used it: a 7x7 uniform window, K1 0.01, K2 0.03, sample (N-1) covariances, the
mean over pixels at least 3 from every border, averaged over channels. Only windows wholly
inside the image are used, so the box sums need no border mode; they come from integral
images (four lookups per pixel instead of 49 adds), which with no scipy import makes it cheap
enough to measure every fingerprinted image.
"""

from __future__ import annotations

import numpy as np

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB arrays (peak 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _window_means(x: np.ndarray, size: int) -> np.ndarray:
    """Mean of every size x size window wholly inside x (H, W, C) -> (H-size+1, W-size+1, C)."""
    integral = np.zeros((x.shape[0] + 1, x.shape[1] + 1, x.shape[2]))
    np.cumsum(np.cumsum(x, axis=0), axis=1, out=integral[1:, 1:])
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])  # fmt: skip
    return sums / (size * size)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two (H, W, C) or (H, W) images; NaN when a side is under 7 pixels."""
    x = np.atleast_3d(a).astype(np.float64)
    y = np.atleast_3d(b).astype(np.float64)
    if min(x.shape[:2]) < SSIM_WINDOW:
        return float("nan")
    ux, uy, uxx, uyy, uxy = (_window_means(v, SSIM_WINDOW) for v in (x, y, x * x, y * y, x * y))
    n = SSIM_WINDOW * SSIM_WINDOW
    cov = n / (n - 1)
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean(axis=(0, 1)).mean())
