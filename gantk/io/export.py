"""Writing a dataset out as image files, and sample grids of it."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gantk.errors import GantkError
from gantk.io.atomic import atomic_dir, atomic_file
from gantk.io.datasets import ImageDataset, Warn, iter_readable, print_warning
from gantk.io.images import make_grid, save_image

IMAGE_FORMATS = ("png", "jpg", "webp")


@dataclass
class ExportResult:
    out: str
    written: int
    skipped: list[str]
    by_class: bool
    attributes_csv: str | None


def export_images(
    dataset: ImageDataset,
    out: str | Path,
    fmt: str = "png",
    flat: bool = False,
    strict: bool = False,
    force: bool = False,
    warn: Warn = print_warning,
    advance: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write every image of ``dataset`` into the folder ``out``.

    Labeled datasets go into one subfolder per class (so ``gantk data pack OUT --labels`` reads
    them back) unless ``flat``; attributes go to ``OUT/attributes.csv`` keyed by relative path.
    """
    if fmt not in IMAGE_FORMATS:
        raise GantkError(f"--format {fmt!r} is not one of {', '.join(IMAGE_FORMATS)}")
    by_class = dataset.class_names is not None and not flat
    digits = max(6, len(str(len(dataset))))
    written: list[tuple[int, str]] = []
    skipped: list[str] = list(dataset.skipped)
    with atomic_dir(out, force) as tmp:
        names = dataset.filenames or [str(i) for i in range(len(dataset))]
        for i, arr in iter_readable(dataset, names, skipped, strict, warn, advance):
            name = f"{i:0{digits}d}.{fmt}"
            if by_class:
                name = f"{dataset.class_names[dataset.labels[i]]}/{name}"
                (tmp / name).parent.mkdir(exist_ok=True)
            save_image(arr, tmp / name)
            written.append((i, name))
        if not written:
            raise GantkError(f"no image of {dataset.name} could be decoded; nothing to export")
        csv_name = None
        if dataset.attributes is not None and dataset.attribute_names is not None:
            csv_name = "attributes.csv"
            with (tmp / csv_name).open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["filename", *dataset.attribute_names])
                for i, name in written:
                    writer.writerow([name, *(int(v) for v in dataset.attributes[i])])
    return ExportResult(
        str(out), len(written), skipped, by_class, str(Path(out) / csv_name) if csv_name else None
    )


def sample_indices(count: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct indices below ``count`` (all of them, in order, if there are fewer)."""
    if size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


def write_preview(
    dataset: ImageDataset,
    out: str | Path,
    rows: int = 8,
    cols: int = 8,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """A PNG grid of ``rows x cols`` images drawn at random (by ``seed``) from ``dataset``."""
    if rows < 1 or cols < 1:
        raise GantkError("--rows and --cols must be at least 1")
    picks = sample_indices(len(dataset), rows * cols, seed)
    grid = make_grid([dataset.image(int(i)) for i in picks], cols)
    with atomic_file(out, force) as tmp:
        save_image(grid, tmp, named_as=out)
    return {"out": str(out), "images": len(picks), "rows": -(-len(picks) // cols), "cols": cols}
