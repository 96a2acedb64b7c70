"""gantk.texture.data: texture sources, single textures and the augmented crop sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gantk.errors import GantkError
from gantk.texture.data import (
    TextureSampler,
    TextureSource,
    load_texture,
    load_texture_sources,
)

TEXTURE_NAMES = ["brick", "grass", "gravel", "moon", "hubble", "ihc"]


@pytest.fixture(scope="module")
def textures() -> list[TextureSource]:
    return load_texture_sources("builtin:textures")


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(arr: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path)
    return path


# --- load_texture_sources -----------------------------------------------------------------


def test_builtin_textures_are_six_rgb_sources(textures: list[TextureSource]) -> None:
    assert [s.name for s in textures] == TEXTURE_NAMES
    for source in textures:
        assert source.image.dtype == np.uint8
        assert source.image.ndim == 3 and source.image.shape[2] == 3
        assert min(source.image.shape[:2]) >= 512


def test_splits_partition_rows_without_overlap(textures: list[TextureSource]) -> None:
    train = load_texture_sources("builtin:textures", split="train")
    test = load_texture_sources("builtin:textures", split="test")
    for full, tr, te in zip(textures, train, test, strict=True):
        height = full.image.shape[0]
        assert tr.name == te.name == full.name
        assert tr.image.shape[0] + te.image.shape[0] == height
        assert tr.image.shape[0] == pytest.approx(0.75 * height, abs=1)
        assert tr.image.shape[1:] == te.image.shape[1:] == full.image.shape[1:]
        np.testing.assert_array_equal(tr.image, full.image[: tr.image.shape[0]])
        np.testing.assert_array_equal(te.image, full.image[height - te.image.shape[0] :])


def test_sources_option_filters() -> None:
    chosen = load_texture_sources("builtin:textures?sources=moon,brick")
    assert [s.name for s in chosen] == ["moon", "brick"]


def test_single_builtin_source(textures: list[TextureSource]) -> None:
    (brick,) = load_texture_sources("builtin:brick")
    assert brick.name == "brick"
    np.testing.assert_array_equal(brick.image, textures[0].image)
    (photo,) = load_texture_sources("builtin:coffee")
    assert photo.name == "coffee" and photo.image.shape[2] == 3


def test_folder_is_read_recursively_and_grayscale_becomes_rgb(tmp_path: Path) -> None:
    colour = _noise(20, 30)
    gray = _noise(24, 16, seed=1)[..., 0]
    _save(colour, tmp_path / "a.png")
    _save(gray, tmp_path / "sub" / "b.png", mode="L")
    (tmp_path / "notes.txt").write_text("not an image")

    sources = load_texture_sources(str(tmp_path))

    assert [s.name for s in sources] == ["a", "b"]
    np.testing.assert_array_equal(sources[0].image, colour)
    b = sources[1].image
    assert b.shape == (24, 16, 3) and b.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(b[..., channel], gray)

    (single,) = load_texture_sources(str(tmp_path / "a.png"), split="test")
    np.testing.assert_array_equal(single.image, colour[15:])


@pytest.mark.parametrize(
    ("spec", "split", "expected"),
    [
        ("{tmp}/missing", "all", "does not exist"),
        ("{tmp}/empty", "all", "put images"),
        ("builtin:nope", "all", "builtin:brick"),
        ("builtin:textures?sources=wood", "all", "sources="),
        ("builtin:textures", "validation", "unknown split 'validation'"),
    ],
)
def test_errors_say_what_to_do(tmp_path: Path, spec: str, split: str, expected: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(GantkError, match=expected) as info:
        load_texture_sources(spec.format(tmp=tmp_path), split=split)
    assert "\n" not in str(info.value)


def test_unknown_builtin_lists_valid_names() -> None:
    with pytest.raises(GantkError) as info:
        load_texture_sources("builtin:wood")
    message = str(info.value)
    assert "builtin:wood" in message
    for name in [*TEXTURE_NAMES, "astronaut", "coffee", "textures"]:
        assert f"builtin:{name}" in message


# --- load_texture ---------------------------------------------------------------------------


def test_small_texture_is_upscaled_with_a_note(tmp_path: Path) -> None:
    path = _save(_noise(80, 64), tmp_path / "a.png")
    tensor, note = load_texture(str(path), 128)
    assert tensor.shape == (1, 3, 128, 128) and tensor.dtype == torch.float32
    assert note == "a.png is 64x80 px, smaller than the model's 128 px: upscaled"


def test_large_texture_has_no_note(tmp_path: Path) -> None:
    path = _save(_noise(60, 100), tmp_path / "big.jpg")
    tensor, note = load_texture(str(path), 32)
    assert note is None
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    assert tensor.min() < -0.5 and tensor.max() > 0.5  # noise spans the range

    brick, note = load_texture("builtin:brick", 16)
    assert brick.shape == (1, 3, 16, 16) and note is None


def test_texture_is_the_centre_square(tmp_path: Path) -> None:
    # 60 wide, 40 tall: the centre square spans x 10..50, half black and half white. A crop
    # anchored at the left (x 0..40) would be three quarters black.
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, 30:] = 255
    path = _save(image, tmp_path / "halves.png")
    tensor, _ = load_texture(str(path), 20)
    left, right = tensor[0, :, :, :8], tensor[0, :, :, 12:]
    assert torch.allclose(left, torch.full_like(left, -1.0), atol=0.02)
    assert torch.allclose(right, torch.full_like(right, 1.0), atol=0.02)


def test_scale_takes_a_window_of_scale_times_the_size(tmp_path: Path) -> None:
    # A 100 px image whose centre 40 px are white on black: with scale 2 at size 20 the window
    # is the centre 40 px (all white); scale 0 takes the whole image (mostly black).
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[30:70, 30:70] = 255
    path = _save(image, tmp_path / "centre.png")
    window, note = load_texture(str(path), 20, scale=2.0)
    assert note is None
    assert torch.allclose(window, torch.ones_like(window), atol=0.02)
    whole, _ = load_texture(str(path), 20)
    assert float((whole > 0).float().mean()) == pytest.approx(0.16, abs=0.03)
    small, note = load_texture(str(path), 64, scale=2.0)  # window capped by the 100 px image
    assert small.shape == (1, 3, 64, 64) and note is None


def test_load_texture_errors(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="does not exist"):
        load_texture(str(tmp_path / "nope.png"), 32)
    with pytest.raises(GantkError, match="name one"):
        load_texture("builtin:textures", 32)


# --- TextureSampler -------------------------------------------------------------------------


def _tiny_sources() -> list[TextureSource]:
    return [TextureSource("a", _noise(40, 48, seed=2)), TextureSource("b", _noise(36, 36, 3))]


def test_sampler_shape_dtype_range() -> None:
    batch = TextureSampler(_tiny_sources(), 16).sample(5, np.random.default_rng(0))
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0


def test_sampler_is_deterministic_per_seed() -> None:
    sampler = TextureSampler(_tiny_sources(), 16, histogram_match=0.5)
    first = sampler.sample(6, np.random.default_rng(7))
    again = sampler.sample(6, np.random.default_rng(7))
    other = sampler.sample(6, np.random.default_rng(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_plain_crops_are_exact_subwindows() -> None:
    source = _noise(12, 10, seed=4)
    sampler = TextureSampler([TextureSource("t", source)], 4, augment=False)
    batch = sampler.sample(8, np.random.default_rng(0))
    crops = ((batch + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    windows = np.lib.stride_tricks.sliding_window_view(source, (4, 4, 3))[:, :, 0]
    positions = set()
    for crop in crops:
        hits = np.argwhere((windows == crop).all(axis=(2, 3, 4)))
        assert len(hits) == 1, "a plain crop must be an unaltered window of the source"
        positions.add(tuple(hits[0]))
    assert len(positions) > 1  # positions are random


@pytest.mark.parametrize("side", [16, 21, 64])
def test_rotated_crops_show_no_border(side: int) -> None:
    # A flat source: any fill colour from rotation or any resampling outside the rotated
    # window would show as a different value. side == crop forces the smallest window.
    colour = np.array([200, 100, 50], dtype=np.uint8)
    source = TextureSource("flat", np.broadcast_to(colour, (side, side + 3, 3)).copy())
    sampler = TextureSampler([source], 16, max_downscale=4.0, histogram_match=0.0)
    batch = sampler.sample(100, np.random.default_rng(1))
    expected = torch.from_numpy(colour).float() / 127.5 - 1.0
    assert torch.allclose(batch, expected.view(1, 3, 1, 1).expand_as(batch), atol=1e-6)


def test_source_smaller_than_crop_is_rejected() -> None:
    sources = [TextureSource("big", _noise(40, 40)), TextureSource("thin", _noise(40, 12))]
    with pytest.raises(GantkError, match=r"thin is 12x40 px.*smaller --resolution"):
        TextureSampler(sources, 16)


def _striped(base: tuple[int, int, int], axis: int, seed: int) -> np.ndarray:
    """A flat-ish colour with 1 px stripes along ``axis``: histogram matching keeps the stripes
    (it is monotonic per channel), so a crop's origin stays recognisable after recolouring."""
    noise = np.random.default_rng(seed).integers(0, 6, (32, 32, 3))
    index = np.indices((32, 32))[axis] % 2
    return (np.array(base) + 20 * index[..., None] + noise).astype(np.uint8)


