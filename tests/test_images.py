"""gantk.io.images: listing, decoding to RGB uint8, fitting to a square, grids, writing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gantk.errors import GantkError
from gantk.io.images import (
    UnreadableImage,
    check_resolution,
    fit_image,
    list_images,
    load_rgb,
    make_grid,
    read_image_size,
    save_image,
    to_rgb_array,
    upscale_factor,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- list_images


def test_list_images_recursive_case_insensitive_sorted_skips_hidden(tmp_path: Path) -> None:
    small = np.zeros((4, 4, 3), np.uint8)
    expected = [
        _png(tmp_path / "a.PNG", small),
        _png(tmp_path / "b" / "c.png", small),
        _png(tmp_path / "b" / "d" / "e.png", small),
    ]
    Image.fromarray(small).save(tmp_path / "b" / "x.JpEg", format="JPEG")
    Image.fromarray(small).save(tmp_path / "z.tif", format="TIFF")
    expected += [tmp_path / "b" / "x.JpEg", tmp_path / "z.tif"]
    # Hidden files and anything inside hidden folders is ignored, as are non-images.
    _png(tmp_path / ".hidden.png", small)
    _png(tmp_path / ".cache" / "f.png", small)
    _png(tmp_path / "b" / ".thumbs" / "g.png", small)
    (tmp_path / "notes.txt").write_text("not an image")

    found = list_images(tmp_path)

    assert found == sorted(expected)
    assert len(found) == 5


def test_list_images_single_file(tmp_path: Path) -> None:
    path = _png(tmp_path / "one.png", np.zeros((4, 4, 3), np.uint8))
    assert list_images(path) == [path]


def test_list_images_missing_path(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="does not exist"):
        list_images(tmp_path / "nowhere")


def test_list_images_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(GantkError, match="no files"):
        list_images(tmp_path / "empty")


def test_list_images_only_non_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(GantkError, match="only non-image files"):
        list_images(tmp_path)


# --------------------------------------------------------------------------- decoding


def test_mode_l_gives_three_equal_channels() -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    out = to_rgb_array(Image.fromarray(gray, mode="L"))
    assert out.dtype == np.uint8
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_mode_l_file_via_load_rgb(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_palette_image_gives_palette_colours(tmp_path: Path) -> None:
    palette = [(200, 10, 30), (5, 250, 100), (17, 33, 240)]
    indices = np.array([[0, 1, 2, 1], [2, 2, 0, 0], [1, 0, 2, 1]], dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for rgb in palette for v in rgb] + [0] * (768 - 9))
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"

    expected = np.array(palette, dtype=np.uint8)[indices]
    np.testing.assert_array_equal(to_rgb_array(img), expected)
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png"), expected)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    colour = np.array([40, 120, 200], dtype=np.uint8)
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[:, 0, 3] = 0
    rgba[:, 1, 3] = 255
    rgba[:, 2, 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")

    out = load_rgb(tmp_path / "a.png")

    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[:, 0], np.full((2, 3), 255))
    np.testing.assert_array_equal(out[:, 1], np.broadcast_to(colour, (2, 3)))
    a = 128 / 255
    blend = colour * a + 255 * (1 - a)
    assert np.abs(out[:, 2].astype(float) - blend).max() <= 1.0
    np.testing.assert_array_equal(out, to_rgb_array(Image.fromarray(rgba, mode="RGBA")))


def test_16bit_grayscale_png(tmp_path: Path) -> None:
    values = np.arange(0, 256, 5, dtype=np.uint16)  # 52 values incl. 0 and 255
    raw = (values * 257).reshape(4, 13)
    img = Image.fromarray(raw)  # uint16 -> mode I;16
    assert img.mode == "I;16"
    img.save(tmp_path / "deep.png")

    out = load_rgb(tmp_path / "deep.png")

    assert out.dtype == np.uint8
    expected = values.reshape(4, 13).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def _exif_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 16x32 (HxW) grey JPEG with a red 8x8 block in its stored top-left corner."""
    arr = np.full((16, 32, 3), 128, dtype=np.uint8)
    arr[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return arr


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    _exif_jpeg(path, 6)
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == 6
        stored = np.asarray(img.convert("RGB"))  # decoded pixels, orientation not applied
    assert stored.shape == (16, 32, 3)

    out = load_rgb(path)

    # Orientation 6: the stored image must be turned 90 degrees clockwise for display.
    assert out.shape == (32, 16, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))
    # Clockwise turn: the stored top-left red block ends up at the top-right corner.
    top_right = out[1:7, 9:15].astype(int).mean(axis=(0, 1))
    top_left = out[1:7, 1:7].astype(int).mean(axis=(0, 1))
    bottom_left = out[25:31, 1:7].astype(int).mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60 and top_right[2] < 60
    assert abs(top_left - 128).max() < 20
    assert abs(bottom_left - 128).max() < 20


