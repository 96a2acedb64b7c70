"""The interface every gantk dataset has (:class:`ImageDataset`) and the in-memory one
(:class:`ArrayDataset`), apart from the readers of :mod:`gantk.io.datasets` so that the built-in
datasets (:mod:`gantk.io.builtin`), which that module opens, can build on them without an import
cycle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Common interface of all gantk datasets (see the module docstring)."""

    name: str = "dataset"
    resolution: int | None = None
    labels: np.ndarray
    class_names: list[str] | None = None
    attributes: np.ndarray | None = None
    attribute_names: list[str] | None = None
    filenames: list[str] | None = None
    # Files left out when the dataset was opened (unreadable), reported by packing/exporting.
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as an RGB uint8 array (R, R, 3)."""
        raise TypeError(f"{type(self).__name__} must define image()")

    def read(self, index: int) -> np.ndarray:
        """Like :meth:`image`, but a corrupt file raises UnreadableImage so callers may skip it."""
        return self.image(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr = self.image(index)
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous(), int(
            self.labels[index]
        )

    @property
    def has_labels(self) -> bool:
        return self.class_names is not None

    def summary(self) -> dict:
        """Facts about the dataset, JSON-ready: count, resolution, classes, attribute rates."""
        info: dict = {"name": self.name, "count": len(self), "resolution": self.resolution}
        if self.class_names is not None:
            counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names))
            info["classes"] = {n: int(c) for n, c in zip(self.class_names, counts, strict=True)}
        if self.attributes is not None and self.attribute_names is not None:
            rates = (
                self.attributes.mean(axis=0) if len(self) else np.zeros(len(self.attribute_names))
            )
            info["attributes"] = {
                n: round(float(r), 4) for n, r in zip(self.attribute_names, rates, strict=True)
            }
        return info


class ArrayDataset(ImageDataset):
    """Images held in memory as one uint8 array (N, R, R, 3): built-ins and tests."""

    def __init__(
        self,
        images: np.ndarray,
        name: str,
        labels: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        attributes: np.ndarray | None = None,
        attribute_names: Sequence[str] | None = None,
        filenames: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        self.images = images
        self.name = name
        self.resolution = int(images.shape[1])
        self.labels = (
            np.asarray(labels, dtype=np.int64)
            if labels is not None
            else np.full(len(images), -1, dtype=np.int64)
        )
        self.class_names = list(class_names) if class_names is not None else None
        self.attributes = np.asarray(attributes, dtype=np.uint8) if attributes is not None else None
        self.attribute_names = list(attribute_names) if attribute_names is not None else None
        self.filenames = (
            list(filenames)
            if filenames is not None
            else [f"{i:06d}.png" for i in range(len(images))]
        )

    def image(self, index: int) -> np.ndarray:
        return self.images[index]