def _origin_is_dark(crop: torch.Tensor) -> bool:
    # Dark source: stripes alternate along x, so neighbours differ most along the width.
    return bool(
        (crop[:, :, 1:] - crop[:, :, :-1]).abs().mean()
        > (crop[:, 1:, :] - crop[:, :-1, :]).abs().mean()
    )


def test_histogram_matching_moves_colours_toward_the_reference() -> None:
    dark = TextureSource("dark", _striped((40, 40, 40), axis=1, seed=5))
    bright = TextureSource("bright", _striped((180, 130, 80), axis=0, seed=6))
    means = {}
    for probability in (0.0, 1.0):
        sampler = TextureSampler(
            [dark, bright], 8, max_downscale=1.0, rotate=False, histogram_match=probability
        )
        batch = sampler.sample(24, np.random.default_rng(3))
        from_dark = [c for c in batch if _origin_is_dark(c)]
        assert 0 < len(from_dark) < len(batch)
        means[probability] = (torch.stack(from_dark).mean(dim=(0, 2, 3)) + 1.0) * 127.5
    assert torch.allclose(means[0.0], torch.tensor([50.0, 50.0, 50.0]), atol=6)
    # Recoloured with the bright source's histograms: each channel near its mean.
    assert torch.allclose(means[1.0], torch.tensor([190.0, 140.0, 90.0]), atol=6)
