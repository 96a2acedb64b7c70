"""h5 packs: a dataset in one HDF5 file, written streaming so memory stays flat.

Layout: ``images`` uint8 (N, R, R, 3), one chunk per image so random access reads one image;
optional ``labels`` int64 (N,) with a JSON ``class_names`` attribute; optional ``attributes``
uint8 (N, K) with a JSON ``names`` attribute; ``filenames`` (N,) strings; root attributes
``gantk.kind = "dataset"`` and ``gantk.version``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file
from gantk.io.datasets import ImageDataset, Warn, iter_readable, print_warning
from gantk.io.limits import check_disk

# Images are appended in blocks of at most BLOCK images and BLOCK_BYTES bytes: memory is
# bounded by one block, whatever the size of the dataset.
BLOCK = 256
BLOCK_BYTES = 16 * 2**20


@dataclass
class PackResult:
    path: str
    written: int
    skipped: list[str]
    resolution: int


def check_space(out: str | Path, needed: int) -> None:
    """Refuse before writing when the pack cannot fit: HDF5 reports a full disk late, as a
    failed close, and may bring the interpreter down with it (a segfault in h5py's clean-up)."""
    needed += needed // 50 + (1 << 20)  # chunk index, labels, attributes, HDF5 headers
    check_disk(out, needed, str(out), "free space or pack elsewhere")


def write_pack(
    dataset: ImageDataset,
    out: str | Path,
    with_labels: bool = True,
    strict: bool = False,
    force: bool = False,
    warn: Warn = print_warning,
    advance: Callable[[int], None] | None = None,
) -> PackResult:
    """Write ``dataset`` (already fitted to one resolution) into an h5 pack at ``out``.

    Corrupt images are skipped with a warning naming the file, or stop the pack with ``strict``.
    The pack appears at ``out`` only when complete.
    """
    import h5py

    resolution = dataset.resolution
    if resolution is None:
        raise GantkError("a pack needs one resolution; pass --resolution")
    check_space(out, len(dataset) * resolution * resolution * 3)
    names = dataset.filenames or [f"{i:06d}" for i in range(len(dataset))]
    skipped: list[str] = list(dataset.skipped)
    kept: list[int] = []
    with atomic_file(out, force) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["gantk.kind"] = "dataset"
        f.attrs["gantk.version"] = __version__
        images = f.create_dataset(
            "images",
            shape=(0, resolution, resolution, 3),
            maxshape=(None, resolution, resolution, 3),
            dtype=np.uint8,
            chunks=(1, resolution, resolution, 3),
        )
        capacity = max(1, min(BLOCK, BLOCK_BYTES // (resolution * resolution * 3)))
        block = np.empty((capacity, resolution, resolution, 3), dtype=np.uint8)
        filled = 0

        def flush() -> None:
            nonlocal filled
            if filled:
                start = images.shape[0]
                images.resize(start + filled, axis=0)
                images[start:] = block[:filled]
                filled = 0

        for i, arr in iter_readable(dataset, names, skipped, strict, warn, advance):
            if arr.shape != (resolution, resolution, 3):
                raise GantkError(f"image {names[i]} has shape {arr.shape}, expected {resolution}px")
            block[filled] = arr
            filled += 1
            kept.append(i)
            if filled == capacity:
                flush()
        flush()
        if not kept:
            raise GantkError(f"no image of {dataset.name} could be decoded; nothing to pack")
        idx = np.asarray(kept)
        if with_labels and dataset.class_names is not None:
            labels = f.create_dataset("labels", data=dataset.labels[idx])
            labels.attrs["class_names"] = json.dumps(dataset.class_names)
        if dataset.attributes is not None:
            attrs = f.create_dataset("attributes", data=dataset.attributes[idx])
            attrs.attrs["names"] = json.dumps(dataset.attribute_names)
        f.create_dataset(
            "filenames",
            data=np.array([names[i] for i in kept], dtype=object),
            dtype=h5py.string_dtype(),
        )
    return PackResult(str(out), len(kept), skipped, resolution)
