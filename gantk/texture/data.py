"""Training data for the Texture Mixer: whole texture images and endless augmented crops.

A texture source is one photo of arbitrary size (the thesis uses >= 512 px). Training samples
are cut from it on the fly, as in the thesis: colour histogram matching against another source,
random mirroring, in-plane rotation and downscaling (up to 4x), then a crop of the model's size.
Every augmentation works on a window only somewhat larger than the crop, so sampling stays cheap
however large the source photos are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch
from PIL import Image

from gantk.errors import GantkError
from gantk.io.images import UnreadableImage, is_image_file, list_images, load_rgb

SPLITS = ("train", "test", "all")
# Fraction of every image's rows (from the top) that belongs to the training split; the rest
# is the test split, so held-out evaluation uses the same textures without overlapping pixels.
TRAIN_FRACTION = 0.75
# Extra pixels around a rotated window: bilinear rotation blends the pixels next to the
# window's edge with the fill colour, and this keeps them out of the crop.
_ROTATION_MARGIN = 4


@dataclass
class TextureSource:
    """One texture image."""

    name: str  # file stem or builtin name
    image: np.ndarray  # H x W x 3 uint8 RGB


def _builtin_tables() -> tuple[
    dict[str, dict[str, Callable[[], np.ndarray]]], dict[str, Callable[[], np.ndarray]]
]:
    """(groups, single sources) addressable as builtin:GROUP and builtin:NAME."""
    # Imported lazily: the crops module pulls in the dataset machinery.
    from gantk.io.builtin.crops import PHOTO_SOURCES, TEXTURE_SOURCES

    groups = {"textures": TEXTURE_SOURCES, "photos": PHOTO_SOURCES}
    return groups, {**TEXTURE_SOURCES, **PHOTO_SOURCES}


def _valid_builtins() -> str:
    groups, singles = _builtin_tables()
    return ", ".join(f"builtin:{n}" for n in [*groups, *singles])


def _load_builtin(spec: str, allow_group: bool) -> list[TextureSource]:
    from gantk.io.builtin.crops import select_sources

    groups, singles = _builtin_tables()
    name, _, query = spec.removeprefix("builtin:").partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if name in groups:
        if not allow_group:
            raise GantkError(
                f"{spec} holds several textures; name one, e.g. "
                + ", ".join(f"builtin:{n}" for n in groups[name])
            )
        unknown = sorted(set(options) - {"sources"})
        if unknown:
            raise GantkError(f"builtin:{name} has no option {unknown[0]!r}; it takes sources")
        chosen = select_sources(groups[name], options.get("sources"), name)
        return [TextureSource(n, load()) for n, load in chosen.items()]
    if name in singles:
        if options:
            raise GantkError(f"builtin:{name} takes no options; drop {'?' + query!r}")
        return [TextureSource(name, singles[name]())]
    raise GantkError(f"unknown texture builtin:{name}; valid ones are {_valid_builtins()}")


def _read(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except UnreadableImage as exc:
        raise GantkError(f"cannot read texture image {exc}; remove or replace it") from exc


def _load_path(spec: str) -> list[TextureSource]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise GantkError(
            f"{path} does not exist; give a texture image, a folder of textures or builtin:textures"
        )
    if path.is_file() and not is_image_file(path):
        raise GantkError(f"{path} is not an image; give a texture image or a folder of them")
    # list_images is recursive, skips hidden files and explains an image-less folder.
    return [TextureSource(p.stem, _read(p)) for p in list_images(path)]


def _split_rows(image: np.ndarray, split: str, name: str) -> np.ndarray:
    if split == "all":
        return image
    cut = int(image.shape[0] * TRAIN_FRACTION)
    part = image[:cut] if split == "train" else image[cut:]
    if part.shape[0] == 0:
        raise GantkError(
            f"texture {name} is only {image.shape[0]} px tall, too small to split; "
            "use larger textures or --split all"
        )
    return np.ascontiguousarray(part)


def load_texture_sources(spec: str, split: str = "all") -> list[TextureSource]:
    """Training/test textures from a folder (recursive), one image file, ``builtin:textures``
    (``?sources=a,b`` picks some), ``builtin:photos`` or ``builtin:NAME`` (one source).

    ``split``: 'train' keeps the top 75% of every image's rows, 'test' the bottom 25%, 'all'
    everything.
    """
    if split not in SPLITS:
        raise GantkError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    text = str(spec)
    sources = (
        _load_builtin(text, allow_group=True) if text.startswith("builtin:") else _load_path(text)
    )
    return [TextureSource(s.name, _split_rows(s.image, split, s.name)) for s in sources]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def read_texture_image(spec: str) -> tuple[np.ndarray, str]:
    """One texture (file path or ``builtin:NAME``) as H x W x 3 uint8, and its name."""
    text = str(spec)
    if text.startswith("builtin:"):
        return _load_builtin(text, allow_group=False)[0].image, text
    path = Path(text).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise GantkError(f"{path} {what}; give one texture image file or builtin:NAME")
    if not is_image_file(path):
        raise GantkError(f"{path} is not an image; give a texture image file or builtin:NAME")
    return _read(path), path.name


def window_side(image: np.ndarray, size: int, scale: float) -> int:
    """The side of the centre square that becomes the model's ``size``: the shorter side, or
    with ``scale`` > 0 a window of ``scale`` x the model's size (the scale at which the model saw
    textures in training, crops downscaled 1-4x, instead of squeezing a whole photo into it)."""
    side = min(image.shape[:2])
    return min(side, max(round(scale * size), 1)) if scale > 0 else side


def load_texture(spec: str, size: int, scale: float = 0.0) -> tuple[torch.Tensor, str | None]:
    """One texture (file path or ``builtin:NAME``) as a 1 x 3 x size x size tensor in [-1, 1].

    The centre square is cut (the whole shorter side, or with ``scale`` > 0 at most
    ``scale * size`` pixels) and resized (Lanczos). The note is None, or one line telling the
    user that the texture was smaller than ``size`` and had to be upscaled.
    """
    if size < 1:
        raise GantkError(f"texture size must be a positive number of pixels, got {size}")
    image, label = read_texture_image(spec)
    height, width = image.shape[:2]
    side = window_side(image, size, scale)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    note = None
    if side != size:
        square = np.array(
            Image.fromarray(np.ascontiguousarray(square)).resize(
                (size, size), Image.Resampling.LANCZOS
            )
        )
        if side < size:
            note = f"{label} is {width}x{height} px, smaller than the model's {size} px: upscaled"
    return _to_tensor(square[None]), note


class TextureSampler:
    """Endless augmented random crops. Deterministic given the numpy Generator passed in.

    With ``augment`` every crop is, in order: cut from a uniformly chosen source, rotated by a
    random angle (``rotate``), downscaled by a random factor in [1, ``max_downscale``], mirrored
    horizontally and vertically at random, and with probability ``histogram_match`` given the
    per-channel colour histogram of a random crop of another source. Without ``augment``: plain
    crops at native scale (for evaluation).
    """

    def __init__(
        self,
        sources: list[TextureSource],
        crop: int,
        augment: bool = True,
        max_downscale: float = 4.0,
        histogram_match: float = 0.5,
        rotate: bool = True,
    ) -> None:
        if not sources:
            raise GantkError("no texture sources to sample from; give at least one texture")
        if crop < 1:
            raise GantkError(f"crop size must be a positive number of pixels, got {crop}")
        if max_downscale < 1.0:
            raise GantkError(f"maximum downscale must be at least 1, got {max_downscale}")
        if not 0.0 <= histogram_match <= 1.0:
            raise GantkError(
                f"histogram-matching probability must be in [0, 1], got {histogram_match}"
            )
        for source in sources:
            height, width = source.image.shape[:2]
            if height < crop or width < crop:
                raise GantkError(
                    f"texture {source.name} is {width}x{height} px, smaller than the {crop} px "
                    "crop; pass larger textures or a smaller --resolution"
                )
        self.sources = sources
        self.crop = crop
        self.augment = augment
        self.max_downscale = float(max_downscale)
        self.histogram_match = float(histogram_match)
        self.rotate = rotate

    def sample(self, count: int, rng: np.random.Generator) -> torch.Tensor:
        """``count`` x 3 x crop x crop float32 in [-1, 1]."""
        out = np.empty((count, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(count):
            out[i] = self._augmented(rng) if self.augment else self._plain(rng)
        return _to_tensor(out)

    def _random_window(self, image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        y = int(rng.integers(0, height - side + 1))
        x = int(rng.integers(0, width - side + 1))
        return image[y : y + side, x : x + side]

    def _plain(self, rng: np.random.Generator) -> np.ndarray:
        source = self.sources[int(rng.integers(len(self.sources)))]
        return self._random_window(source.image, self.crop, rng)

    def _augmented(self, rng: np.random.Generator) -> np.ndarray:
        index = int(rng.integers(len(self.sources)))
        image = self.sources[index].image
        short = min(image.shape[:2])
        angle = float(rng.uniform(0.0, 360.0)) if self.rotate else 0.0
        rad = math.radians(angle)
        # A square of side a rotated by `angle` needs an axis-aligned window of side
        # a * (|cos| + |sin|) to contain it without the fill colour showing.
        spread = abs(math.cos(rad)) + abs(math.sin(rad))
        margin = _ROTATION_MARGIN if self.rotate else 0
        fits = (short - margin) / (self.crop * spread)  # largest scale the source allows
        top = min(self.max_downscale, fits)
        # A source barely larger than the crop cannot hold a rotated crop at native scale:
        # it is then enlarged slightly (at most sqrt(2)x) rather than losing its rotation.
        scale = float(rng.uniform(1.0, top)) if top > 1.0 else top
        side = min(short, math.ceil(self.crop * scale * spread) + margin)
        window = Image.fromarray(np.ascontiguousarray(self._random_window(image, side, rng)))
        if self.rotate:
            window = window.rotate(angle, resample=Image.Resampling.BILINEAR)
        # Central crop*scale square (fractional box) straight to crop x crop; the box filter
        # averages only inside the box, so no pixel outside the rotated square leaks in.
        half, centre = self.crop * scale / 2.0, side / 2.0
        box = (centre - half, centre - half, centre + half, centre + half)
        arr = np.asarray(
            window.resize((self.crop, self.crop), Image.Resampling.BOX, box=box), dtype=np.uint8
        )
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        if rng.random() < 0.5:
            arr = arr[::-1]
        if rng.random() < self.histogram_match:
            arr = self._match_colours(arr, index, rng)
        return arr

    def _match_colours(self, arr: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
        from skimage.exposure import match_histograms

        # Another source when there is one: the point is to show the model each texture's
        # structure in other textures' colours.
        others = [i for i in range(len(self.sources)) if i != index] or [index]
        reference = self.sources[others[int(rng.integers(len(others)))]].image
        ref = self._random_window(reference, self.crop, rng)
        matched = match_histograms(arr, ref, channel_axis=-1)
        return np.clip(np.round(matched), 0, 255).astype(np.uint8)
