"""Precision and recall for distributions (PRD, Sajjadi et al., NeurIPS 2018).

This is the precision/recall of the Inclusive GAN chapter (thesis §7, Tables 7.2-7.3), not the
k-NN manifold precision/recall of Kynkäänniemi et al. 2019 (`gantk evaluate pr`).

Both feature sets (Inception pool features, as for FID) are clustered together by k-means; the
two cluster histograms P (reference, real) and Q (evaluated, generated) are compared through the
family of pairs, for every slope λ > 0:

    α(λ) = Σ_i min(λ P_i, Q_i)          precision: how much of Q lies where P has mass
    β(λ) = α(λ) / λ = Σ_i min(P_i, Q_i / λ)   recall: how much of P is covered by Q

with λ = tan θ for ``angles`` values of θ spread evenly over (0, π/2). The curve is averaged over
``runs`` clusterings with different seeds (k-means is random). The paper summarises the curve by

    F_β = max over the curve of (1 + β²) α β_rec / (β² α + β_rec)

with β = 8 (recall-weighted: does G cover the data's modes?) and β = 1/8 (precision-weighted: do
G's samples look like data?). Defaults follow the authors' code: 20 clusters, 1001 angles, 10
runs, equal set sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gantk.errors import GantkError

CLUSTERS, ANGLES, RUNS, BETA = 20, 1001, 10, 8.0
# Keeps the slopes finite and positive at the ends of (0, π/2).
ANGLE_EPSILON = 1e-10


@dataclass
class PRD:
    precision: np.ndarray  # (angles,), averaged over runs
    recall: np.ndarray
    f_beta: float  # F_8: recall-weighted summary
    f_beta_inv: float  # F_1/8: precision-weighted summary
    beta: float

    def summary(self) -> dict:
        beta = f"{self.beta:g}"
        return {
            f"f_{beta}": self.f_beta,
            f"f_1/{beta}": self.f_beta_inv,
            "max_precision": float(self.precision.max()),
            "max_recall": float(self.recall.max()),
        }


def slopes(angles: int = ANGLES) -> np.ndarray:
    """λ = tan θ for θ evenly spaced over (0, π/2); the middle one is λ = 1 (θ = π/4)."""
    if angles < 3:
        raise GantkError("--angles must be at least 3")
    theta = np.linspace(ANGLE_EPSILON, math.pi / 2 - ANGLE_EPSILON, angles)
    return np.tan(theta)


def prd_curve(
    reference: np.ndarray, evaluated: np.ndarray, angles: int = ANGLES
) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of the distribution ``evaluated`` (Q) against ``reference`` (P),
    two histograms over the same bins."""
    p = _histogram(reference, "reference")
    q = _histogram(evaluated, "evaluated")
    if p.shape != q.shape:
        raise GantkError(f"histograms over different bins ({p.size} and {q.size})")
    lam = slopes(angles)
    precision = np.minimum(p[None, :] * lam[:, None], q[None, :]).sum(axis=1)
    recall = precision / lam
    # Rounding may push a value just past 1.
    return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def _histogram(values: np.ndarray, name: str) -> np.ndarray:
    h = np.asarray(values, dtype=np.float64)
    if h.ndim != 1 or (h < 0).any() or h.sum() <= 0:
        raise GantkError(f"the {name} histogram must be 1-D, non-negative and not all zero")
    return h / h.sum()


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> float:
    """max over the curve of F_β = (1 + β²) p r / (β² p + r) (0 where p = r = 0)."""
    num = (1 + beta**2) * precision * recall
    den = beta**2 * precision + recall
    values = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(values.max())


def cluster_histograms(
    reference: np.ndarray, evaluated: np.ndarray, clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster both feature sets together (mini-batch k-means, 10 initialisations, as the
    authors); each set's share of points in every cluster."""
    from sklearn.cluster import MiniBatchKMeans

    both = np.concatenate([reference, evaluated]).astype(np.float64)
    kmeans = MiniBatchKMeans(n_clusters=clusters, n_init=10, random_state=seed)
    labels = kmeans.fit(both).labels_
    ref_labels, eval_labels = labels[: len(reference)], labels[len(reference) :]
    p = np.bincount(ref_labels, minlength=clusters) / len(reference)
    q = np.bincount(eval_labels, minlength=clusters) / len(evaluated)
    return p, q


def prd_from_features(
    reference: np.ndarray,
    evaluated: np.ndarray,
    clusters: int = CLUSTERS,
    angles: int = ANGLES,
    runs: int = RUNS,
    beta: float = BETA,
    seed: int = 0,
) -> PRD:
    """PRD of ``evaluated`` features (N, D) against ``reference`` features (N, D)."""
    reference, evaluated = np.asarray(reference), np.asarray(evaluated)
    if reference.ndim != 2 or evaluated.ndim != 2 or reference.shape[1] != evaluated.shape[1]:
        raise GantkError("PRD needs two feature sets (N, D) of the same width")
    if len(reference) != len(evaluated):
        # As the authors: unequal sets would bias the histograms' comparison.
        raise GantkError(
            f"PRD compares sets of equal size, got {len(reference)} and {len(evaluated)} "
            "images; pass the same --count for both"
        )
    if clusters < 2 or clusters > len(reference):
        raise GantkError(
            f"--clusters {clusters} must be between 2 and the number of images per set "
            f"({len(reference)})"
        )
    if runs < 1:
        raise GantkError("--runs must be at least 1")
    if beta <= 0:
        raise GantkError("--beta must be above 0")
    curves = [
        prd_curve(*cluster_histograms(reference, evaluated, clusters, seed + run), angles=angles)
        for run in range(runs)
    ]
    precision = np.mean([c[0] for c in curves], axis=0)
    recall = np.mean([c[1] for c in curves], axis=0)
    return PRD(
        precision,
        recall,
        f_beta(precision, recall, beta),
        f_beta(precision, recall, 1 / beta),
        beta,
    )


def plot_prd(curves: dict[str, PRD], path, title: str = "PRD") -> None:
    """The curves (recall on x, precision on y), one per label, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for label, prd in curves.items():
        beta = f"{prd.beta:g}"
        ax.plot(prd.recall, prd.precision, label=f"{label} (F{beta} {prd.f_beta:.3f}, "
                f"F1/{beta} {prd.f_beta_inv:.3f})")  # fmt: skip
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
