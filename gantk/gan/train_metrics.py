"""FID and KID of the EMA generator while a GAN trains (``train gan --metrics fid,kid``).

The training data's features (a seeded random subset of at most --metrics-count images) are
computed once and cached in the run folder
(``metrics-real-<features>-<count>.npz``: Gaussian statistics for FID, the features themselves
for KID), so every later evaluation, and a resumed run, only samples the generator. Generated
images use fixed seeds 0…count-1 with seeded random noise, as ``gantk evaluate`` samples a
generator, so values at different kimg compare the same latents. Lower is better for both;
the run keeps ``best.safetensors`` by the first metric named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.gan.sampling import GeneratorSampler
from gantk.io.atomic import atomic_file
from gantk.metrics import distribution
from gantk.metrics.features import FeatureNet, load_feature_net, metric_name
from gantk.metrics.frechet import GaussianStats
from gantk.metrics.sources import ImageSource

METRICS = ("fid", "kid")
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def parse_metrics(text: str) -> list[str]:
    """``"fid,kid"`` -> ``["fid", "kid"]``, refusing unknown and repeated names."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise GantkError(f"--metrics {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    if len(set(names)) != len(names):
        raise GantkError(f"--metrics {text!r} names a metric twice")
    return names


class TrainingMetrics:
    """Scores generators against a run's training data with one feature network."""

    def __init__(
        self,
        names: list[str],
        dataset: torch.utils.data.Dataset,
        data_spec: str,
        run_dir: Path,
        count: int,
        features: str,
        device: torch.device,
        weights: str | None = None,
    ) -> None:
        self.names = names
        self.count = count
        # Loaded at once: a missing weight file (offline) stops the run before it starts.
        self.net: FeatureNet = load_feature_net(features, weights, device)
        self.labels = {name: metric_name(name, features) for name in names}
        self.dataset = dataset
        self.data_spec = data_spec
        self.cache = Path(run_dir) / f"metrics-real-{features}-{count}.npz"
        self._real: tuple[GaussianStats, torch.Tensor | None] | None = None

    @property
    def needs_features(self) -> bool:
        return "kid" in self.names

    def real(self) -> tuple[GaussianStats, torch.Tensor | None]:
        """The training data's statistics (and features for KID), from the cache when there."""
        if self._real is not None:
            return self._real
        cached = self._cached()
        if cached is not None and (cached[1] is not None or not self.needs_features):
            self._real = cached
            return self._real
        total = len(self.dataset)  # type: ignore[arg-type]
        n = min(self.count, total)
        # A seeded random subset: folders list their images class by class, so the first n
        # would miss whole classes.
        rows = np.sort(np.random.RandomState(0).permutation(total)[:n]).tolist()
        subset = torch.utils.data.Subset(self.dataset, rows)
        source = ImageSource(self.data_spec, "dataset", n, None, dataset=subset)
        stats, kept = self._pass(source)
        features = kept.get(self.net.name)
        mu, cov = stats.mean_cov()
        arrays = {"mu": mu, "cov": cov, "count": np.array(stats.count)}
        if features is not None:
            arrays["features"] = features.numpy()
        with atomic_file(self.cache, force=True) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self._real = (stats, features)
        return self._real

    def _cached(self) -> tuple[GaussianStats, torch.Tensor | None] | None:
        """The cache file's statistics; None when there is none or it is damaged (a cache:
        recomputed and rewritten then, instead of stopping the run)."""
        from gantk.io.files import read_npz, scalar_int

        if not self.cache.is_file():
            return None
        try:
            data = read_npz(self.cache, "statistics cache", "it is recomputed")
            stats = GaussianStats.from_mean_cov(data["mu"], data["cov"],
                                                scalar_int(data["count"], "count"),
                                                where=str(self.cache))  # fmt: skip
            features = data.get("features")
            if features is not None and (features.dtype.kind != "f" or features.ndim != 2
                                         or features.shape[1] != stats.dim):  # fmt: skip
                features = None
        except (GantkError, KeyError):
            return None
        return stats, None if features is None else torch.from_numpy(features)

    def _pass(self, source: ImageSource) -> tuple[GaussianStats, dict[str, torch.Tensor]]:
        keep = [self.net.name] if self.needs_features else []
        stats, kept = distribution.feature_pass(source, [self.net], keep)
        return stats[self.net.name], kept

    @torch.no_grad()
    def evaluate(self, generator: torch.nn.Module) -> dict[str, float]:
        """Every metric of ``generator`` (sampled with seeds 0…count-1) against the data."""
        real_stats, real_features = self.real()
        sampler = GeneratorSampler(generator)
        source = ImageSource("generator", "generator", self.count, sampler.resolution,
                             sampler=sampler)  # fmt: skip
        fake_stats, kept = self._pass(source)
        values: dict[str, float] = {}
        for name in self.names:
            if name == "fid":
                values[self.labels[name]] = distribution.fid(real_stats, fake_stats)
            else:
                assert real_features is not None
                mean, _ = distribution.kid(
                    real_features, kept[self.net.name], KID_SUBSETS, KID_SUBSET_SIZE
                )
                values[self.labels[name]] = mean
        return values

    @property
    def first(self) -> str:
        """The metric best.safetensors is chosen by."""
        return self.labels[self.names[0]]
