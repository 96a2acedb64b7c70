"""Reading, converting, resizing and writing images.

Whatever comes in (grayscale, palette, RGBA, 16-bit, rotated by EXIF) leaves as an RGB uint8
array of shape (H, W, 3); everything downstream may assume that one format.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps

from gantk.errors import GantkError

if TYPE_CHECKING:
    import torch

# BT.601 luma weights of R, G, B: what "luminance" means across gantk.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
ResizePolicy = Literal["center-crop", "stretch", "pad"]
RESIZE_POLICIES: tuple[str, ...] = ("center-crop", "stretch", "pad")


class UnreadableImage(Exception):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (recursive, case-insensitive extensions), sorted."""
    root = Path(root)
    if not root.exists():
        raise GantkError(
            f"{root} does not exist; give a folder of images, an .h5 pack or builtin:NAME"
        )
    if root.is_file():
        if is_image_file(root):
            return [root]
        raise GantkError(f"{root} is not an image, folder, .h5 pack or builtin: dataset")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        anything = any(p.is_file() for p in root.rglob("*"))
        what = "only non-image files" if anything else "no files"
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise GantkError(f"{root} holds {what}; put images ({exts}) in it")
    return files


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image to an RGB uint8 array (H, W, 3)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (and 32-bit integer) grayscale: keep the top 8 bits of the 16-bit range.
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        gray = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite transparent pixels onto white, the way viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation without decoding pixels: PIL's getexif() on a PNG loads the whole
    image to look for a late eXIf chunk, so for PNG only an eXIf chunk before the pixel data
    (already parsed into ``info``) is consulted."""
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(0x0112, 1))
    return int(img.getexif().get(0x0112, 1))


# Decoded pixels gantk accepts in one image: Pillow's own bomb limit (~89 M pixels, 0.27 GB as
# RGB). Pillow only warns between 1x and 2x its limit; gantk refuses from 1x, before decoding.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Image.open with one failure type: a file that cannot be decoded, or whose header claims
    more than MAX_PIXELS (a decompression bomb or a damaged header), raises UnreadableImage."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the command forever
            raise UnreadableImage(f"{path}: not a regular file (a pipe or device)")
        with warnings.catch_warnings():  # Pillow's warning for 1x-2x its limit: refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UnreadableImage(
                    f"{path}: its header claims {width}x{height} pixels, more than the "
                    f"{MAX_PIXELS} gantk decodes (a decompression bomb or a damaged file)"
                )
            yield img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, reading only the header."""
    with open_image(path) as img:
        width, height = img.size
        orientation = exif_orientation(img)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file fully into an RGB uint8 array, applying EXIF orientation."""
    with open_image(path) as img:
        img.load()
        return to_rgb_array(ImageOps.exif_transpose(img))


# ------------------------------------------------------------------------------------------
# 16-bit colour PNGs: Pillow decodes them to 8 bits per channel (and cannot write them), so
# gantk reads them with libpng (torchvision's decoder) and writes them itself.

DEEP_PNG_RAWMODES = ("RGB;16B", "RGBA;16B")


def is_deep_color_png(img: Image.Image) -> bool:
    """Whether an opened (not yet loaded) image is a PNG with 16 bits per colour channel."""
    tile = getattr(img, "tile", None) or []
    return img.format == "PNG" and bool(tile) and tile[0].args in DEEP_PNG_RAWMODES


def read_deep_png(path: str | Path) -> np.ndarray:
    """A 16-bit RGB(A) PNG as uint16 (H, W, 3|4), as stored (no orientation applied)."""
    import torch

    with warnings.catch_warnings():  # torchvision 0.29 announces TorchCodec as the successor
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_png

        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        try:
            pixels = decode_png(data, ImageReadMode.UNCHANGED)
        except RuntimeError as exc:
            raise UnreadableImage(f"{path}: {exc}") from exc
    return pixels.permute(1, 2, 0).numpy().astype(np.uint16)


def save_deep_png(pixels: np.ndarray, path: str | Path, level: int = 6) -> None:
    """Write uint16 (H, W, 3|4) pixels as a 16-bit RGB(A) PNG (every row Sub-filtered)."""
    import struct
    import zlib

    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, -1)
    step = 2 * channels  # bytes per pixel: the Sub filter subtracts the pixel to the left
    filtered = rows.copy()
    filtered[:, step:] = rows[:, step:] - rows[:, :-step]  # modulo 256, as PNG wants
    body = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(body.tobytes(), level)) + chunk(b"IEND", b""))


# Orientation tag value -> the numpy view showing the image upright (PIL's exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, …) turned as an EXIF orientation tag says, as viewers show them."""
    turn = _UPRIGHT.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def upscale_factor(height: int, width: int, resolution: int, policy: ResizePolicy) -> float:
    """How much a (height, width) image must be enlarged to fill ``resolution`` under ``policy``."""
    if policy == "center-crop":
        return resolution / min(height, width)
    if policy == "stretch":
        return resolution / min(height, width)
    return resolution / max(height, width)


