"""Scoring an attribution: accuracy, per-class accuracy, confusion, FD ratio, real-vs-fake.

The FD ratio (thesis Table 4.1, bottom rows) measures how well a representation separates the
sources: the mean Fréchet distance between the features of two different classes over the mean
Fréchet distance between two random halves of one class. Higher is better; 1 means the classes
look alike. Features wider than :data:`FD_MAX_DIM`, or than a quarter of the smallest class's
image count, are first projected on their leading principal components so the covariances of
half a class stay estimable (and the square roots cheap); the paper's 512-d features need
2048 images per class to be used whole.

When one class is the real one (``real`` or ``0_real``), the figures deepfake detectors report are
added: real-vs-fake accuracy (a fake attributed to the wrong GAN still counts as fake) and the
average precision of "fake" scored by 1 - P(real).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from gantk.attribution.data import real_class
from gantk.metrics.frechet import frechet_distance

FD_MAX_DIM = 256


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fd_ratio(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """Mean inter-class over mean intra-class Fréchet distance (None without two classes of at
    least four images)."""
    features = np.asarray(features, dtype=np.float64)
    sizes = np.bincount(labels)
    # Halves of the smallest class must estimate a covariance: keep at most a quarter as many
    # dimensions as that class has images (and FD_MAX_DIM), through PCA when wider.
    dims = max(2, min(FD_MAX_DIM, int(sizes[sizes > 0].min()) // 4))
    if features.shape[1] > dims:
        centred = features - features.mean(axis=0)
        # Principal components through the smaller of the N x N Gram matrix and the D x D
        # covariance (raw pixels at 128 px are 49152 wide; a full SVD would take minutes).
        if len(centred) <= centred.shape[1]:
            values, vectors = np.linalg.eigh(centred @ centred.T)
            top = np.argsort(values)[::-1][:dims]
            features = vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
        else:
            values, vectors = np.linalg.eigh(centred.T @ centred)
            features = centred @ vectors[:, np.argsort(values)[::-1][:dims]]
    rng = np.random.default_rng(seed)
    groups = [features[labels == c] for c in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 4]
    if len(groups) < 2:
        return None
    stats = [_gaussian(g) for g in groups]
    inter = np.mean([frechet_distance(*a, *b) for a, b in combinations(stats, 2)])
    intra = []
    for g in groups:
        order = rng.permutation(len(g))
        half = len(g) // 2
        intra.append(frechet_distance(*_gaussian(g[order[:half]]), *_gaussian(g[order[half:]])))
    return float(inter / max(np.mean(intra), 1e-12))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positive, score))


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def report(
    labels: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    features: np.ndarray | None = None,
) -> dict:
    """Every figure of an evaluation, JSON-ready."""
    classes = len(class_names)
    matrix = confusion_matrix(labels, predicted, classes)
    counts = matrix.sum(axis=1)
    per_class = {
        name: (float(matrix[i, i] / counts[i]) if counts[i] else None)
        for i, name in enumerate(class_names)
    }
    out: dict = {
        "images": len(labels),
        "accuracy": float((labels == predicted).mean()),
        "per_class_accuracy": per_class,
        "confusion": matrix.tolist(),
        "classes": class_names,
    }
    if features is not None:
        out["fd_ratio"] = fd_ratio(features, labels)
    real = real_class(class_names)
    if real is not None:
        is_fake = labels != real
        out["real_vs_fake"] = {
            "accuracy": float(((predicted != real) == is_fake).mean()),
            "average_precision": (
                average_precision(is_fake, 1 - probabilities[:, real])
                if 0 < is_fake.sum() < len(is_fake)
                else None
            ),
        }
    return out


def plot_confusion(matrix: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix as a PNG (counts written in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if rates[i, j] > 0.5 else "black", fontsize=8)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
