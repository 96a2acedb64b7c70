"""Image sets for metrics: datasets, generators sampled on the fly, and cached statistics.

A source is given as a string: a folder, an .h5 pack or ``builtin:NAME`` (a dataset); a
``gan-generator`` checkpoint (sampled with seeds SEED…SEED+n-1, like ``gantk generate``); or an
``.npz`` file of cached feature statistics (``--save-stats``), usable where only statistics are
needed (FID).

Generators are sampled through the :class:`Sampler` interface (seeds in, uint8 batches out;
:class:`gantk.gan.sampling.GeneratorSampler` is the one gantk has), which the caller opens
(``open_generator``): this layer never imports a model package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file
from gantk.io.prefetch import prefetch
from gantk.metrics.frechet import GaussianStats, check_gaussian

DEFAULT_GENERATOR_SAMPLES = 10000


class Sampler(Protocol):
    """What a metric needs of a generator: its image size, and the uint8 (B, 3, H, W) images of
    any run of latent seeds, the same images whatever batch or part of a longer run they are
    drawn in (:class:`gantk.gan.sampling.GeneratorSampler`)."""

    @property
    def resolution(self) -> int: ...

    def batches(self, seeds: Sequence[int], batch_size: int) -> Iterator[torch.Tensor]: ...


# Opens a generator checkpoint as a Sampler: (path, device, truncation) -> Sampler
# (gantk.gan.generate.open_sampler).
OpenGenerator = Callable[[str, str, float], Sampler]


@dataclass
class ImageSource:
    spec: str
    kind: str  # "dataset", "generator" or "stats"
    count: int
    resolution: int | None
    dataset: object = None
    sampler: Sampler | None = None
    seed: int = 0  # the first latent seed of a generator's images
    stats: dict[str, GaussianStats] = field(default_factory=dict)

    def batches(
        self, batch_size: int, workers: int = 0, part: range | None = None
    ) -> Iterator[torch.Tensor]:
        """uint8 (B, 3, H, W) batches, in a fixed order; ``part``: only those batches (of
        ``batch_count``), the same images a whole pass gives them (a shard's or a process's
        share, gantk.nn.distributed)."""
        first, stop = self.items(batch_size, part)
        if self.kind == "stats":
            raise GantkError(f"{self.spec} holds statistics only; this metric needs images")
        if self.kind == "generator":
            assert self.sampler is not None
            yield from self.sampler.batches(range(self.seed, self.seed + self.count)[first:stop],
                                            batch_size)  # fmt: skip
            return
        dataset = self.dataset
        if (first, stop) != (0, self.count):
            dataset = torch.utils.data.Subset(dataset, range(first, stop))  # type: ignore[arg-type]
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, shuffle=False
        )
        batches = (images for images, _ in loader)
        # Without worker processes, a reader thread decodes the next batch during the forward.
        yield from (prefetch(batches) if workers == 0 else batches)

    def batch_count(self, batch_size: int) -> int:
        return -(-self.count // batch_size)

    def items(self, batch_size: int, part: range | None = None) -> tuple[int, int]:
        """The images (first, stop) of the batches ``part`` (all by default)."""
        if part is None:
            return 0, self.count
        return min(part.start * batch_size, self.count), min(part.stop * batch_size, self.count)


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
    open_generator: OpenGenerator | None = None,
) -> ImageSource:
    """A set to measure: cached statistics, a generator (a ``.safetensors`` checkpoint, opened
    by ``open_generator``), or a dataset (with ``subset``, only its images having any of those
    attributes, e.g. a minority group)."""
    text = str(spec)
    if text.lower().endswith(".npz"):
        return load_stats(text)
    if text.lower().endswith(".safetensors"):
        if open_generator is None:
            raise GantkError(f"{text} is a model checkpoint; give a set of images or statistics")
        sampler = open_generator(text, device, truncation)
        n = count or DEFAULT_GENERATOR_SAMPLES
        return ImageSource(text, "generator", n, sampler.resolution, sampler=sampler, seed=seed)
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
    return ImageSource(text, "dataset", len(dataset), res, dataset=dataset)


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


# Feature dimensions of each network gantk's statistics may be of (gantk.metrics.features).
FEATURE_DIMS = {"inception": 2048, "vgg16": 4096, "random-inception": 2048, "random-vgg16": 4096}
STATS_HINT = "write one with `gantk evaluate fid DATA --save-stats FILE.npz`"


def load_stats(path: str | Path) -> ImageSource:
    """A statistics file: gantk's (``NAME.mu``/``.cov``/``.count`` per feature network) or
    pytorch-fid's (``mu`` and ``sigma`` of its Inception's 2048-d pool features).

    The one reader of statistics files: a regular file, a real ``.npz`` of bounded size, each
    mean and covariance a Gaussian's (finite, real, symmetric, positive semi-definite, of the
    network's dimension: :func:`gantk.metrics.frechet.check_gaussian`), each count a whole
    number; anything else is one error naming the file and the field."""
    from gantk.io.files import read_npz, scalar_int

    data = read_npz(path, "statistics file", STATS_HINT)
    if PART_KEY in data:
        raise GantkError(
            f"{path} holds the statistics of part {data[PART_KEY]} of a set (--shard); merge "
            f"every part into one file first: {MERGE_HINT}"
        )
    names = sorted({k.rsplit(".", 1)[0] for k in data if k.endswith(".mu")})
    stats: dict[str, GaussianStats] = {}
    for name in names:
        if name not in FEATURE_DIMS:
            raise GantkError(
                f"{path} holds statistics of unknown features {name!r} (gantk knows "
                f"{', '.join(FEATURE_DIMS)}); {STATS_HINT}"
            )
        missing = [k for k in (f"{name}.cov", f"{name}.count") if k not in data]
        if missing:
            raise GantkError(f"{path} has {name}.mu but no {missing[0]}; {STATS_HINT}")
        stats[name] = _checked_stats(
            path, name, data[f"{name}.mu"], data[f"{name}.cov"],
            scalar_int(data[f"{name}.count"], f"{path}: {name}.count", fix=STATS_HINT),
        )  # fmt: skip
    if not stats and {"mu", "sigma"} <= set(data):
        stats = {PYTORCH_FID_FEATURES: _checked_stats(
            path, PYTORCH_FID_FEATURES, data["mu"], data["sigma"], 0, " (pytorch-fid's)"
        )}  # fmt: skip
    if not stats:
        raise GantkError(f"{path} holds no feature statistics; {STATS_HINT}")
    count = next(iter(stats.values())).count
    return ImageSource(str(path), "stats", count, None, stats=stats)


def _checked_stats(
    path: str | Path, name: str, mu: np.ndarray, cov: np.ndarray, count: int, whose: str = ""
) -> GaussianStats:
    stats = GaussianStats.from_mean_cov(mu, cov, count, where=f"{path} ({name}{whose})")
    want = FEATURE_DIMS[name]
    if stats.dim != want and whose:
        raise GantkError(
            f"{path} holds pytorch-fid statistics of {stats.dim}-d features (--dims "
            f"{stats.dim}); gantk's FID uses the {want}-d pool features: make them with "
            f"--dims {want}"
        )
    if stats.dim != want:
        raise GantkError(
            f"{path} holds {stats.dim}-d statistics of {name} features, which are {want}-d; "
            f"{STATS_HINT}"
        )
    return stats


# --- parts of a set's statistics (--shard K/N) ---------------------------------------------------

PART_KEY = "part_of"
MERGE_HINT = "gantk evaluate merge-stats PART.npz… --out FILE.npz"
PART_HINT = "give the files `gantk evaluate fid SET --shard K/N --save-stats` wrote"


def save_partial_stats(
    path: str | Path,
    source: ImageSource,
    stats: dict[str, GaussianStats],
    shard: str,
    items: tuple[int, int],
    job: dict,
    force: bool = False,
) -> None:
    """The sums of one part of a set's statistics (images ``items`` of ``source.count``),
    which :func:`merge_partial_stats` adds up exactly: counts, sums of features and sums of
    their outer products, never means or covariances (whose average would be wrong). ``job``
    names everything that decides the images (the set, their number, seeds, resolution…):
    parts are merged only with parts of the same job."""
    import json

    arrays: dict[str, np.ndarray] = {
        "gantk_version": np.array(__version__),
        "source": np.array(source.spec),
        PART_KEY: np.array(shard),
        "job": np.array(json.dumps(job, sort_keys=True)),
        "items": np.array([items[0], items[1], source.count]),
    }
    for name, s in stats.items():
        arrays[f"{name}.count"] = np.array(s.count)
        arrays[f"{name}.sum"], arrays[f"{name}.outer"] = s.total, s.outer
    with atomic_file(path, force) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_part(path: Path) -> tuple[str, str, tuple[int, int, int], dict[str, GaussianStats]]:
    """(source, job, (first, stop, total), sums by network) of a part file, every field checked."""
    from gantk.io.files import read_npz, scalar_int

    data = read_npz(path, "statistics part", PART_HINT)
    if PART_KEY not in data:
        whole = any(k.endswith(".mu") for k in data) or "mu" in data
        what = "holds a whole set's statistics" if whole else f"has no {PART_KEY}"
        raise GantkError(f"{path} is not a part of a set's statistics ({what}); {PART_HINT}")
    for key in ("source", "job", "items"):
        if key not in data:
            raise GantkError(f"{path} has no {key}; {PART_HINT}")
    items = np.asarray(data["items"])
    if items.shape != (3,) or items.dtype.kind not in "iu":
        raise GantkError(f"{path}: items is not three whole numbers; {PART_HINT}")
    first, stop, total = (int(v) for v in items)
    if not 0 <= first <= stop <= total:
        raise GantkError(f"{path}: images {first}..{stop} are not a part of {total}; {PART_HINT}")
    names = sorted({k.rsplit(".", 1)[0] for k in data if k.endswith(".sum")})
    if not names:
        raise GantkError(f"{path} holds no feature sums; {PART_HINT}")
    stats = {}
    for name in names:
        dim = FEATURE_DIMS.get(name)
        if dim is None:
            raise GantkError(f"{path} holds sums of unknown features {name!r}; {PART_HINT}")
        total_x = np.asarray(data[f"{name}.sum"])
        outer = np.asarray(data.get(f"{name}.outer"))
        count = scalar_int(data.get(f"{name}.count"), f"{path}: {name}.count", fix=PART_HINT)
        if total_x.shape != (dim,) or outer.shape != (dim, dim) or count != stop - first:
            raise GantkError(
                f"{path}: the {name} sums are not those of {stop - first} {dim}-d features; "
                f"{PART_HINT}"
            )
        if (
            total_x.dtype.kind != "f"
            or outer.dtype.kind != "f"
            or not (np.isfinite(total_x).all() and np.isfinite(outer).all())
        ):
            raise GantkError(f"{path}: the {name} sums are not finite numbers; {PART_HINT}")
        stats[name] = GaussianStats(dim, count, total_x.astype(np.float64),
                                    outer.astype(np.float64))  # fmt: skip
    return str(data["source"]), str(data["job"]), (first, stop, total), stats


def merge_partial_stats(paths: Sequence[str | Path]) -> tuple[str, int, dict[str, GaussianStats]]:
    """The statistics of a whole set from the parts its shards wrote: (source, images, stats).
    The parts must be of one job (same set, images, seeds, batch size, feature networks) and
    cover its images exactly once: a missing, repeated or foreign part is an error."""
    from gantk.nn.distributed import check_parts

    if not paths:
        raise GantkError(f"give the part files to merge; {PART_HINT}")
    parts = [(Path(p), *_read_part(Path(p))) for p in paths]
    first_path, source, job, (_, _, total), first_stats = parts[0]
    for path, other_source, other_job, (_, _, other_total), stats in parts[1:]:
        if other_job != job or other_total != total:
            raise GantkError(
                f"{path} is a part of another job than {first_path} ({other_source} vs "
                f"{source}: another set, number of images, seed, resolution or batch size); "
                "merge the parts of one job"
            )
        if stats.keys() != first_stats.keys():
            raise GantkError(
                f"{path} holds sums of {', '.join(stats)} features, {first_path} of "
                f"{', '.join(first_stats)}; merge parts computed with the same --features"
            )
    check_parts([(str(p[0]), p[3][0], p[3][1]) for p in parts], total, "parts")
    merged = {name: GaussianStats(s.dim) for name, s in first_stats.items()}
    for *_, stats in parts:
        for name, s in stats.items():
            merged[name].add(s)
    for name, s in merged.items():
        if s.count < 2:
            raise GantkError(f"the parts hold {s.count} image; statistics need at least 2")
        check_gaussian(*s.mean_cov(), f"the merged {name} statistics")
    return source, total, merged
