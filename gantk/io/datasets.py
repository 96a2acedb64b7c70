"""Datasets of square RGB images with optional class labels and binary attributes.

Every dataset, whatever it is read from, looks the same to training code: item ``i`` is
``(image, label)`` with ``image`` a uint8 tensor (3, R, R) and ``label`` an int (-1 when the
dataset has none); ``labels``, ``attributes`` and ``filenames`` are whole arrays for code that
needs them (attribute-conditioned sampling, joining a CSV).

Sources: plain folders, labeled folders (one sorted subfolder per class), h5 packs written by
:mod:`gantk.io.packs`, and ``builtin:NAME`` datasets (:mod:`gantk.io.builtin`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from gantk.errors import GantkError, one_line
from gantk.io.dataset_base import ArrayDataset, ImageDataset  # noqa: F401 (ArrayDataset: re-exported)
from gantk.io.images import (
    ResizePolicy,
    UnreadableImage,
    check_resolution,
    fit_image,
    list_images,
    load_rgb,
    read_image_size,
    upscale_factor,
)

Warn = Callable[[str], None]


def print_warning(message: str) -> None:
    """Default warning sink: one line on stderr (a newline in a file name is escaped)."""
    print(f"warning: {one_line(message)}", file=sys.stderr)


class FolderDataset(ImageDataset):
    """Images in a folder tree, decoded on access and fitted to ``resolution``.

    Construction reads only headers: files that are not decodable images are skipped with one
    warning each (or rejected with ``strict``), and images too small for ``resolution`` are
    rejected unless ``allow_upscale``. With ``labeled``, each sorted immediate subfolder is a
    class (so ``0_real``/``1_fake`` become labels 0 and 1).
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int | None = None,
        policy: ResizePolicy = "center-crop",
        allow_upscale: bool = False,
        labeled: bool = False,
        strict: bool = False,
        warn: Warn = print_warning,
    ) -> None:
        self.root = Path(root)
        self.name = str(root)
        self.policy = policy
        self.resolution = check_resolution(resolution) if resolution is not None else None
        files = list_images(self.root)
        labels: list[int] = []
        if labeled:
            classes = sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            loose = [f for f in files if f.parent == self.root]
            if not classes or loose:
                raise GantkError(
                    f"--labels needs {self.root} to hold one subfolder per class (e.g. 0_real/ "
                    f"and 1_fake/) and no loose images; found {len(classes)} subfolders and "
                    f"{len(loose)} loose images"
                )
            by_class = {c: i for i, c in enumerate(classes)}
            empty = [
                c for c in classes if not any(f.relative_to(self.root).parts[0] == c for f in files)
            ]
            if empty:
                raise GantkError(
                    f"class folder {self.root / empty[0]} has no images; remove it or add images"
                )
            labels = [by_class[f.relative_to(self.root).parts[0]] for f in files]
            self.class_names = classes
        kept, kept_labels, sizes, skipped = [], [], [], []
        for i, path in enumerate(files):
            try:
                size = read_image_size(path)
            except UnreadableImage as exc:
                if strict:
                    raise GantkError(
                        f"cannot read image {exc}; remove or replace it "
                        "(or drop --strict to skip it)"
                    ) from exc
                warn(f"skipping unreadable image {path}")
                skipped.append(path.relative_to(self.root).as_posix())
                continue
            kept.append(path)
            sizes.append(size)
            if labeled:
                kept_labels.append(labels[i])
        if not kept:
            raise GantkError(f"{self.root} holds no readable images")
        if self.resolution is not None and not allow_upscale:
            for path, (width, height) in zip(kept, sizes, strict=True):
                if upscale_factor(height, width, self.resolution, policy) > 1.0 + 1e-9:
                    raise GantkError(
                        f"image {path} is {width}x{height}, smaller than --resolution "
                        f"{self.resolution}; choose a smaller resolution or pass --allow-upscale"
                    )
        self.paths = kept
        self.skipped = tuple(skipped)
        self.sizes = sizes
        self.labels = (
            np.asarray(kept_labels, dtype=np.int64)
            if labeled
            else np.full(len(kept), -1, dtype=np.int64)
        )
        self.filenames = [
            p.relative_to(self.root).as_posix() if p != self.root else p.name for p in kept
        ]

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` fitted to the resolution; raises UnreadableImage if corrupt."""
        arr = load_rgb(self.paths[index])
        if self.resolution is not None:
            arr = fit_image(arr, self.resolution, self.policy)
        return arr

    def image(self, index: int) -> np.ndarray:
        try:
            return self.read(index)
        except UnreadableImage as exc:
            raise GantkError(
                f"cannot decode image {exc}; remove it, or pack the folder with "
                "`gantk data pack`, which skips such files"
            ) from exc


class H5Dataset(ImageDataset):
    """An h5 pack written by ``gantk data pack``; images are read lazily, one chunk at a time.

    The file handle is opened per process, so the dataset works in DataLoader workers.
    """

    def __init__(self, path: str | Path) -> None:
        import h5py

        from gantk.io.files import check_regular

        self.path = Path(path)
        self.name = str(path)
        if not self.path.exists():
            raise GantkError(f"{path} does not exist; write a pack with `gantk data pack`")
        size = check_regular(self.path, "pack")
        try:
            with h5py.File(self.path, "r") as f:
                self._read_index(f, size)
        except OSError as exc:
            raise GantkError(
                f"{path} is not a readable h5 pack ({exc}); write one with `gantk data pack`"
            ) from exc
        self._file = None
        self._pid = -1

    def _damaged(self, why: str) -> GantkError:
        return GantkError(f"{self.path} is not a usable gantk pack ({why}); write it again with "
                          "`gantk data pack`")  # fmt: skip

    def _read_index(self, f, size: int) -> None:
        """Everything but the pixels, checked against the layout :mod:`gantk.io.packs` writes
        (the module docstring there), before any of it is read: each part a dataset of its
        dtype and shape, one label, attribute row and name per image, labels among the
        classes. No more images than the file has bytes: a damaged header claiming more would
        make reading the labels allocate for images that are not there."""
        import h5py

        images = f.get("images")
        if images is None:
            raise GantkError(
                f"{self.path} is an HDF5 file but not a gantk pack (no 'images'); "
                "write one with `gantk data pack`"
            )
        if not isinstance(images, h5py.Dataset):
            raise self._damaged("'images' is a group, not an array")
        shape = images.shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise GantkError(f"{self.path}: 'images' has shape {shape}, expected (N, R, R, 3)")
        if images.dtype != np.uint8:
            raise self._damaged(f"its images are {images.dtype}; packs hold 8-bit (uint8) pixels")
        count = int(shape[0])
        if count > size:
            raise self._damaged(f"it claims {count} images in {size} bytes")
        check_resolution(int(shape[1]))
        self.resolution = int(shape[1])
        self.labels = np.full(count, -1, np.int64)
        if "labels" in f:
            labels = self._array(f, "labels", (count,), "iu")
            self.class_names = self._names(labels, "class_names")
            values = labels[:].astype(np.int64)
            outside = values[(values < 0) | (values >= len(self.class_names))]
            if outside.size:
                raise self._damaged(
                    f"label {int(outside[0])} is not one of its {len(self.class_names)} classes"
                )
            self.labels = values
        if "attributes" in f:
            attributes = self._array(f, "attributes", (count, None), "iub")
            self.attribute_names = self._names(attributes, "names")
            if len(self.attribute_names) != attributes.shape[1]:
                raise self._damaged(
                    f"{attributes.shape[1]} attribute columns but {len(self.attribute_names)} "
                    "attribute names"
                )
            table = attributes[:]
            if ((table != 0) & (table != 1)).any():
                raise self._damaged("attribute values other than 0 and 1")
            self.attributes = table.astype(np.uint8)
        if "filenames" in f:
            names = self._array(f, "filenames", (count,), "OSU")
            self.filenames = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                              for s in names[:]]  # fmt: skip

    def _array(self, f, key: str, shape: tuple[int | None, ...], kinds: str):
        """``f[key]`` if it is a dataset of ``shape`` (None: any length) and dtype kind."""
        import h5py

        node = f[key]
        if not isinstance(node, h5py.Dataset):
            raise self._damaged(f"'{key}' is a group, not an array")
        fits = len(node.shape) == len(shape) and all(
            want is None or have == want for have, want in zip(node.shape, shape, strict=True)
        )
        if not fits:
            if len(node.shape) >= 1 and shape and node.shape[0] != shape[0]:
                raise self._damaged(f"{node.shape[0]} {key} for {shape[0]} images")
            raise self._damaged(f"'{key}' has shape {node.shape}")
        if node.dtype.kind not in kinds:
            raise self._damaged(f"'{key}' holds {node.dtype} values")
        return node

    def _names(self, node, key: str) -> list[str]:
        """The JSON list of names in attribute ``key`` of ``node``."""
        from gantk.io.files import parse_json

        value = node.attrs.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise self._damaged(f"{node.name} has no {key}")
        names = parse_json(
            value, f"{self.path}: {key}", fix="write it again with `gantk data pack`"
        )
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self._damaged(f"{key} is not a list of names")
        return names

    def _images(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["images"]

    def image(self, index: int) -> np.ndarray:
        return self._images()[index]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not survive pickling into workers
        return state


def iter_readable(
    dataset: ImageDataset,
    names: Sequence[str],
    skipped: list[str],
    strict: bool = False,
    warn: Warn = print_warning,
    advance: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, image)`` for every image that decodes; a corrupt one is appended to
    ``skipped`` with a warning naming it, or stops everything with ``strict``."""
    for i in range(len(dataset)):
        try:
            arr = dataset.read(i)
        except UnreadableImage as exc:
            if strict:
                raise GantkError(
                    f"cannot decode image {exc}; remove it or drop --strict to skip it"
                ) from exc
            warn(f"skipping corrupt image {names[i]}")
            skipped.append(names[i])
        else:
            yield i, arr
        if advance is not None:
            advance(1)


def read_attribute_csv(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Parse ``filename,attr1,attr2,…`` with 0/1 values; returns (names, rows by filename)."""
    from gantk.io.files import read_csv

    path = Path(path)
    if not path.exists():
        raise GantkError(f"attribute CSV {path} does not exist")
    table = read_csv(path, "attribute CSV", fix="save it as 'CSV UTF-8'")
    header = table[0][1] if table else None
    if not header or header[0].strip().lower() != "filename" or len(header) < 2:
        raise GantkError(f"{path}: the first line must be 'filename,attr1,attr2,...'")
    names = [h.strip() for h in header[1:]]
    rows: dict[str, np.ndarray] = {}
    for line_no, row in table[1:]:
        if len(row) != len(header):
            raise GantkError(f"{path} line {line_no}: {len(row)} fields, expected {len(header)}")
        values = [v.strip() for v in row[1:]]
        bad = [v for v in values if v not in ("0", "1")]
        if bad:
            raise GantkError(f"{path} line {line_no}: attribute value {bad[0]!r} is not 0 or 1")
        rows[row[0].strip()] = np.array([int(v) for v in values], dtype=np.uint8)
    return names, rows


def attach_attributes(dataset: ImageDataset, csv_path: str | Path) -> ImageDataset:
    """Join an attribute CSV to ``dataset`` by relative filename (or by unique base name)."""
    names, rows = read_attribute_csv(csv_path)
    files = dataset.filenames or []
    index = {f: i for i, f in enumerate(files)}
    by_base: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_base.setdefault(Path(f).name, []).append(i)
    table = np.zeros((len(files), len(names)), dtype=np.uint8)
    seen = np.zeros(len(files), dtype=bool)
    unknown = []
    for key, values in rows.items():
        target = index.get(key)
        if target is None and len(by_base.get(Path(key).name, [])) == 1:
            target = by_base[Path(key).name][0]
        if target is None:
            unknown.append(key)
            continue
        table[target], seen[target] = values, True
    if unknown:
        raise GantkError(
            f"{csv_path} names {len(unknown)} file(s) not in {dataset.name}, "
            f"e.g. {unknown[0]!r}; fix the filename column"
        )
    if not seen.all():
        missing = files[int(np.argmin(seen))]
        raise GantkError(
            f"{csv_path} has no row for {int((~seen).sum())} image(s), e.g. "
            f"{missing!r}; add a row for every image"
        )
    dataset.attributes, dataset.attribute_names = table, names
    return dataset


def is_folder_spec(spec: str | Path) -> bool:
    """Whether a dataset spec names a folder of images (not ``builtin:…`` nor an .h5 pack)."""
    text = str(spec)
    return not text.startswith("builtin:") and not text.lower().endswith((".h5", ".hdf5"))


def open_dataset(
    spec: str | Path,
    resolution: int | None = None,
    policy: ResizePolicy = "center-crop",
    allow_upscale: bool = False,
    labeled: bool = False,
    attributes_csv: str | Path | None = None,
    strict: bool = False,
    count: int | None = None,
    seed: int | None = None,
    warn: Warn = print_warning,
) -> ImageDataset:
    """Open any dataset gantk accepts: ``builtin:NAME[?opt=val&…]``, an .h5 pack, or a folder."""
    text = str(spec)
    if text.startswith("builtin:"):
        from gantk.io.builtin import load_builtin

        dataset: ImageDataset = load_builtin(text, count=count, resolution=resolution, seed=seed)
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() in (".h5", ".hdf5"):
            dataset = H5Dataset(path)
            if resolution is not None and resolution != dataset.resolution:
                raise GantkError(
                    f"{path} is packed at {dataset.resolution}px, not {resolution}px; "
                    f"repack it with --resolution {resolution} or drop --resolution"
                )
        else:
            dataset = FolderDataset(path, resolution, policy, allow_upscale, labeled, strict, warn)
        if labeled and not dataset.has_labels:
            raise GantkError(f"{spec} has no labels; pack a labeled folder with --labels")
        if count is not None and count < len(dataset):
            dataset = Subset(dataset, np.arange(count))
    if attributes_csv is not None:
        attach_attributes(dataset, attributes_csv)
    return dataset


class Subset(ImageDataset):
    """The first/chosen ``indices`` of another dataset, with its labels and attributes."""

    def __init__(self, base: ImageDataset, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.name, self.resolution, self.skipped = base.name, base.resolution, base.skipped
        self.labels = base.labels[self.indices]
        self.class_names = base.class_names
        self.attributes = base.attributes[self.indices] if base.attributes is not None else None
        self.attribute_names = base.attribute_names
        self.filenames = (
            [base.filenames[i] for i in self.indices] if base.filenames is not None else None
        )
        if getattr(base, "sizes", None) is not None:  # native sizes, for the mixed-size check
            self.sizes = [base.sizes[i] for i in self.indices]

    def image(self, index: int) -> np.ndarray:
        return self.base.image(int(self.indices[index]))

    def read(self, index: int) -> np.ndarray:
        return self.base.read(int(self.indices[index]))


def attribute_rows(dataset: ImageDataset, names: Sequence[str]) -> np.ndarray:
    """Indices of the images having any of the attributes ``names`` (a subgroup: "Eyeglasses",
    or "Eyeglasses,Bald" for images with either); errors name what is missing."""
    known = list(dataset.attribute_names or [])
    if not known:
        raise GantkError(
            f"{dataset.name} has no attributes; give an attribute CSV (filename,attr1,…) "
            "with --attributes"
        )
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GantkError(
            f"attribute {unknown[0]!r} is not among {dataset.name}'s attributes "
            f"({', '.join(known)})"
        )
    assert dataset.attributes is not None
    table = np.asarray(dataset.attributes)[:, [known.index(n) for n in names]]
    chosen = np.flatnonzero((table > 0).any(axis=1))
    if not len(chosen):
        raise GantkError(
            f"no image of {dataset.name} has {' or '.join(names)}; choose an attribute some "
            "images have"
        )
    return chosen


def attributes_file(spec: str | Path, given: str | Path | None) -> str | Path | None:
    """The attribute CSV to use: ``given``, else the ``attributes.csv`` a folder exported by
    ``gantk data export`` carries (so ``--subset`` works on it without ``--attributes``)."""
    if given is not None:
        return given
    candidate = Path(str(spec)) / "attributes.csv"
    return candidate if not str(spec).startswith("builtin:") and candidate.is_file() else None
