"""Metrics comparing two image distributions in a feature space: FID, KID, precision/recall.

All of them start from one feature pass per image set (:func:`feature_pass`), which feeds
every requested network once and keeps what the metrics need: streaming Gaussian statistics
(FID) and, when asked, the features themselves (KID, precision/recall).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.metrics.features import FeatureNet
from gantk.metrics.frechet import GaussianStats, frechet_from_stats
from gantk.metrics.sources import ImageSource
from gantk.nn.distributed import Dist


def feature_pass(
    source: ImageSource,
    nets: Sequence[FeatureNet],
    keep: Sequence[str] = (),
    batch_size: int = 50,
    workers: int = 0,
    advance: Callable[[int], None] | None = None,
    part: range | None = None,
) -> tuple[dict[str, GaussianStats], dict[str, torch.Tensor]]:
    """Run every network over the source once; returns (stats by net, kept features by net).
    ``part``: only those batches (a shard's or a process's share; :func:`pooled` joins the
    shares of the processes)."""
    stats = {net.name: GaussianStats(net.dim) for net in nets}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in keep}
    for images in source.batches(batch_size, workers, part):
        for net in nets:
            features = net(images)
            try:
                stats[net.name].update(features)
            except GantkError as exc:  # name the set whose images gave NaN features
                raise GantkError(f"{source.spec}: {exc}") from None
            if net.name in kept:
                kept[net.name].append(features.cpu())
        if advance is not None:
            advance(len(images))
    return stats, {k: torch.cat(v) for k, v in kept.items() if v}


def pooled(
    found: tuple[dict[str, GaussianStats], dict[str, torch.Tensor]], dist: Dist
) -> tuple[dict[str, GaussianStats], dict[str, torch.Tensor]]:
    """What the processes' feature passes found together: the statistics' sums added across
    processes (exact: sums of features and of their outer products, never an average of
    covariances) and the kept features joined in rank order, which is the order of the set."""
    stats, kept = found
    if dist.world == 1:
        return found
    for s in stats.values():
        assert s.total is not None and s.outer is not None
        packed = torch.from_numpy(np.concatenate([[s.count], s.total, s.outer.ravel()]))
        summed = dist.sum(packed).numpy()
        s.count = round(float(summed[0]))
        s.total, s.outer = summed[1 : 1 + s.dim], summed[1 + s.dim :].reshape(s.dim, s.dim)
    shares = dist.gather(kept)  # a process with no images kept nothing
    names = dict.fromkeys(name for share in shares for name in share)
    return stats, {name: torch.cat([s[name] for s in shares if name in s]) for name in names}


def fid(a: GaussianStats, b: GaussianStats) -> float:
    # A squared distance: rounding can leave it a hair below 0 for identical statistics. Only
    # that: frechet_from_stats refuses NaN and invalid statistics, so none is clamped into 0.
    return max(0.0, frechet_from_stats(a, b))


def kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with k(x, y) = (x·y/d + 1)³, averaged over
    ``subsets`` random subsets (seeded); returns (mean, std)."""
    real, fake = real.double(), fake.double()
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise GantkError("KID needs at least 2 images in each set")
    if m < subset_size:
        warnings.warn(
            f"KID subsets of {m} images instead of {subset_size}: fewer images than "
            "the subset size; the estimate is noisier",
            stacklevel=2,
        )
    dim = real.shape[1]
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=gen)[:m]]
        y = fake[torch.randperm(len(fake), generator=gen)[:m]]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        off = m * (m - 1)
        mmd = (
            (kxx.sum() - kxx.diagonal().sum()) / off
            + (kyy.sum() - kyy.diagonal().sum()) / off
            - 2 * kxy.mean()
        )
        values.append(float(mmd))
    return float(np.mean(values)), float(np.std(values))


def _kth_neighbour_radii(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance of each row of ``x`` to its k-th nearest other row (self excluded)."""
    radii = []
    for chunk in x.split(block):
        d = torch.cdist(chunk, x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the row itself is at distance 0
    return torch.cat(radii)


def _covered(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int
) -> torch.Tensor:
    """For each query: is it within radius of at least one centre (distance <= radius)?"""
    inside = []
    for chunk in queries.split(block):
        d = torch.cdist(chunk, centres)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, block: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls; distances
    are computed in blocks so 50k x 50k sets fit in memory."""
    real, fake = real.float(), fake.float()
    if min(len(real), len(fake)) <= k:
        raise GantkError(
            f"precision/recall with --k {k} needs more than {k} images per set; "
            "use more images or a smaller --k"
        )
    real_radii = _kth_neighbour_radii(real, k, block)
    fake_radii = _kth_neighbour_radii(fake, k, block)
    precision = _covered(fake, real, real_radii, block).float().mean().item()
    recall = _covered(real, fake, fake_radii, block).float().mean().item()
    return precision, recall
