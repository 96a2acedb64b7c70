"""What ``--strength auto`` costs: fingerprint-embed of N photos at 768 px, auto against a fixed
strength, the same command otherwise, whole processes, interleaved repeats.

    python bench/fingerprint_strength.py --count 200 [--folder PHOTOS] [--repeat 2]

Photos: those of --folder (any sizes; each resized to 768 px on its long side, then flipped and
shifted copies until there are --count), else the six built-in photos (scikit-image and
scikit-learn samples, upscaled: smoother than real 768 px photos, so auto finds them easy).
The table gives each mode's median wall time, the ratio auto / fixed (target: at most 2), and
the strengths and PSNR auto chose. Results go to OUT/fingerprint_strength.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LONG_SIDE = 768


def photos(folder: Path | None) -> list[np.ndarray]:
    if folder is not None:
        from gantk.io.images import list_images, load_rgb

        return [load_rgb(p) for p in list_images(folder)]
    from gantk.io.builtin.crops import PHOTO_SOURCES

    return [load() for load in PHOTO_SOURCES.values()]


def make_set(sources: list[np.ndarray], count: int, out: Path) -> None:
    """``count`` 768 px images: each source resized, then mirrored and shifted variants."""
    out.mkdir(parents=True)
    resized = []
    for arr in sources:
        image = Image.fromarray(arr)
        scale = LONG_SIDE / max(image.size)
        size = (round(image.size[0] * scale), round(image.size[1] * scale))
        resized.append(np.asarray(image.resize(size, Image.Resampling.LANCZOS)))
    for i in range(count):
        arr = resized[i % len(resized)]
        variant = i // len(resized)
        if variant % 2:
            arr = arr[:, ::-1]
        shift = (variant // 2) * 17
        arr = np.roll(arr, (shift, 2 * shift), axis=(0, 1))
        Image.fromarray(np.ascontiguousarray(arr)).save(out / f"{i:04d}.png")


def run(images: Path, out: Path, strength: str) -> float:
    cmd = [sys.executable, "-m", "gantk", "fingerprint-embed", str(images), "--out", str(out),
           "--seed", "1", "--strength", strength, "--force", "--quiet", "--json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{strength}: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fixed", default="1")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "photos"
        make_set(photos(args.folder), args.count, images)
        times: dict[str, list[float]] = {"fixed": [], "auto": []}
        for _ in range(args.repeat):
            for mode, strength in (("fixed", args.fixed), ("auto", "auto")):
                times[mode].append(run(images, Path(tmp) / mode, strength))
        record = json.loads((Path(tmp) / "auto" / "fingerprint.json").read_text())
    fixed, auto = statistics.median(times["fixed"]), statistics.median(times["auto"])
    result = {"count": args.count, "folder": str(args.folder or "builtin photos"),
              "fixed_strength": args.fixed, "seconds": times, "ratio_auto_fixed": auto / fixed,
              "auto_strength": record["strength"], "auto_psnr_db": record["psnr_db"],
              "flagged": len(record["flagged"]), "machine": platform.machine()}  # fmt: skip
    (args.out / "fingerprint_strength.json").write_text(json.dumps(result, indent=2))
    chosen, quality = record["strength"]["mean"], record["psnr_db"]["mean"]
    print(f"{args.count} photos at {LONG_SIDE} px: fixed {fixed:.1f} s, auto {auto:.1f} s, "
          f"ratio {auto / fixed:.2f}; auto strength mean {chosen:.2f}, PSNR mean "
          f"{quality:.2f} dB, flagged {len(record['flagged'])}")  # fmt: skip


if __name__ == "__main__":
    main()
