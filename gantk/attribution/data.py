"""Reading the images an attributor learns from or judges.

A *sources* folder holds one sorted subfolder per source (``real/``, ``ganA/``, … or
``0_real/``, ``1_fake/``); the class names are those subfolder names. Images are held in memory
as uint8 (64×64 RGB is 12 KiB each) because attribution sets are small and every epoch reads all
of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gantk.errors import GantkError
from gantk.io.datasets import FolderDataset, Warn, print_warning

REAL_NAMES = ("real", "0_real")


@dataclass
class ImageSet:
    images: Tensor  # uint8 (N, 3, R, R)
    labels: np.ndarray  # int64 (N,), -1 when unlabeled
    filenames: list[str]
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageSet:
        return ImageSet(
            self.images[torch.as_tensor(indices)],
            self.labels[indices],
            [self.filenames[i] for i in indices],
            self.class_names,
        )

    def arrays(self) -> list[np.ndarray]:
        """The images as RGB (R, R, 3) uint8 arrays, for the pixel-space baselines."""
        return list(self.images.permute(0, 2, 3, 1).numpy())


def to_float(images: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (N, 3, R, R) -> float in [-1, 1], the networks' input."""
    return images.to(device).float() / 127.5 - 1


def native_size(root: Path) -> int:
    """The one square power-of-two size of the images under ``root``, else an error asking for
    --resolution."""
    dataset = FolderDataset(root)
    sizes = Counter(dataset.sizes)
    (width, height), _ = sizes.most_common(1)[0]
    if len(sizes) == 1 and width == height and width & (width - 1) == 0 and width >= 8:
        return width
    raise GantkError(
        f"images in {root} are not all one square power-of-two size "
        f"(most common: {width}x{height}); give --resolution, e.g. --resolution 64"
    )


def read_images(
    root: str | Path,
    resolution: int,
    labeled: bool,
    warn: Warn = print_warning,
    min_classes: int = 2,
    part: range | None = None,
) -> ImageSet:
    """Every image under ``root`` at ``resolution`` (centre crop + resize where needed, said
    once), labeled by subfolder when ``labeled`` (learning needs ``min_classes`` sources;
    evaluating may look at one). ``part``: only those of the sorted images (a shard's or a
    process's share; the labels, names and classes are those a whole read gives them)."""
    root = Path(root)
    if not root.is_dir():
        raise GantkError(f"{root} is not a folder of images")
    dataset = FolderDataset(root, resolution, labeled=labeled, allow_upscale=True, warn=warn)
    if labeled and len(dataset.class_names or []) < min_classes:
        raise GantkError(
            f"{root} holds one class ({(dataset.class_names or ['?'])[0]}); attribution needs "
            "one subfolder per source, at least two (e.g. real/ and ganA/)"
        )
    resized = [s for s in dataset.sizes if s != (resolution, resolution)]
    if resized:
        smaller = sum(1 for w, h in resized if min(w, h) < resolution)
        warn(
            f"{len(resized)} of {len(dataset)} images in {root} are not {resolution}x{resolution}"
            f" (sizes: {', '.join(f'{w}x{h}' for w, h in sorted(set(resized))[:4])}"
            f"{', …' if len(set(resized)) > 4 else ''}); centre-cropped and resized to "
            f"{resolution}x{resolution}"
            + (f", {smaller} of them enlarged, which blurs fingerprints" if smaller else "")
        )
    chosen = range(len(dataset)) if part is None else part
    images = (
        torch.stack([dataset[i][0] for i in chosen])
        if chosen
        else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    )
    names = list(dataset.filenames or [])
    return ImageSet(images, dataset.labels[chosen.start : chosen.stop].copy(),
                    names[chosen.start : chosen.stop], dataset.class_names)  # fmt: skip


def read_native(
    root: str | Path, labeled: bool, warn: Warn = print_warning, part: range | None = None
) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str] | None]:
    """Images at their own sizes (for the spectral baseline, which must not resize);
    ``part`` as for :func:`read_images`."""
    dataset = FolderDataset(Path(root), None, labeled=labeled, warn=warn)
    chosen = range(len(dataset)) if part is None else part
    arrays = [dataset.image(i) for i in chosen]
    names = list(dataset.filenames or [])[chosen.start : chosen.stop]
    return arrays, dataset.labels[chosen.start : chosen.stop].copy(), names, dataset.class_names


def image_count(root: str | Path, labeled: bool) -> tuple[int, list[tuple[int, int]]]:
    """How many images a read of ``root`` gives, and each one's (width, height), from the
    files' headers alone (to split them before reading)."""
    dataset = FolderDataset(Path(root), None, labeled=labeled, warn=lambda _: None)
    return len(dataset), list(dataset.sizes)


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices: ``fraction`` of each class (at least one image of
    a class with two or more) goes to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        take = round(len(idx) * fraction)
        if fraction > 0 and len(idx) > 1:
            take = min(max(take, 1), len(idx) - 1)
        val.append(idx[:take])
        train.append(idx[take:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def real_class(class_names: list[str]) -> int | None:
    """Index of the class of real images (``real`` or ``0_real``), if there is one."""
    for i, name in enumerate(class_names):
        if name.lower() in REAL_NAMES:
            return i
    return None


def match_classes(model_classes: list[str], folder_classes: list[str], folder: Path) -> np.ndarray:
    """Map the folder's label indices onto the model's; every folder class must be known."""
    unknown = [c for c in folder_classes if c not in model_classes]
    if unknown:
        raise GantkError(
            f"{folder} has classes {', '.join(folder_classes)} but the model knows "
            f"{', '.join(model_classes)}; rename the subfolders or use a model trained on them"
        )
    return np.asarray([model_classes.index(c) for c in folder_classes], dtype=np.int64)
