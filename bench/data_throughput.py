"""Data-layer throughput: how fast training can be fed from a folder of PNGs vs an h5 pack.

Reads the same images both ways through a torch DataLoader and reports images/s, with the pack's
speed as a ratio against the folder measured in the same run; also times packing and its peak
Python memory (tracemalloc), which must stay flat as the dataset grows.

    python bench/data_throughput.py --count 2000 --resolution 64 --out out/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from gantk.io.builtin import load_builtin
from gantk.io.datasets import FolderDataset, H5Dataset
from gantk.io.export import export_images
from gantk.io.packs import write_pack


def images_per_second(dataset, batch_size: int, workers: int, repeats: int = 2) -> float:
    best = 0.0
    for _ in range(repeats):
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
        )
        start = time.perf_counter()
        seen = sum(len(images) for images, _ in loader)
        best = max(best, seen / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, pack = Path(tmp) / "images", Path(tmp) / "images.h5"
        source = load_builtin("builtin:shapes", count=args.count, resolution=args.resolution)
        export_images(source, folder)
        folder_ds = FolderDataset(folder, args.resolution, labeled=True)
        tracemalloc.start()
        start = time.perf_counter()
        write_pack(folder_ds, pack)
        pack_seconds = time.perf_counter() - start
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        folder_rate = images_per_second(folder_ds, args.batch_size, args.workers)
        pack_rate = images_per_second(H5Dataset(pack), args.batch_size, args.workers)

    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "count": args.count,
        "resolution": args.resolution,
        "workers": args.workers,
        "folder_png_images_per_s": round(folder_rate, 1),
        "h5_pack_images_per_s": round(pack_rate, 1),
        "pack_vs_folder_speedup": round(pack_rate / folder_rate, 2),
        "packing_images_per_s": round(args.count / pack_seconds, 1),
        "packing_peak_python_mib": round(peak_mib, 2),
        "dataset_mib": round(args.count * args.resolution**2 * 3 / 2**20, 2),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