def fit_image(arr: np.ndarray, resolution: int, policy: ResizePolicy = "center-crop") -> np.ndarray:
    """Resize an RGB array to a square ``resolution`` image.

    center-crop: scale the short side to ``resolution``, keep the centre square.
    stretch:     scale each side independently (aspect ratio changes).
    pad:         scale the long side to ``resolution``, pad the rest with black.
    """
    height, width = arr.shape[:2]
    if (height, width) == (resolution, resolution):
        return arr
    img = Image.fromarray(arr)
    if policy == "stretch":
        return np.array(img.resize((resolution, resolution), Image.Resampling.LANCZOS))
    if policy == "center-crop":
        scale = resolution / min(height, width)
        new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
        img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
        left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
        return np.array(img.crop((left, top, left + resolution, top + resolution)))
    if policy == "pad":
        scale = resolution / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = Image.new("RGB", (resolution, resolution))
        canvas.paste(
            img.resize((new_w, new_h), Image.Resampling.LANCZOS),
            ((resolution - new_w) // 2, (resolution - new_h) // 2),
        )
        return np.array(canvas)
    raise GantkError(f"unknown resize policy {policy!r}; use one of {', '.join(RESIZE_POLICIES)}")


def check_resolution(resolution: int, low: int = 4, high: int = 4096) -> int:
    """A square resolution must be a power of two within [low, high]."""
    if resolution < low or resolution > high or resolution & (resolution - 1):
        raise GantkError(
            f"--resolution {resolution} is not a power of two between {low} and {high}; "
            "use e.g. 32, 64, 128 or 256"
        )
    return resolution


def save_image(arr: np.ndarray, path: str | Path, named_as: str | Path | None = None) -> None:
    """Write an RGB uint8 array; the format follows the extension of ``named_as`` (default:
    ``path``; PNG if unknown), so a temporary file can be written in its final format."""
    path = Path(path)
    suffix = Path(named_as if named_as is not None else path).suffix.lower()
    fmt = {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".webp": "WEBP",
        ".bmp": "BMP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
    }.get(suffix, "PNG")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format=fmt, **options)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float) -> None:
    """RGB uint8 frames as an endlessly looping animated GIF."""
    pil = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    pil[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=pil[1:],
        duration=round(1000 / fps),
        loop=0,
    )


def make_grid(images: Iterable[np.ndarray], cols: int, padding: int = 2) -> np.ndarray:
    """Tile equally sized RGB arrays into one image, row by row, on a white background."""
    images = list(images)
    if not images:
        raise GantkError("no images to put in a grid")
    height, width = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    grid = np.full(
        (rows * (height + padding) + padding, cols * (width + padding) + padding, 3),
        255,
        dtype=np.uint8,
    )
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = padding + r * (height + padding), padding + c * (width + padding)
        grid[y : y + height, x : x + width] = img
    return grid


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3)."""
    import torch  # lazily: reading and writing images needs no torch

    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
