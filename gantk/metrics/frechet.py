"""Fréchet distance between Gaussians fitted to features, accumulated in streaming fashion.

d² = |mu1 - mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), computed in float64 through symmetric
eigendecompositions (no scipy sqrtm, whose API changed under pytorch-fid). Statistics are
accumulated as sums of x and x xᵀ, so features never have to be held all at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class GaussianStats:
    """Running count, sum and sum of outer products of feature vectors (float64); or, for
    statistics read from a file, their mean and covariance as stored (``fixed``), with the count
    0 where the file does not record it (pytorch-fid's)."""

    dim: int
    count: int = 0
    total: np.ndarray | None = None
    outer: np.ndarray | None = None
    fixed: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_mean_cov(cls, mu: np.ndarray, cov: np.ndarray, count: int = 0) -> GaussianStats:
        mu, cov = np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64)
        if mu.ndim != 1 or cov.shape != (len(mu), len(mu)):
            raise ValueError(f"mean {mu.shape} and covariance {cov.shape} do not fit together")
        return cls(len(mu), count, fixed=(mu, cov))

    def __post_init__(self) -> None:
        self.total = np.zeros(self.dim) if self.total is None else self.total
        self.outer = np.zeros((self.dim, self.dim)) if self.outer is None else self.outer

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = (
            features.detach().double().cpu().numpy()
            if isinstance(features, torch.Tensor)
            else features
        )
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dimensions, expected {self.dim}")
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.fixed is not None:
            return self.fixed
        if self.count < 2:
            raise ValueError("need at least 2 feature vectors for a covariance")
        mu = self.total / self.count
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, cov


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2)."""
    root1 = _sqrt_psd(cov1)
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


def frechet_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    for stats in (a, b):
        if (stats.count or stats.fixed is None) and stats.count <= stats.dim:
            warnings.warn(
                f"{stats.count} samples for {stats.dim}-d features: the covariance is "
                "singular and the distance is biased; use more samples",
                stacklevel=2,
            )
    return frechet_distance(*a.mean_cov(), *b.mean_cov())
