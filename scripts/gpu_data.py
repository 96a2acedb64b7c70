"""A subset of the bundled models' training data small enough for the device tool to carry
(64 MiB in all with the working tree), for `make gpu-check`'s models step.

    python scripts/gpu_data.py [SRC] [DEST] [--mib 40]      # default data/training -> gpu-data

SRC is what `make training-data` built. DEST gets stego-train-128.h5 (the first crops of SRC's
pack, which are already in random order: 70 % of the budget) and texture-train/ (whole texture
files in sorted-hash order until the remaining 30 %). Carry it with `carry: ["gpu-data", ...]` and
run `DATA=gpu-data make gpu-check`. A subset is fine for the minutes a GPU session continues the
runs; the full sets stay the ones the shipped models are scored and trained on here.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

from gantk.io.dataset_base import ArrayDataset
from gantk.io.packs import write_pack

CROP_BYTES = 128 * 128 * 3  # the canvases of the native design (2x2 tiles of 64 px)


def stego_subset(src: Path, dest: Path, budget: int) -> int:
    import h5py

    with h5py.File(src, "r") as f:
        count = min(len(f["images"]), budget // CROP_BYTES)
        images = np.asarray(f["images"][:count])
    write_pack(ArrayDataset(images, "stego-train-128-subset"), dest, force=True)
    return count


def texture_subset(src: Path, dest: Path, budget: int) -> int:
    files = sorted(src.iterdir(), key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    dest.mkdir(parents=True, exist_ok=True)
    used = copied = 0
    for path in files:
        size = path.stat().st_size
        if used + size > budget:
            continue
        shutil.copyfile(path, dest / path.name)
        used += size
        copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, default=Path("data/training"))
    parser.add_argument("dest", nargs="?", type=Path, default=Path("gpu-data"))
    parser.add_argument("--mib", type=float, default=40.0)
    args = parser.parse_args()
    budget = int(args.mib * 2**20)
    pack, textures = args.src / "stego-train-128.h5", args.src / "texture-train"
    if not pack.is_file() and not textures.is_dir():
        sys.exit(f"{args.src} has no stego-train-128.h5 or texture-train/: make training-data")
    args.dest.mkdir(parents=True, exist_ok=True)
    if pack.is_file():
        n = stego_subset(pack, args.dest / "stego-train-128.h5", int(budget * 0.7))
        print(f"{args.dest}/stego-train-128.h5: {n} crops")
    if textures.is_dir():
        n = texture_subset(textures, args.dest / "texture-train", int(budget * 0.3))
        print(f"{args.dest}/texture-train: {n} textures")


if __name__ == "__main__":
    main()
