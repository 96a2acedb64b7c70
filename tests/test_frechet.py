"""Fréchet distance (shared by FDDF and FID) and FDDF on a tiny GAN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from gantk.gan.fddf import fddf
from gantk.gan.networks import Discriminator, Generator, NetworkConfig
from gantk.io.builtin import load_builtin
from gantk.metrics.frechet import GaussianStats, frechet_distance, frechet_from_stats


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm: an independent computation."""
    m1, c1 = a.mean(0), np.cov(a, rowvar=False)
    m2, c2 = b.mean(0), np.cov(b, rowvar=False)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real))


def test_streaming_stats_match_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6))
    b = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + 0.5
    sa, sb = GaussianStats(6), GaussianStats(6)
    for chunk in np.array_split(a, 7):
        sa.update(chunk)
    sb.update(torch.from_numpy(b).float())
    assert frechet_from_stats(sa, sb) == pytest.approx(
        scipy_frechet(a, b.astype(np.float32)), rel=1e-6
    )


def test_identical_gaussians_are_at_distance_zero_and_shift_adds_squared_norm() -> None:
    cov = np.array([[2.0, 0.3], [0.3, 1.0]])
    mu = np.array([1.0, -1.0])
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-10)
    assert frechet_distance(mu, cov, mu + np.array([3.0, 4.0]), cov) == pytest.approx(25.0)


def test_few_samples_warn() -> None:
    rng = np.random.default_rng(1)
    sa, sb = GaussianStats(8), GaussianStats(8)
    sa.update(rng.normal(size=(5, 8)))
    sb.update(rng.normal(size=(5, 8)))
    with pytest.warns(UserWarning, match="singular"):
        frechet_from_stats(sa, sb)


@pytest.mark.parametrize("d_attn", [None, "reference@8"])
def test_fddf_is_positive_and_deterministic(d_attn: str | None) -> None:
    torch.manual_seed(0)
    cfg = NetworkConfig(
        resolution=16,
        z_dim=16,
        w_dim=16,
        mapping_layers=1,
        channel_base=64,
        channel_max=8,
        d_attn=d_attn,
    )
    G, D = Generator(cfg), Discriminator(cfg)
    data = load_builtin("builtin:shapes", count=40, resolution=16)
    first = fddf(D, G, data, count=48, batch_size=16)
    assert first > 0
    assert fddf(D, G, data, count=48, batch_size=16) == pytest.approx(first, rel=1e-9)
