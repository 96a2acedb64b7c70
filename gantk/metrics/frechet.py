"""Fréchet distance between Gaussians fitted to features, accumulated in streaming fashion.

d² = |mu1 - mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), computed in float64 through symmetric
eigendecompositions (no scipy sqrtm, whose API changed under pytorch-fid). Statistics are
accumulated as sums of x and x xᵀ, so features never have to be held all at once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from gantk.errors import GantkError

# How far a covariance read from a file may be from symmetric and positive semi-definite,
# relative to its largest entry / eigenvalue: rounding (a float32 copy of 2048-d statistics
# moves eigenvalues by ~1e-6 of the largest) passes, a matrix that is no covariance does not.
SYMMETRY_TOL = 1e-6
PSD_TOL = 1e-4


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
    def from_mean_cov(
        cls, mu: np.ndarray, cov: np.ndarray, count: int = 0, where: str = "statistics"
    ) -> GaussianStats:
        """Statistics given as a mean and a covariance (e.g. read from a file), checked to be
        a Gaussian's (:func:`check_gaussian`); errors name ``where``."""
        mu, cov = check_gaussian(mu, cov, where)
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
        if not np.isfinite(x).all():
            # One NaN feature would make every statistic NaN, and the distance a silent NaN.
            raise GantkError(
                "the feature network gave NaN or infinite features (images or a generator "
                "that are not finite); check the model and the images"
            )
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def add(self, other: GaussianStats) -> None:
        """Pool another part's sums into these: exact, sums add (pooled covariances follow
        from them; an average of covariances would not be the whole set's)."""
        if self.fixed is not None or other.fixed is not None:
            raise ValueError("statistics read as a mean and covariance have no sums to pool")
        self.count += other.count
        self.total += other.total
        self.outer += other.outer

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.fixed is not None:
            return self.fixed
        if self.count < 2:
            raise ValueError("need at least 2 feature vectors for a covariance")
        mu = self.total / self.count
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, cov


def _real_array(value: object, what: str, where: str) -> np.ndarray:
    array = np.asarray(value)
    if np.iscomplexobj(array):
        raise GantkError(f"{where}: {what} is complex; a Gaussian's {what} is real")
    if array.dtype.kind not in "iuf":
        raise GantkError(f"{where}: {what} holds {array.dtype} values, not numbers")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise GantkError(f"{where}: {what} holds NaN or infinite values; recompute the statistics")
    return array


def check_gaussian(mu: object, cov: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) as float64 if they describe a Gaussian: real, finite, a vector and a
    square matrix of its size, the matrix symmetric and positive semi-definite (within
    rounding); GantkError naming ``where`` otherwise. A distance computed from anything else
    is a number that means nothing (e.g. a NaN that ``max(0, ·)`` would turn into 0)."""
    mean = _real_array(mu, "the mean", where)
    matrix = _real_array(cov, "the covariance", where)
    if mean.ndim != 1 or not len(mean) or matrix.shape != (len(mean), len(mean)):
        raise GantkError(
            f"{where}: a mean of shape {mean.shape} and a covariance of shape {matrix.shape} "
            "do not describe one Gaussian; recompute the statistics"
        )
    scale = float(np.abs(matrix).max(initial=0.0))
    if float(np.abs(matrix - matrix.T).max(initial=0.0)) > SYMMETRY_TOL * scale:
        raise GantkError(f"{where}: the covariance is not symmetric; recompute the statistics")
    values = np.linalg.eigvalsh(matrix)
    if values.size and values[0] < -PSD_TOL * max(float(values[-1]), 0.0):
        raise GantkError(
            f"{where}: the covariance has a negative eigenvalue ({values[0]:.3g}), so it is "
            "no covariance; recompute the statistics"
        )
    return mean, matrix


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2); GantkError for
    Gaussians of different dimensions or a value that is not a finite number."""
    if len(mu1) != len(mu2):
        raise GantkError(
            f"the statistics are of {len(mu1)}-d and {len(mu2)}-d features; compare "
            "statistics of the same feature network"
        )
    root1 = _sqrt_psd(cov1)
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
    if not math.isfinite(distance):  # inputs too large for float64: no score, not a wrong one
        raise GantkError(
            "the Fréchet distance is not a finite number (statistics of non-finite or "
            "overflowing features); check the images and the model"
        )
    return distance


def frechet_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    for stats in (a, b):
        if (stats.count or stats.fixed is None) and stats.count <= stats.dim:
            warnings.warn(
                f"{stats.count} samples for {stats.dim}-d features: the covariance is "
                "singular and the distance is biased; use more samples",
                stacklevel=2,
            )
    return frechet_distance(*a.mean_cov(), *b.mean_cov())
