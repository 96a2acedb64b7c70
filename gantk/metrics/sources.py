"""Image sets for metrics: datasets, generators sampled on the fly, and cached statistics.

A source is given as a string: a folder, an .h5 pack or ``builtin:NAME`` (a dataset); a
``gan-generator`` checkpoint (sampled with seeds SEED…SEED+n-1, like ``gantk generate``); or an
``.npz`` file of cached feature statistics (``--save-stats``), usable where only statistics are
needed (FID).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file
from gantk.io.prefetch import prefetch
from gantk.metrics.frechet import GaussianStats

DEFAULT_GENERATOR_SAMPLES = 10000


@dataclass
class ImageSource:
    spec: str
    kind: str  # "dataset", "generator" or "stats"
    count: int
    resolution: int | None
    _dataset: object = None
    _generator: object = None
    seed: int = 0
    truncation: float = 1.0
    stats: dict[str, GaussianStats] = field(default_factory=dict)

    def batches(self, batch_size: int, workers: int = 0) -> Iterator[torch.Tensor]:
        """uint8 (B, 3, H, W) batches, in a fixed order."""
        if self.kind == "stats":
            raise GantkError(f"{self.spec} holds statistics only; this metric needs images")
        if self.kind == "generator":
            from gantk.gan.generate import (
                NOISE_SEED_OFFSET,
                latents_for,
                sample_uint8,
                seed_classes,
            )

            G = self._generator
            seeds = range(self.seed, self.seed + self.count)
            for start, chunk in zip(
                seeds[::batch_size], latents_for(seeds, G).split(batch_size),
                strict=True,
            ):  # fmt: skip
                # Noise inputs random (as StyleGAN2's metrics sample), seeded by the batch's
                # first latent seed: the same images on every run.
                batch_seeds = seeds[start - self.seed : start - self.seed + len(chunk)]
                yield sample_uint8(G, chunk, NOISE_SEED_OFFSET + start, self.truncation,
                                   seed_classes(G, batch_seeds))  # fmt: skip
            return
        loader = torch.utils.data.DataLoader(
            self._dataset, batch_size=batch_size, num_workers=workers, shuffle=False
        )
        batches = (images for images, _ in loader)
        # Without worker processes, a reader thread decodes the next batch during the forward.
        yield from (prefetch(batches) if workers == 0 else batches)


def _common_size(dataset) -> int | None:
    """A folder read at native size must hold images of one size to be batched."""
    sizes = sorted(set(getattr(dataset, "sizes", None) or []))
    if len(sizes) > 1:
        raise GantkError(
            f"{dataset.name} holds images of {len(sizes)} different sizes (e.g. "
            f"{sizes[0][0]}x{sizes[0][1]} and {sizes[-1][0]}x{sizes[-1][1]}); pass "
            "--resolution to bring them to one (the feature network resizes anyway)"
        )
    return sizes[0][0] if sizes and sizes[0][0] == sizes[0][1] else None


def _stop_at_unreadable(message: str) -> None:
    """A metric stops at an unreadable file: skipping it would measure another set."""
    raise GantkError(
        f"{message.replace('skipping ', 'cannot use ', 1)}: a metric takes every image of a "
        "set; remove or replace the file"
    )


def open_source(
    spec: str,
    count: int | None = None,
    resolution: int | None = None,
    seed: int = 0,
    truncation: float = 1.0,
    device: str = "cpu",
    subset: Sequence[str] | None = None,
    attributes_csv: str | Path | None = None,
) -> ImageSource:
    """A set to measure: cached statistics, a generator, or a dataset (with ``subset``, only
    its images having any of those attributes, e.g. a minority group)."""
    text = str(spec)
    if text.lower().endswith(".npz"):
        return load_stats(text)
    if text.lower().endswith(".safetensors"):
        from gantk.gan.generate import load_generator

        G = load_generator(text, device)
        n = count or DEFAULT_GENERATOR_SAMPLES
        return ImageSource(
            text,
            "generator",
            n,
            G.config.resolution,
            _generator=G,
            seed=seed,
            truncation=truncation,
        )
    from gantk.io.datasets import Subset, attribute_rows, attributes_file, open_dataset

    # Feature networks resize to their own input size anyway, so small images may be enlarged.
    dataset = open_dataset(text, resolution=resolution, allow_upscale=True,
                           count=None if subset else count, seed=None,
                           attributes_csv=attributes_file(text, attributes_csv) if subset
                           else attributes_csv, warn=_stop_at_unreadable)  # fmt: skip
    if subset:
        rows = attribute_rows(dataset, subset)
        dataset = Subset(dataset, rows[:count] if count else rows)
    res = dataset.resolution if dataset.resolution is not None else _common_size(dataset)
    if len(dataset) < 2:
        raise GantkError(f"{spec} has {len(dataset)} image; a distribution metric needs at least 2")
    return ImageSource(text, "dataset", len(dataset), res, _dataset=dataset)


def _pytorch_fid_stats(path: str | Path, data) -> GaussianStats:
    stats = GaussianStats.from_mean_cov(data["mu"], data["sigma"])
    if stats.dim != 2048:
        raise GantkError(
            f"{path} holds pytorch-fid statistics of {stats.dim}-d features (--dims {stats.dim}); "
            "gantk's FID uses the 2048-d pool features: make them with --dims 2048"
        )
    return stats


def save_stats(
    path: str | Path, source: ImageSource, stats: dict[str, GaussianStats], force: bool = False
) -> None:
    """Cache the Gaussian statistics of a source, one set per feature network."""
    arrays: dict[str, np.ndarray] = {
        "gantk_version": np.array(__version__),
        "source": np.array(source.spec),
    }
    for name, s in stats.items():
        mu, cov = s.mean_cov()
        arrays[f"{name}.mu"], arrays[f"{name}.cov"] = mu, cov
        arrays[f"{name}.count"] = np.array(s.count)
        if name == PYTORCH_FID_FEATURES:  # pytorch-fid's keys too: `python -m pytorch_fid` reads it
            arrays["mu"], arrays["sigma"] = mu, cov
    with atomic_file(path, force) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# The features pytorch-fid's `mu`/`sigma` hold: the 2048-d pool of its FID Inception, which is
# gantk's standard "inception" (docs/results.md: the two FIDs agree to 2e-5).
PYTORCH_FID_FEATURES = "inception"


def load_stats(path: str | Path) -> ImageSource:
    """A statistics file: gantk's (``NAME.mu``/``.cov``/``.count`` per feature network) or
    pytorch-fid's (``mu`` and ``sigma`` of its Inception's 2048-d pool features)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = sorted({k.split(".")[0] for k in data.files if k.endswith(".mu")})
            stats = {
                name: GaussianStats.from_mean_cov(
                    data[f"{name}.mu"], data[f"{name}.cov"], int(data[f"{name}.count"])
                )
                for name in names
            }
            if not stats and {"mu", "sigma"} <= set(data.files):
                stats = {PYTORCH_FID_FEATURES: _pytorch_fid_stats(path, data)}
    except (OSError, ValueError, KeyError) as exc:
        raise GantkError(
            f"{path} is not a gantk statistics file ({exc}); write one with "
            "`gantk evaluate fid DATA --save-stats FILE.npz`"
        ) from None
    if not stats:
        raise GantkError(f"{path} holds no feature statistics")
    count = next(iter(stats.values())).count
    return ImageSource(str(path), "stats", count, None, stats=stats)
