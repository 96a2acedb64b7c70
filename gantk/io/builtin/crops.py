"""``faces``, ``textures`` and ``photos``: images that scikit-image and scikit-learn ship,
cut into square crops (faces are used whole)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from gantk.errors import GantkError
from gantk.io.dataset_base import ArrayDataset
from gantk.io.images import fit_image


def _rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return _rgb(getattr(data, name)())

    return load


def _sklearn_sample(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(filename))

    return load


TEXTURE_SOURCES = {
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "moon": _skimage("moon"),
    "hubble": _skimage("hubble_deep_field"),
    "ihc": _skimage("immunohistochemistry"),
}

PHOTO_SOURCES = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "china": _sklearn_sample("china.jpg"),
    "flower": _sklearn_sample("flower.jpg"),
}


def random_crops(
    sources: dict[str, Callable[[], np.ndarray]],
    count: int,
    resolution: int,
    seed: int,
    max_zoom: float,
    name: str,
) -> ArrayDataset:
    """``count`` square crops, classes balanced (label = source), random size, position, flip.

    A crop's side is drawn between ``resolution`` and ``max_zoom * resolution`` pixels (bounded
    by the source) and then resized, so one dataset mixes scales as real photos do.
    """
    rng = np.random.default_rng(seed)
    images = [load() for load in sources.values()]
    labels = rng.permutation(np.arange(count) % len(images))
    out = np.empty((count, resolution, resolution, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        src = images[label]
        h, w = src.shape[:2]
        largest = min(h, w, int(max_zoom * resolution))
        side = int(rng.integers(min(resolution, largest), largest + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = src[y : y + side, x : x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = np.asarray(
            Image.fromarray(np.ascontiguousarray(crop)).resize(
                (resolution, resolution), Image.Resampling.LANCZOS
            )
        )
    return ArrayDataset(out, name, labels, list(sources))


def select_sources(
    sources: dict[str, Callable[[], np.ndarray]], names: str | None, dataset: str
) -> dict[str, Callable[[], np.ndarray]]:
    """The sources named in ``names`` ("a,b"), all when None: lets held-out evaluation use
    images that a model never saw in training."""
    if names is None:
        return sources
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in sources]
    if unknown or not wanted:
        raise GantkError(
            f"builtin:{dataset}?sources= takes names from {', '.join(sources)}, got {names!r}"
        )
    return {n: sources[n] for n in wanted}


def build_textures(
    count: int, resolution: int, seed: int, sources: str | None = None
) -> ArrayDataset:
    chosen = select_sources(TEXTURE_SOURCES, sources, "textures")
    return random_crops(chosen, count, resolution, seed, 3.0, "builtin:textures")


def build_photos(
    count: int, resolution: int, seed: int, sources: str | None = None
) -> ArrayDataset:
    chosen = select_sources(PHOTO_SOURCES, sources, "photos")
    return random_crops(chosen, count, resolution, seed, 4.0, "builtin:photos")


def build_faces(count: int, resolution: int, seed: int) -> ArrayDataset:
    from skimage.data import lfw_subset

    # The first 100 of the 200 LFW-subset images are faces, the rest non-faces.
    faces = [_rgb(f) for f in lfw_subset()[:count]]
    images = np.stack([fit_image(f, resolution, "stretch") for f in faces])
    return ArrayDataset(images, "builtin:faces")