def test_read_image_size_honours_orientation(tmp_path: Path) -> None:
    _exif_jpeg(tmp_path / "rot6.jpg", 6)
    _exif_jpeg(tmp_path / "rot1.jpg", 1)
    assert read_image_size(tmp_path / "rot6.jpg") == (16, 32)  # (width, height) as displayed
    assert read_image_size(tmp_path / "rot1.jpg") == (32, 16)
    assert load_rgb(tmp_path / "rot1.jpg").shape == (16, 32, 3)


def test_read_image_size_does_not_decode_png_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    Image.fromarray(_noise(40, 24)).save(tmp_path / "x.png")
    decoded: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    assert read_image_size(tmp_path / "x.png") == (24, 40)
    assert decoded == []


def test_load_rgb_garbage_raises_naming_path(tmp_path: Path) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(UnreadableImage, match=r"junk\.png"):
        load_rgb(path)
    with pytest.raises(UnreadableImage, match=r"junk\.png"):
        read_image_size(path)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_load_rgb_truncated_raises_naming_path(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(_noise(64, 64)).save(path, format=fmt)
    np.testing.assert_array_equal(load_rgb(path).shape, (64, 64, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match=re.escape(f"cut{suffix}")):
        load_rgb(path)


def test_read_image_size_of_truncated_jpeg_reads_header_only(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(_noise(48, 64)).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # The header is intact, so the size is known even though the pixels are not decodable.
    assert read_image_size(path) == (64, 48)


# --------------------------------------------------------------------------- fitting


def _three_bands(h: int, w: int) -> np.ndarray:
    """Left quarter red, middle half green, right quarter blue."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 4] = RED
    arr[:, w // 4 : 3 * w // 4] = GREEN
    arr[:, 3 * w // 4 :] = BLUE
    return arr


def test_fit_center_crop_keeps_the_middle() -> None:
    out = fit_image(_three_bands(40, 80), 32, "center-crop")
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    inner = out[:, 3:29].astype(int)  # away from the crop edges (resampling ringing)
    assert np.abs(inner - np.array(GREEN)).max() <= 8
    # Even at the edges no red or blue survives.
    assert out[..., 0].max() < 60 and out[..., 2].max() < 60
    assert out[..., 1].min() > 180


def test_fit_stretch_keeps_all_colours_in_order() -> None:
    out = fit_image(_three_bands(40, 80), 32, "stretch")
    assert out.shape == (32, 32, 3)
    row = out[16].astype(int)
    # Bands scale to 8 / 16 / 8 columns.
    assert np.abs(row[1:6] - np.array(RED)).max() <= 20
    assert np.abs(row[11:21] - np.array(GREEN)).max() <= 20
    assert np.abs(row[26:31] - np.array(BLUE)).max() <= 20
    # Every row is the same (no vertical content).
    assert np.abs(out.astype(int) - row[None]).max() <= 1


def test_fit_pad_adds_black_bars() -> None:
    arr = _three_bands(20, 40)
    out = fit_image(arr, 32, "pad")
    assert out.shape == (32, 32, 3)
    # Scaled to 32x16, pasted at rows 8..23.
    np.testing.assert_array_equal(out[:8], 0)
    np.testing.assert_array_equal(out[24:], 0)
    middle = out[9:23].astype(int)
    assert np.abs(middle[:, 1:6] - np.array(RED)).max() <= 20
    assert np.abs(middle[:, 11:21] - np.array(GREEN)).max() <= 20
    assert np.abs(middle[:, 26:31] - np.array(BLUE)).max() <= 20


def test_fit_same_size_is_identity() -> None:
    arr = _noise(16, 16)
    for policy in ("center-crop", "stretch", "pad"):
        np.testing.assert_array_equal(fit_image(arr, 16, policy), arr)


def test_fit_unknown_policy() -> None:
    with pytest.raises(GantkError, match="resize policy"):
        fit_image(_noise(20, 10), 8, "squash")


def test_upscale_factor_hand_example() -> None:
    # A 40 (high) x 80 (wide) image at 64 px.
    assert upscale_factor(40, 80, 64, "center-crop") == pytest.approx(1.6)
    assert upscale_factor(40, 80, 64, "stretch") == pytest.approx(1.6)
    assert upscale_factor(40, 80, 64, "pad") == pytest.approx(0.8)
    # Portrait 100x50 at 64 px.
    assert upscale_factor(100, 50, 64, "center-crop") == pytest.approx(1.28)
    assert upscale_factor(100, 50, 64, "stretch") == pytest.approx(1.28)
    assert upscale_factor(100, 50, 64, "pad") == pytest.approx(0.64)
    # Large enough for every policy.
    for policy in ("center-crop", "stretch", "pad"):
        assert upscale_factor(128, 256, 64, policy) <= 1.0


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("bad", [48, 3, 0, 8192])
def test_check_resolution_rejects(bad: int) -> None:
    with pytest.raises(GantkError, match="power of two"):
        check_resolution(bad)


@pytest.mark.parametrize("good", [4, 64, 4096])
def test_check_resolution_accepts(good: int) -> None:
    assert check_resolution(good) == good


# --------------------------------------------------------------------------- grids


def test_make_grid_layout() -> None:
    images = [np.full((4, 4, 3), 10 * (k + 1), dtype=np.uint8) for k in range(5)]
    grid = make_grid(images, cols=2)

    assert grid.shape == (3 * (4 + 2) + 2, 2 * (4 + 2) + 2, 3)
    assert grid.dtype == np.uint8
    covered = np.zeros(grid.shape[:2], dtype=bool)
    for k in range(5):
        r, c = divmod(k, 2)
        y, x = 2 + r * 6, 2 + c * 6
        np.testing.assert_array_equal(grid[y : y + 4, x : x + 4], images[k])
        covered[y : y + 4, x : x + 4] = True
    # Everything else (padding and the empty sixth cell) is white.
    assert (grid[~covered] == 255).all()


def test_make_grid_empty() -> None:
    with pytest.raises(GantkError, match="no images"):
        make_grid([], cols=3)


# --------------------------------------------------------------------------- writing


def test_save_and_load_png_is_lossless(tmp_path: Path) -> None:
    arr = _noise(9, 13, seed=3)
    save_image(arr, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(load_rgb(tmp_path / "x.png"), arr)


def test_save_image_format_follows_named_as(tmp_path: Path) -> None:
    arr = _noise(16, 16, seed=4)
    tmp = tmp_path / ".out.jpg.partial"
    save_image(arr, tmp, named_as=tmp_path / "out.jpg")
    data = tmp.read_bytes()
    assert data[:2] == b"\xff\xd8"
    with Image.open(tmp) as img:
        assert img.format == "JPEG"
    # Without named_as an unknown suffix falls back to PNG.
    save_image(arr, tmp_path / "plain.partial")
    assert (tmp_path / "plain.partial").read_bytes()[:4] == b"\x89PNG"
