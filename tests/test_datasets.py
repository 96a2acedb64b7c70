"""gantk.io.datasets and gantk.io.packs: folders, labels, attribute CSVs, h5 packs."""

from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import gantk.io.packs as packs
from gantk.errors import GantkError
from gantk.io.datasets import (
    ArrayDataset,
    FolderDataset,
    H5Dataset,
    ImageDataset,
    open_dataset,
)
from gantk.io.images import fit_image, load_rgb
from gantk.io.packs import write_pack


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _no_partials(folder: Path) -> None:
    leftovers = [n for n in os.listdir(folder) if "partial" in n]
    assert leftovers == []


@pytest.fixture
def plain_folder(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    _save(root / "a.png", _noise(40, 48, 1))
    _save(root / "b.png", _noise(48, 40, 2))
    _save(root / "sub" / "c.png", _noise(32, 32, 3))
    return root


@pytest.fixture
def labeled_folder(tmp_path: Path) -> Path:
    root = tmp_path / "labeled"
    _save(root / "0_real" / "r1.png", _noise(36, 36, 10))
    _save(root / "0_real" / "r2.png", _noise(40, 36, 11))
    _save(root / "1_fake" / "f1.png", _noise(36, 44, 12))
    _save(root / "1_fake" / "deep" / "f2.png", _noise(36, 36, 13))
    _save(root / "1_fake" / "f3.png", _noise(50, 36, 14))
    return root


# --------------------------------------------------------------------------- folders


def test_plain_folder_items(plain_folder: Path) -> None:
    ds = FolderDataset(plain_folder, resolution=32)
    assert len(ds) == 3
    assert ds.filenames == ["a.png", "b.png", "sub/c.png"]
    assert not ds.has_labels and ds.class_names is None
    for i, name in enumerate(ds.filenames):
        image, label = ds[i]
        assert isinstance(image, torch.Tensor)
        assert image.dtype == torch.uint8
        assert image.shape == (3, 32, 32)
        assert label == -1
        expected = fit_image(load_rgb(plain_folder / name), 32)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert ds.summary() == {"name": str(plain_folder), "count": 3, "resolution": 32}


def test_labeled_folder(labeled_folder: Path) -> None:
    ds = FolderDataset(labeled_folder, resolution=32, labeled=True)
    assert ds.class_names == ["0_real", "1_fake"]
    assert ds.has_labels
    assert len(ds) == 5
    for i, name in enumerate(ds.filenames):
        expected_label = {"0_real": 0, "1_fake": 1}[name.split("/")[0]]
        assert int(ds.labels[i]) == expected_label
        assert ds[i][1] == expected_label
    assert sorted(ds.filenames) == sorted(
        [
            "0_real/r1.png",
            "0_real/r2.png",
            "1_fake/f1.png",
            "1_fake/deep/f2.png",
            "1_fake/f3.png",
        ]
    )
    assert ds.summary()["classes"] == {"0_real": 2, "1_fake": 3}


def test_labeled_folder_rejects_loose_images(labeled_folder: Path) -> None:
    _save(labeled_folder / "stray.png", _noise(36, 36, 20))
    with pytest.raises(GantkError, match="loose"):
        FolderDataset(labeled_folder, resolution=32, labeled=True)


def test_labeled_folder_rejects_empty_class(labeled_folder: Path) -> None:
    (labeled_folder / "2_other").mkdir()
    (labeled_folder / "2_other" / "notes.txt").write_text("no images here")
    with pytest.raises(GantkError, match="2_other"):
        FolderDataset(labeled_folder, resolution=32, labeled=True)


def test_labeled_flag_on_flat_folder(plain_folder: Path) -> None:
    (plain_folder / "sub").rename(plain_folder.parent / "elsewhere")
    with pytest.raises(GantkError, match="subfolder"):
        FolderDataset(plain_folder, resolution=32, labeled=True)


def test_too_small_image_needs_allow_upscale(tmp_path: Path) -> None:
    root = tmp_path / "small"
    _save(root / "big.png", _noise(40, 40, 1))
    _save(root / "tiny.png", _noise(20, 24, 2))
    with pytest.raises(GantkError, match="--allow-upscale") as info:
        FolderDataset(root, resolution=32)
    assert "tiny.png" in str(info.value)
    assert "big.png" not in str(info.value)

    ds = FolderDataset(root, resolution=32, allow_upscale=True)
    image, _ = ds[ds.filenames.index("tiny.png")]
    assert image.shape == (3, 32, 32)


def test_unreadable_file_skipped_with_one_warning(plain_folder: Path) -> None:
    (plain_folder / "broken.png").write_bytes(b"\x00garbage, not a png" * 20)
    warnings: list[str] = []
    ds = FolderDataset(plain_folder, resolution=32, warn=warnings.append)
    assert ds.filenames == ["a.png", "b.png", "sub/c.png"]
    assert len(warnings) == 1
    assert "broken.png" in warnings[0]

    with pytest.raises(GantkError, match=r"broken\.png"):
        FolderDataset(plain_folder, resolution=32, strict=True, warn=warnings.append)
    assert len(warnings) == 1


def test_truncated_image_in_folder_dataset_raises_gantk_error(tmp_path: Path) -> None:
    root = tmp_path / "f"
    _save(root / "good.png", _noise(32, 32, 1))
    _truncate(_save(root / "bad.jpg", _noise(64, 64, 2), "JPEG"))
    ds = FolderDataset(root, resolution=32, warn=lambda m: None)
    assert ds.filenames == ["bad.jpg", "good.png"]
    with pytest.raises(GantkError, match=r"bad\.jpg"):
        ds[0]


# --------------------------------------------------------------------------- packs


@pytest.fixture
def damaged_folder(tmp_path: Path) -> Path:
    root = tmp_path / "damaged"
    _save(root / "a_good.png", _noise(32, 32, 1))
    _save(root / "b_good.jpg", np.full((32, 32, 3), 90, np.uint8), "JPEG")
    _truncate(_save(root / "c_bad.png", _noise(64, 64, 3)))
    _truncate(_save(root / "d_bad.jpg", _noise(64, 64, 4), "JPEG"))
    return root


def test_write_pack_skips_truncated_images(damaged_folder: Path, tmp_path: Path) -> None:
    warnings: list[str] = []
    out = tmp_path / "out" / "pack.h5"
    ds = open_dataset(damaged_folder, resolution=32, warn=warnings.append)
    result = write_pack(ds, out, warn=warnings.append)

    assert result.written == 2
    assert result.resolution == 32
    assert result.path == str(out)
    # Each bad file is reported exactly once, whether it is found when the folder is scanned
    # or only when its pixels are decoded while packing.
    assert sorted(result.skipped) == ["c_bad.png", "d_bad.jpg"]
    for bad in ("c_bad.png", "d_bad.jpg"):
        assert sum(bad in w for w in warnings) == 1, warnings
    assert len(warnings) == 2

    packed = H5Dataset(out)
    assert packed.filenames == ["a_good.png", "b_good.jpg"]
    for i, name in enumerate(packed.filenames):
        expected = fit_image(load_rgb(damaged_folder / name), 32)
        np.testing.assert_array_equal(packed.image(i), expected)
    _no_partials(out.parent)


def test_write_pack_strict_leaves_nothing(damaged_folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "pack.h5"
    with pytest.raises(GantkError, match="drop --strict"):
        write_pack(open_dataset(damaged_folder, resolution=32, strict=True), out, strict=True)
    assert os.listdir(out_dir) == []
    (damaged_folder / "c_bad.png").unlink()  # leave only the JPEG, whose header is readable
    ds = open_dataset(damaged_folder, resolution=32)
    warnings: list[str] = []
    with pytest.raises(GantkError, match=r"d_bad\.jpg"):
        write_pack(ds, out, strict=True, warn=warnings.append)
    assert not out.exists()
    assert os.listdir(out_dir) == []
    assert warnings == []


def test_pack_of_a_subset_reports_skipped_files(plain_folder: Path, tmp_path: Path) -> None:
    (plain_folder / "0_broken.png").write_bytes(b"garbage" * 10)
    warnings: list[str] = []
    ds = open_dataset(plain_folder, resolution=32, count=2, warn=warnings.append)
    result = write_pack(ds, tmp_path / "pack.h5", warn=warnings.append)
    assert result.written == 2
    assert result.skipped == ["0_broken.png"]
    assert len(warnings) == 1
    assert H5Dataset(tmp_path / "pack.h5").filenames == ["a.png", "b.png"]


def test_write_pack_refuses_existing_output(plain_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack.h5"
    out.write_bytes(b"precious")
    ds = open_dataset(plain_folder, resolution=32)
    with pytest.raises(GantkError, match="--force"):
        write_pack(ds, out)
    assert out.read_bytes() == b"precious"
    write_pack(ds, out, force=True)
    assert len(H5Dataset(out)) == 3


def test_pack_round_trip_with_labels_and_attributes(labeled_folder: Path, tmp_path: Path) -> None:
    csv = tmp_path / "attrs.csv"
    csv.write_text(
        "filename,smiling,glasses\n"
        "0_real/r1.png,1,0\n"
        "0_real/r2.png,0,0\n"
        "1_fake/f1.png,1,1\n"
        "1_fake/deep/f2.png,0,1\n"
        "1_fake/f3.png,1,1\n"
    )
    ds = open_dataset(labeled_folder, resolution=32, labeled=True, attributes_csv=csv)
    assert ds.attribute_names == ["smiling", "glasses"]
    by_name = dict(zip(ds.filenames, ds.attributes.tolist(), strict=True))
    assert by_name["1_fake/deep/f2.png"] == [0, 1]
    assert by_name["0_real/r1.png"] == [1, 0]

    out = tmp_path / "pack.h5"
    advanced: list[int] = []
    result = write_pack(ds, out, advance=advanced.append)
    assert result.written == 5 and result.skipped == []
    assert sum(advanced) == 5

    packed = H5Dataset(out)
    assert len(packed) == len(ds) == 5
    assert packed.resolution == 32
    assert packed.class_names == ["0_real", "1_fake"]
    assert packed.attribute_names == ["smiling", "glasses"]
    assert packed.filenames == ds.filenames
    np.testing.assert_array_equal(packed.labels, ds.labels)
    np.testing.assert_array_equal(packed.attributes, ds.attributes)
    for i in range(len(ds)):
        a, la = ds[i]
        b, lb = packed[i]
        assert torch.equal(a, b)
        assert la == lb
    assert packed.summary() == ds.summary() | {"name": str(out)}

    with h5py.File(out, "r") as f:
        assert f["images"].dtype == np.uint8
        assert f["images"].chunks == (1, 32, 32, 3)
        assert f["images"].shape == (5, 32, 32, 3)
        assert f.attrs["gantk.kind"] == "dataset"


def test_pack_keeps_labels_and_attributes_aligned_when_skipping(
    labeled_folder: Path, tmp_path: Path
) -> None:
    # A corrupt image in the middle: the rows after it must move up with their images.
    _truncate(_save(labeled_folder / "0_real" / "r3.jpg", _noise(64, 64, 30), "JPEG"))
    names = [
        "0_real/r1.png",
        "0_real/r2.png",
        "0_real/r3.jpg",
        "1_fake/deep/f2.png",
        "1_fake/f1.png",
        "1_fake/f3.png",
    ]
    rows = {name: [i % 2, int(i >= 3)] for i, name in enumerate(names)}
    csv = _csv(
        tmp_path, "filename,odd,late\n" + "".join(f"{n},{a},{b}\n" for n, (a, b) in rows.items())
    )
    warnings: list[str] = []
    ds = open_dataset(
        labeled_folder, resolution=32, labeled=True, attributes_csv=csv, warn=warnings.append
    )
    assert ds.filenames == names
    result = write_pack(ds, tmp_path / "pack.h5", warn=warnings.append)
    assert result.skipped == ["0_real/r3.jpg"]
    assert len(warnings) == 1

    packed = H5Dataset(tmp_path / "pack.h5")
    kept = [n for n in names if n != "0_real/r3.jpg"]
    assert packed.filenames == kept
    assert packed.labels.tolist() == [0, 0, 1, 1, 1]
    assert packed.attributes.tolist() == [rows[n] for n in kept]
    for i, name in enumerate(kept):
        expected = fit_image(load_rgb(labeled_folder / name), 32)
        np.testing.assert_array_equal(packed.image(i), expected)


def test_pack_without_labels(plain_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack.h5"
    write_pack(open_dataset(plain_folder, resolution=32), out)
    packed = H5Dataset(out)
    assert packed.class_names is None and not packed.has_labels
    np.testing.assert_array_equal(packed.labels, [-1, -1, -1])
    assert packed.attributes is None


def test_pack_needs_a_resolution(plain_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="one resolution"):
        write_pack(FolderDataset(plain_folder), tmp_path / "pack.h5")
    assert not (tmp_path / "pack.h5").exists()


def test_pack_streams_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs, "BLOCK", 4)
    images = np.random.default_rng(5).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    ds = ArrayDataset(images, "mem", labels, ["a", "b", "c"])
    out = tmp_path / "pack.h5"

    resizes: list[int] = []
    original = h5py.Dataset.resize

    def spy(self, size, axis=None):
        resizes.append(size)
        return original(self, size, axis)

    monkeypatch.setattr(h5py.Dataset, "resize", spy)
    write_pack(ds, out)
    monkeypatch.setattr(h5py.Dataset, "resize", original)

    assert resizes == [4, 8, 10]  # two full blocks and a partial last one
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["images"][:], images)
        np.testing.assert_array_equal(f["labels"][:], labels)
    packed = H5Dataset(out)
    assert packed.filenames == [f"{i:06d}.png" for i in range(10)]


class _Generated(ImageDataset):
    """2000 random 32x32 images made on demand: the dataset itself is never held in memory."""

    def __init__(self, count: int = 2000, resolution: int = 32) -> None:
        self.name = "generated"
        self.resolution = resolution
        self.labels = np.full(count, -1, dtype=np.int64)
        self.filenames = None

    def image(self, index: int) -> np.ndarray:
        rng = np.random.default_rng(index)
        return rng.integers(0, 256, size=(self.resolution, self.resolution, 3), dtype=np.uint8)


def test_pack_memory_stays_flat(tmp_path: Path) -> None:
    ds = _Generated()
    total = len(ds) * 32 * 32 * 3
    assert total > 6_000_000
    out = tmp_path / "big.h5"
    tracemalloc.start()
    try:
        write_pack(ds, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One block of 256 images is ~0.8 MB (x2 while stacking); holding the dataset would be 6 MB.
    assert peak < 3_000_000, f"peak {peak / 1e6:.1f} MB"
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (2000, 32, 32, 3)
        for i in (0, 255, 256, 1999):
            np.testing.assert_array_equal(f["images"][i], ds.image(i))


def test_h5_dataset_in_dataloader_workers(plain_folder: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(6).integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    out = tmp_path / "pack.h5"
    write_pack(ArrayDataset(images, "mem", np.arange(7) % 2, ["x", "y"]), out)
    packed = H5Dataset(out)
    expected = [packed[i] for i in range(len(packed))]  # opens the file in this process first

    loader = DataLoader(packed, batch_size=3, shuffle=False, num_workers=2)
    got_images, got_labels = [], []
    for batch_images, batch_labels in loader:
        got_images.append(batch_images)
        got_labels.append(batch_labels)
    all_images = torch.cat(got_images)
    all_labels = torch.cat(got_labels)
    assert all_images.shape == (7, 3, 8, 8)
    for i, (img, label) in enumerate(expected):
        assert torch.equal(all_images[i], img)
        assert int(all_labels[i]) == label
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), images[i])


def test_h5_dataset_reopens_its_file_in_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = np.random.default_rng(7).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    write_pack(ArrayDataset(images, "mem"), tmp_path / "pack.h5")
    packed = H5Dataset(tmp_path / "pack.h5")
    np.testing.assert_array_equal(packed.image(0), images[0])
    first = packed._file
    assert first is not None
    np.testing.assert_array_equal(packed.image(1), images[1])
    assert packed._file is first  # one handle per process, not one per read

    # A forked worker has another pid: it must not reuse the parent's HDF5 handle.
    monkeypatch.setattr("gantk.io.datasets.os.getpid", lambda: -12345)
    np.testing.assert_array_equal(packed.image(2), images[2])
    assert packed._file is not first

    # Pickled into a spawned worker: the handle is dropped and reopened on first use.
    clone = pickle.loads(pickle.dumps(packed))
    assert clone._file is None
    np.testing.assert_array_equal(clone.image(2), images[2])


def test_h5_without_images(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(GantkError, match="not a gantk pack"):
        H5Dataset(path)
    with pytest.raises(GantkError, match="not a gantk pack"):
        open_dataset(path)


def test_h5_not_hdf5_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "fake.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(GantkError, match="not a readable"):
        H5Dataset(path)
    with pytest.raises(GantkError, match="does not exist"):
        H5Dataset(tmp_path / "missing.h5")


def test_open_pack_checks_resolution_and_count(plain_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack.h5"
    write_pack(open_dataset(plain_folder, resolution=32), out)
    with pytest.raises(GantkError, match="repack"):
        open_dataset(out, resolution=64)
    assert len(open_dataset(out, resolution=32)) == 3

    few = open_dataset(out, count=2)
    assert len(few) == 2
    assert few.filenames == ["a.png", "b.png"]
    full = H5Dataset(out)
    for i in range(2):
        assert torch.equal(few[i][0], full[i][0])

    with pytest.raises(GantkError, match="labels"):
        open_dataset(out, labeled=True)


def test_open_dataset_count_on_folder(labeled_folder: Path) -> None:
    ds = open_dataset(labeled_folder, resolution=32, labeled=True, count=3)
    assert len(ds) == 3
    full = open_dataset(labeled_folder, resolution=32, labeled=True)
    assert ds.filenames == full.filenames[:3]
    np.testing.assert_array_equal(ds.labels, full.labels[:3])
    for i in range(3):
        assert torch.equal(ds[i][0], full[i][0])


def test_open_dataset_builtin() -> None:
    ds = open_dataset("builtin:shapes", resolution=16, count=5, seed=1)
    assert len(ds) == 5
    assert ds[0][0].shape == (3, 16, 16)


# --------------------------------------------------------------------------- attribute CSVs


@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    root = tmp_path / "two"
    _save(root / "x.png", _noise(32, 32, 1))
    _save(root / "nested" / "y.png", _noise(32, 32, 2))
    return root


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "attrs.csv"
    path.write_text(text)
    return path


def test_csv_join_by_relative_name_and_unique_base_name(two_images: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "filename,a,b\nx.png,1,0\n\ny.png,0,1\n")
    ds = open_dataset(two_images, resolution=32, attributes_csv=csv)
    assert ds.filenames == ["nested/y.png", "x.png"]
    assert ds.attribute_names == ["a", "b"]
    np.testing.assert_array_equal(ds.attributes, [[0, 1], [1, 0]])
    assert ds.attributes.dtype == np.uint8
    assert ds.summary()["attributes"] == {"a": 0.5, "b": 0.5}


def test_csv_unknown_filename(two_images: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "filename,a\nx.png,1\nnested/y.png,0\nghost.png,1\n")
    with pytest.raises(GantkError, match=r"ghost\.png"):
        open_dataset(two_images, resolution=32, attributes_csv=csv)


def test_csv_bad_value_names_line(two_images: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "filename,a\nx.png,1\nnested/y.png,2\n")
    with pytest.raises(GantkError, match="line 3") as info:
        open_dataset(two_images, resolution=32, attributes_csv=csv)
    assert "'2'" in str(info.value)


def test_csv_wrong_field_count(two_images: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "filename,a,b\nx.png,1,0\nnested/y.png,1\n")
    with pytest.raises(GantkError, match="line 3"):
        open_dataset(two_images, resolution=32, attributes_csv=csv)


def test_csv_missing_row(two_images: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, "filename,a\nx.png,1\n")
    with pytest.raises(GantkError, match="no row") as info:
        open_dataset(two_images, resolution=32, attributes_csv=csv)
    assert "nested/y.png" in str(info.value)


@pytest.mark.parametrize("header", ["name,a", "filename", "", "a,filename"])
def test_csv_bad_header(two_images: Path, tmp_path: Path, header: str) -> None:
    csv = _csv(tmp_path, f"{header}\nx.png,1\nnested/y.png,0\n")
    with pytest.raises(GantkError, match="first line"):
        open_dataset(two_images, resolution=32, attributes_csv=csv)


def test_csv_missing_file(two_images: Path, tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="does not exist"):
        open_dataset(two_images, resolution=32, attributes_csv=tmp_path / "none.csv")


def test_csv_with_byte_order_mark(two_images: Path, tmp_path: Path) -> None:
    csv = tmp_path / "excel.csv"
    csv.write_text("filename,a\nx.png,1\nnested/y.png,0\n", encoding="utf-8-sig")
    ds = open_dataset(two_images, resolution=32, attributes_csv=csv)
    assert ds.attribute_names == ["a"]
    np.testing.assert_array_equal(ds.attributes, [[0], [1]])


def test_csv_ambiguous_base_name_is_not_joined(tmp_path: Path) -> None:
    root = tmp_path / "dup"
    _save(root / "a" / "same.png", _noise(32, 32, 1))
    _save(root / "b" / "same.png", _noise(32, 32, 2))
    # b/same.png has its own row; the bare base name cannot be told apart, so it is unknown.
    csv = _csv(tmp_path, "filename,a\nsame.png,1\nb/same.png,0\n")
    with pytest.raises(GantkError, match="not in") as info:
        open_dataset(root, resolution=32, attributes_csv=csv)
    assert "'same.png'" in str(info.value)
