"""``shapes``: procedural scenes of coloured shapes on a muted background.

Every scene has one kind of shape (circle, square, triangle) in one colour (red, green, blue,
yellow), either large or small, one or several (2-3) of them. These four factors are the
per-image binary attributes, and the shape kind is the class label.

The ``minority`` option makes one attribute rare (e.g. ``minority=triangle:0.02``): the
controllable testbed for minority coverage (Inclusive GAN, ch.7). Factor values are assigned by
exact quotas, so a 2 % minority of 2000 images is exactly 40 images.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from gantk.errors import GantkError
from gantk.io.dataset_base import ArrayDataset

KINDS = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 210, 40),
}
ATTRIBUTES = (*KINDS, *COLOURS, "large", "multiple")
SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges without a rasterizer of our own
DEFAULT_MINORITY_FRACTION = 0.02


def _quota(count: int, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact shares of ``count`` by the largest-remainder method (each value gets floor(p*count)
    and the leftovers go to the largest fractional parts, earlier values first), shuffled."""
    exact = probs * count
    sizes = np.floor(exact).astype(int)
    leftover = count - int(sizes.sum())
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[:leftover]] += 1
    return rng.permutation(np.repeat(np.arange(len(probs)), sizes))


def _parse_minority(minority: str | None) -> tuple[str | None, float]:
    if not minority:
        return None, 0.0
    name, _, frac = minority.partition(":")
    if name not in ATTRIBUTES:
        raise GantkError(f"minority attribute {name!r} is not one of {', '.join(ATTRIBUTES)}")
    try:
        fraction = float(frac) if frac else DEFAULT_MINORITY_FRACTION
    except ValueError:
        raise GantkError(
            f"minority fraction {frac!r} is not a number; write e.g. {name}:0.02"
        ) from None
    if not 0.0 < fraction < 1.0:
        raise GantkError(f"minority fraction must be between 0 and 1, got {fraction}")
    return name, fraction


def _group_probs(values: tuple[str, ...], minority: str | None, fraction: float) -> np.ndarray:
    k = len(values)
    if minority in values:
        probs = np.full(k, (1.0 - fraction) / (k - 1))
        probs[values.index(minority)] = fraction
        return probs
    return np.full(k, 1.0 / k)


def _polygon(
    kind: str, cx: float, cy: float, radius: float, angle: float
) -> list[tuple[float, float]]:
    corners = 4 if kind == "square" else 3
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * j / corners),
            cy + radius * math.sin(angle + 2 * math.pi * j / corners),
        )
        for j in range(corners)
    ]


def render_scene(
    resolution: int,
    kind: str,
    colour: tuple[int, int, int],
    large: bool,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    size = resolution * SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(35, 110, size=3))
    canvas = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        frac = rng.uniform(0.17, 0.24) if large else rng.uniform(0.07, 0.11)
        radius = frac * size
        cx, cy = rng.uniform(radius, size - radius, size=2)
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter, strict=True))
        if kind == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        else:
            draw.polygon(
                _polygon(kind, cx, cy, radius * 1.15, rng.uniform(0, 2 * math.pi)), fill=fill
            )
    return np.asarray(canvas.resize((resolution, resolution), Image.Resampling.BOX))


def build_shapes(
    count: int, resolution: int, seed: int, minority: str | None = None
) -> ArrayDataset:
    name, fraction = _parse_minority(minority)
    rng = np.random.default_rng(seed)
    colours = tuple(COLOURS)
    kinds = _quota(count, _group_probs(KINDS, name, fraction), rng)
    hues = _quota(count, _group_probs(colours, name, fraction), rng)
    binary = {}
    for attr in ("large", "multiple"):
        p = fraction if attr == name else 0.5
        binary[attr] = _quota(count, np.array([1.0 - p, p]), rng).astype(bool)
    images = np.empty((count, resolution, resolution, 3), dtype=np.uint8)
    attributes = np.zeros((count, len(ATTRIBUTES)), dtype=np.uint8)
    for i in range(count):
        n_shapes = int(rng.integers(2, 4)) if binary["multiple"][i] else 1
        images[i] = render_scene(
            resolution,
            KINDS[kinds[i]],
            COLOURS[colours[hues[i]]],
            bool(binary["large"][i]),
            n_shapes,
            rng,
        )
        attributes[i, kinds[i]] = 1
        attributes[i, len(KINDS) + hues[i]] = 1
        attributes[i, -2] = binary["large"][i]
        attributes[i, -1] = binary["multiple"][i]
    return ArrayDataset(images, "builtin:shapes", kinds, list(KINDS), attributes, list(ATTRIBUTES))
