"""PSNR, SSIM and CIEDE2000 of an image and its altered copy (uint8 RGB arrays), numpy only.

SSIM is Wang et al. (2004) as scikit-image computes it by default, so figures compare with
papers that used it: a 7x7 uniform window, K1 0.01, K2 0.03, sample (N-1) covariances, the
mean over pixels at least 3 from every border, averaged over channels. Only windows wholly
inside the image are used, so the box sums need no border mode; they come from integral
images (four lookups per pixel instead of 49 adds), which with no scipy import makes it cheap
enough to measure every fingerprinted image.

CIEDE2000 (Sharma, Wu and Dalal 2005) is the colour difference a person perceives, per pixel:
about 1 is the smallest difference seen side by side, 2.3 a just-noticeable one in everyday
viewing. sRGB is taken as D65 with its standard transfer curve, as scikit-image's rgb2lab does.
SSIM barely moves under a smooth colour shift over a sky; CIEDE2000 sees it.
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


# sRGB (D65) -> CIE XYZ, and the D65 white point (the matrix of IEC 61966-2-1).
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])  # fmt: skip
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


_LEVELS = np.arange(256) / 255.0
# The sRGB transfer curve at each of the 256 levels: a lookup instead of a power per pixel.
_LINEAR = np.where(_LEVELS > 0.04045, ((_LEVELS + 0.055) / 1.055) ** 2.4, _LEVELS / 12.92)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIE L*a*b* (..., 3) under D65."""
    linear = _LINEAR[rgb]
    xyz = linear @ (_RGB_TO_XYZ.T / _WHITE_D65)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)  # fmt: skip


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 difference of two L*a*b* arrays (..., 3), kL = kC = kH = 1."""
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_mean**7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    chroma = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma == 0, 0.0, dh)
    dhh = 2 * np.sqrt(chroma) * np.sin(np.radians(dh) / 2)
    l_mean, cp_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360),
                      h_sum) / 2  # fmt: skip
    h_mean = np.where(chroma == 0, h_sum, h_mean)
    hue = np.radians(h_mean)
    t = 1 - 0.17 * np.cos(hue - np.radians(30)) + 0.24 * np.cos(2 * hue)
    t = t + 0.32 * np.cos(3 * hue + np.radians(6)) - 0.20 * np.cos(4 * hue - np.radians(63))
    sl = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    sc = 1 + 0.045 * cp_mean
    sh = 1 + 0.015 * cp_mean * t
    cp7 = cp_mean**7
    rt = (-2 * np.sqrt(cp7 / (cp7 + 25.0**7))
          * np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2)))))  # fmt: skip
    dl, dc, dhh = dl / sl, dc / sc, dhh / sh
    return np.sqrt(dl**2 + dc**2 + dhh**2 + rt * dc * dhh)


def delta_e_mean(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference of two uint8 RGB images (H, W, 3)."""
    return float(ciede2000(rgb_to_lab(a), rgb_to_lab(b)).mean())
