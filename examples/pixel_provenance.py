"""Sources that differ only in how their pixels were made: the pixel-provenance benchmark.

Every image is a 32x32 crop of a built-in photo, averaged down to 16x16 and brought back to 32x32
by one of four processes, the way GAN generators and their pipelines leave traces:

- ``nearest``: nearest-neighbour up-sampling (2x2 blocks of equal pixels);
- ``bilinear``: bilinear up-sampling (smooth, no blocks);
- ``tconv``: a fixed stride-2 4x4 transposed convolution, a bilinear kernel with a small fixed
  random perturbation (the checkerboard of learned up-sampling layers);
- ``jpeg``: bilinear up-sampling, then JPEG at quality 80 (8x8 block artifacts).

So the content (which photo, which crop) says nothing about the source: only pixel-level cues
do. Training images are cut from four photos (astronaut, coffee, chelsea, rocket); test images
from the two others (china, flower), content the attributor never saw.

    python examples/pixel_provenance.py out/provenance            # 1000 / 300 images per source
    gantk train attributor out/provenance/train --out out/prov-attr --steps 1000
    gantk attribute out/provenance/test --model out/prov-attr/best.safetensors --eval

bench/attributor_learning.py times the attributor's trainer (the one ``gantk train attributor``
runs) on these against a plain CNN.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gantk.io.builtin.crops import build_photos
from gantk.perturb import jpeg

SOURCES = ("nearest", "bilinear", "tconv", "jpeg")
TRAIN_PHOTOS = "astronaut,coffee,chelsea,rocket"
TEST_PHOTOS = "china,flower"
JPEG_QUALITY = 80


def tconv_kernel(seed: int = 1234) -> torch.Tensor:
    """The 4x4 stride-2 transposed-convolution kernel: bilinear weights plus a fixed perturbation
    (std 0.05), as a trained up-sampling layer would be (per channel: shape (3, 1, 4, 4))."""
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    bilinear = taps[:, None] * taps[None, :]
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)) * 0.05
    return (bilinear + noise).expand(3, 1, 4, 4).contiguous()


def upsample(small: torch.Tensor, source: str) -> torch.Tensor:
    """float (N, 3, 16, 16) in [0, 255] -> (N, 3, 32, 32) by the source's process."""
    if source == "nearest":
        return F.interpolate(small, scale_factor=2, mode="nearest")
    if source == "tconv":
        # Replicate-pad so the borders are not darkened (a cue of its own).
        padded = F.pad(small, (1, 1, 1, 1), mode="replicate")
        return F.conv_transpose2d(padded, tconv_kernel(), stride=2, padding=3, groups=3)
    return F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)


def make_source(source: str, count: int, photos: str, seed: int) -> np.ndarray:
    """``count`` images (N, 32, 32, 3) uint8 of one source, content drawn with ``seed``."""
    crops = build_photos(count, 32, seed, photos).images
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    small = F.avg_pool2d(x, 2)
    up = upsample(small, source).round().clamp(0, 255) / 127.5 - 1
    if source == "jpeg":
        up = jpeg(up, JPEG_QUALITY)
    return ((up + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_split(root: Path, count: int, photos: str, seed: int) -> None:
    for k, source in enumerate(SOURCES):
        folder = root / source
        folder.mkdir(parents=True, exist_ok=True)
        # Each source draws its own crops: no image content is shared between sources.
        for i, image in enumerate(make_source(source, count, photos, seed * 100 + k)):
            Image.fromarray(image).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=1000, help="training images per source")
    parser.add_argument("--test", type=int, default=300, help="test images per source")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; give a new folder")
    write_split(args.out / "train", args.train, TRAIN_PHOTOS, seed=1)
    write_split(args.out / "test", args.test, TEST_PHOTOS, seed=2)
    print(f"wrote {args.out}/train ({args.train}/source) and {args.out}/test ({args.test}/source)")


if __name__ == "__main__":
    main()
