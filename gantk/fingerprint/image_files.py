"""Fingerprinted images as files: read in their own mode, written back in it.

Each image keeps its mode and bit depth: grayscale stays grayscale (the fingerprint is embedded
in RGB and the result converted back), alpha channels are kept untouched, 16-bit grayscale and
16-bit colour PNGs stay 16-bit (the fingerprint's change, made on the top 8 bits, is added to
the 16-bit values, so the low bits survive). Pixels are embedded as shown: turned upright by
their EXIF orientation. Palette images are written as RGB (or RGBA) and 1-bit ones as 8-bit
grayscale: neither can hold a fingerprint's small changes. CMYK, floating-point, 32-bit and
animated images are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from gantk.errors import GantkError
from gantk.io.images import (
    UnreadableImage,
    exif_orientation,
    is_deep_color_png,
    open_image,
    read_deep_png,
    save_deep_png,
    upright,
)

MIN_SIDE = 16


@dataclass
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 uint8: what the encoder and the decoder see
    # the mode the fingerprinted copy is saved in: RGB, RGBA, L, LA, I;16, or RGB;16 / RGBA;16
    # (16-bit colour PNGs, which Pillow cannot hold)
    mode: str
    alpha: np.ndarray | None
    deep: np.ndarray | None = None  # the 16-bit values of an I;16, RGB;16 or RGBA;16 image


@dataclass
class DeepColor:
    """A fingerprinted 16-bit colour image: uint16 (H, W, 3|4), written by save_deep_png."""

    pixels: np.ndarray


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
Warn = Callable[[str], None]


def _gray(img: Image.Image) -> np.ndarray:
    return np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)


def _eight_of(deep: np.ndarray) -> np.ndarray:
    """16-bit values as the 8-bit ones the networks see (the top 8 bits, rounded)."""
    return np.clip(np.round(deep / 257.0), 0, 255).astype(np.uint8)


def load_image(path: Path) -> LoadedImage:
    """Read an image for embedding or decoding; raises UnreadableImage if it cannot be decoded,
    GantkError for a mode whose pixels cannot carry a fingerprint and come back unchanged, and
    for an animated image (which one frame would not stand for).

    The pixels are turned upright as the EXIF orientation says (a phone photo stored sideways
    is embedded, decoded and written as it is shown, without the tag); 16-bit colour PNGs keep
    their 16 bits (read by libpng: Pillow decodes them to 8)."""
    with open_image(path) as img:
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            raise GantkError(
                f"{path} is an animated image ({frames} frames); a fingerprint in one frame "
                "would not stand for the others: save the frame you want as a still image"
            )
        orientation = exif_orientation(img)
        if is_deep_color_png(img):
            deep = upright(read_deep_png(path), orientation)
            mode = "RGBA;16" if deep.shape[2] == 4 else "RGB;16"
            return LoadedImage(_eight_of(deep[..., :3]), mode, None, deep)
        img.load()
        img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode in SIXTEEN_BIT or mode == "I":
            deep = np.asarray(img, dtype=np.int64)
            if mode == "I" and (deep.min(initial=0) < 0 or deep.max(initial=0) > 65535):
                raise GantkError(
                    f"{path} holds 32-bit integer pixels; convert it to 8- or 16-bit first"
                )
            return LoadedImage(np.repeat(_eight_of(deep)[..., None], 3, axis=2), "I;16", None, deep)
        if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = np.asarray(img.convert("RGBA"))
            return LoadedImage(np.ascontiguousarray(rgba[..., :3]), "RGBA", rgba[..., 3])
        if mode == "LA":
            la = np.asarray(img)
            return LoadedImage(_gray(img.convert("L")), "LA", np.ascontiguousarray(la[..., 1]))
        if mode in ("L", "1"):
            return LoadedImage(_gray(img), "L", None)
        if mode in ("RGB", "P"):
            return LoadedImage(np.asarray(img.convert("RGB")), "RGB", None)
    raise GantkError(
        f"{path} is a {mode} image; fingerprint-embed keeps each image's mode and cannot for "
        "this one: convert it to RGB (or 8/16-bit grayscale) first"
    )


def load_or_stop(path: Path) -> LoadedImage:
    """load_image for measurements, which a skipped image would bias: stop, naming the file."""
    try:
        return load_image(path)
    except UnreadableImage as exc:
        raise GantkError(f"cannot read image {exc}; remove or replace it") from exc


def load_readable(
    paths: list[Path], root: Path | None, skipped: list[str], strict: bool, warn: Warn | None
) -> dict[Path, LoadedImage]:
    """The images of ``paths`` that decode; each one that does not is warned about (by its path
    relative to ``root``) and added to ``skipped``, or stops everything with ``strict``."""
    loaded = {}
    for path in paths:
        try:
            loaded[path] = load_image(path)
        except UnreadableImage as exc:
            if strict:
                raise GantkError(
                    f"cannot read image {exc}; remove or replace it (or drop --strict to skip it)"
                ) from exc
            name = path.name if root is None or path == root else path.relative_to(root).as_posix()
            if warn is not None:
                warn(f"skipping unreadable image {name}")
            skipped.append(name)
    return loaded


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_rgb(t: torch.Tensor) -> np.ndarray:
    return ((t[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def restore_mode(rgb: np.ndarray, loaded: LoadedImage) -> Image.Image | DeepColor:
    if loaded.mode in ("RGB;16", "RGBA;16"):
        # As for I;16: the change in 8-bit steps, scaled to 16 bits, added to the original
        # colour channels (alpha untouched), so the low bits survive.
        assert loaded.deep is not None
        change = rgb.astype(np.int64) - loaded.rgb
        deep = loaded.deep.astype(np.int64)
        deep[..., :3] = np.clip(deep[..., :3] + change * 257, 0, 65535)
        return DeepColor(deep.astype(np.uint16))
    img = Image.fromarray(rgb, "RGB")
    if loaded.mode == "I;16":
        # The fingerprint's change in 8-bit steps, scaled to 16 bits and added to the original.
        change = np.asarray(img.convert("L"), dtype=np.int64) - loaded.rgb[..., 0]
        deep = np.clip(loaded.deep + change * 257, 0, 65535).astype(np.uint16)
        return Image.fromarray(deep)  # mode I;16
    if loaded.mode in ("L", "LA"):
        img = img.convert("L")
    if loaded.mode in ("RGBA", "LA"):
        img.putalpha(Image.fromarray(loaded.alpha, "L"))
    return img


def check_size(path: Path, rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise GantkError(
            f"{path} is {width}x{height}; fingerprints need images of at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels (remove it or upscale it first)"
        )


def eight_bit(image: Image.Image | DeepColor) -> Image.Image:
    """A 16-bit image as the 8-bit one the decoder sees (Pillow's convert clips instead)."""
    if isinstance(image, DeepColor):
        pixels = _eight_of(image.pixels)
        return Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    if image.mode != "I;16":
        return image
    return Image.fromarray(_eight_of(np.asarray(image, dtype=np.float64)), "L")


def write_in_mode(
    rgb: np.ndarray, loaded: LoadedImage, target: Path, image_format: str, quality: int
) -> np.ndarray:
    """Save in the input's mode; returns the RGB pixels as saved (what PSNR/SSIM must see)."""
    image = restore_mode(rgb, loaded)
    target.parent.mkdir(parents=True, exist_ok=True)
    if image_format == "jpeg":  # 8 bits and no alpha: the format the user asked for
        flat = eight_bit(image)
        flat.convert("L" if flat.mode in ("L", "LA") else "RGB").save(target, quality=quality)
        return np.asarray(Image.open(target).convert("RGB"))
    # zlib level 3 instead of Pillow's 6: half the encoding time (3.6 vs 6.9 ms for a 128 px
    # photo) for files ~7 % larger; the pixels are the same either way.
    if isinstance(image, DeepColor):
        save_deep_png(image.pixels, target, level=3)
    else:
        image.save(target, compress_level=3)
    # PNG is lossless: the saved pixels are the image's own.
    return np.asarray(eight_bit(image).convert("RGB"))
