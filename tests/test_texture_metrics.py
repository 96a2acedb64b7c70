"""Texture interpolation metrics (SPD, CGD, CCD, CSWD) and `gantk evaluate texture`.

No pretrained weights exist on the test machine: the Gram network is the seeded random VGG-19
and LPIPS keeps its learned heads on a random trunk. The expected values below are computed
independently (numpy on the network's raw features, or constructed Gram matrices), so they
test the metric definitions, not the networks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.errors import GantkError
from gantk.texture.gram import load_gram_net
from gantk.texture.metrics import (
    alpha_blend_strip,
    cswd_floor,
    gradient_energy,
    gram_scores,
    load_texture_lpips,
    periodic_peak,
    sample_pairs,
    score_strip,
)

pytestmark = pytest.mark.usefixtures("one_thread")

R = 16  # side texture size of every test here


@pytest.fixture(scope="module")
def gram_net():
    return load_gram_net("random-vgg19")


@pytest.fixture(scope="module")
def lpips_model():
    return load_texture_lpips("random-alex")


def _images(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- the metric definitions -------------------------------------------------------------------


def test_cgd_and_ccd_match_numpy_from_raw_features(gram_net, lpips_model) -> None:
    left, right = _images(0, 1, 3, R, R), _images(1, 1, 3, R, R)
    strip = _images(2, 1, 3, R, 8 * R)
    scores = score_strip(strip, left, right, gram_net, lpips_model)

    center = strip[:, :, :, 56:72]  # columns 3.5R .. 4.5R
    with torch.no_grad():
        features = gram_net(torch.cat([left, right, center]))
    grams = []  # per layer: (3, C, C) for left, right, centre
    for f in features:
        arr = f.numpy().astype(np.float64)
        n, c, h, w = arr.shape
        flat = arr.reshape(n, c, h * w)
        grams.append(np.einsum("nci,ndi->ncd", flat, flat) / (c * h * w))

    def dist(a: int, b: int) -> float:  # Frobenius norm over all five layers together
        return float(np.sqrt(sum(((g[a] - g[b]) ** 2).sum() for g in grams)))

    expected_cgd = (dist(2, 0) + dist(2, 1)) / dist(0, 1)
    vec = [np.concatenate([g[i].ravel() for g in grams]) for i in range(3)]
    u, v = vec[2] - vec[0], vec[1] - vec[2]
    expected_ccd = 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    assert scores.cgd == pytest.approx(expected_cgd, rel=1e-4)
    assert scores.ccd == pytest.approx(expected_ccd, rel=1e-4, abs=1e-6)
    assert scores.cgd > 0 and 0 <= scores.ccd <= 2


def test_gram_scores_on_and_off_the_segment() -> None:
    gen = torch.Generator().manual_seed(0)
    left = [torch.randn(1, c, c, generator=gen, dtype=torch.float64) for c in (4, 8)]
    right = [torch.randn(1, c, c, generator=gen, dtype=torch.float64) for c in (4, 8)]

    on = [0.3 * a + 0.7 * b for a, b in zip(left, right, strict=True)]
    cgd, ccd = gram_scores(left, right, on)
    # |c-l| + |c-r| = (0.7 + 0.3) |l-r| on the segment (the triangle equality); same direction.
    assert float(cgd) == pytest.approx(1.0, rel=1e-9)
    assert float(ccd) == pytest.approx(0.0, abs=1e-9)

    beyond = [2.0 * b - a for a, b in zip(left, right, strict=True)]  # past the right texture
    assert float(gram_scores(left, right, beyond)[1]) == pytest.approx(2.0, abs=1e-9)

    off = [c + 3.0 * torch.randn(c.shape, generator=gen, dtype=c.dtype) for c in on]
    cgd_off, ccd_off = gram_scores(left, right, off)
    assert float(ccd_off) > 0.1 and float(cgd_off) > float(cgd)


def test_spd_is_zero_for_alpha_blending_and_positive_for_a_wrong_end(gram_net, lpips_model) -> None:
    left, right = _images(3, 1, 3, R, R), _images(4, 1, 3, R, R)
    strip = alpha_blend_strip(left, right, 8 * R)
    assert score_strip(strip, left, right, gram_net, lpips_model).spd == 0.0
    wrong = strip.clone()
    wrong[..., -R:] = _images(5, 1, 3, R, R)
    assert score_strip(wrong, left, right, gram_net, lpips_model).spd > 1e-3


def test_gradient_energy_is_the_mean_squared_neighbour_difference_of_luminance() -> None:
    image = _images(8, 1, 3, 5, 7)
    luma = (image[0].double() * torch.tensor([0.299, 0.587, 0.114]).double().view(3, 1, 1)).sum(0)
    rows = np.diff(luma.numpy(), axis=1) ** 2
    cols = np.diff(luma.numpy(), axis=0) ** 2
    assert gradient_energy(image) == pytest.approx((rows.mean() + cols.mean()) / 2, rel=1e-6)
    assert gradient_energy(torch.full((1, 3, 4, 4), 0.3)) == 0.0


def test_sharpness_is_one_for_the_textures_own_detail_and_about_half_for_alpha_blending(
    gram_net, lpips_model
) -> None:
    left, right = _images(11, 1, 3, R, R), _images(12, 1, 3, R, R)
    # The texture tiled along the strip: the middle crop is the texture (cut and rejoined once).
    same = score_strip(left.repeat(1, 1, 1, 8), left, left, gram_net, lpips_model)
    assert 0.9 < same.sharpness < 1.1
    # Averaging two unrelated noise textures halves the energy in the middle (weights 1/2 each:
    # 1/4 + 1/4 of the two energies); the middle crop's weights run from about 0.44 to 0.56.
    blended = score_strip(alpha_blend_strip(left, right, 8 * R), left, right, gram_net, lpips_model)
    assert 0.4 < blended.sharpness < 0.65


def test_alpha_blend_strip_ends_and_middle() -> None:
    left, right = _images(6, 1, 3, R, R), _images(7, 1, 3, R, R)
    length = 3 * R + 1  # odd: one middle column, where the ramp is exactly one half
    strip = alpha_blend_strip(left, right, length)
    assert strip.shape == (1, 3, R, length)
    assert torch.equal(strip[..., :R], left)
    assert torch.equal(strip[..., -R:], right)
    middle = length // 2  # 24: left's column 24 % 16, right's copy starts at column 33
    expected = (left[..., middle % R] + right[..., (middle - (length - R)) % R]) / 2
    torch.testing.assert_close(strip[..., middle], expected)


# --- the command ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gantk.texture.networks import TextureMixer, TextureMixerConfig
    from gantk.texture.train import save_texture_mixer

    config = TextureMixerConfig(
        resolution=R, latent_channels=4, global_dim=4, channels=8, res_blocks=1, d_channels=4
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "mixer.safetensors"
    return save_texture_mixer(path, TextureMixer(config), "random-vgg19")


def _texture_folder(path: Path, size: int, count: int = 3) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path / f"t{i}.png")
    return path


def test_cli_evaluates_both_methods(cli, tiny_model: Path, tmp_path: Path) -> None:
    textures = _texture_folder(tmp_path / "textures", 48)
    grid = tmp_path / "strips.png"
    result = cli(
        "evaluate", "texture", tiny_model, textures, "--pairs", "2", "--json",
        "--device", "cpu", "--samples", grid,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    # No weight files here: auto falls back to the random networks, and says so.
    assert "random-vgg19" in result.stderr and "random-lpips-alex" in result.stderr
    assert "cis[random-inception]" in result.stderr
    # The bundled classifiers are for 64 px models: CSS and CRS are skipped, with a warning
    # (tests/test_texture_classifiers.py runs them with classifiers of this size).
    assert "no CSS/CRS" in result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["methods"]) == {"ours", "alpha"}
    assert summary["networks"]["gram"]["network"] == "random-vgg19"
    assert summary["networks"]["lpips"]["network"] == "random-lpips-alex"
    names = ["spd[random-lpips-alex]", "cgd[random-vgg19]", "ccd[random-vgg19]",
             "cis[random-inception]", "cswd", "sharpness", "seconds"]  # fmt: skip
    assert summary["metrics"] == [*names, "grid", "grid_real"]
    assert summary["grid_period_px"] == 4  # one latent cell is 4 px
    assert summary["mixing"] == {"cover": "patches", "mix": "select", "deblock": True}
    from gantk.texture.data import load_texture_sources

    _, real = sample_pairs(load_texture_sources(str(textures), "all"), R, 2, seed=0)
    assert summary["cswd_floor"] == cswd_floor(load_texture_sources(str(textures), "all"), real)
    # Two crops are far too few: the CSWD of both methods sits at the floor, and it says so.
    assert f"noise floor at 2 crops ({summary['cswd_floor']:.4g}" in result.stderr
    assert "raise --pairs" in result.stderr
    for values in summary["methods"].values():
        stds = {n + "_std" for n in names if n not in ("cswd", "cis[random-inception]")}
        assert set(values) == {*names, *stds, "grid", "grid_real"}
        assert all(np.isfinite(v) for v in values.values())
    # The real crops' grid is the same reference for every method.
    assert summary["methods"]["ours"]["grid_real"] == summary["methods"]["alpha"]["grid_real"]
    assert summary["methods"]["alpha"]["spd[random-lpips-alex]"] == 0.0
    assert summary["strip"] == [R, 8 * R] and summary["split"] == "all"
    with Image.open(grid) as img:  # 2 pairs x 2 methods, one strip per row, 2 px padding
        assert img.size == (8 * R + 4, 4 * (R + 2) + 2)


def _unlike_textures(path: Path, size: int = 40) -> Path:
    """Four textures with nothing in common: dark and smooth, bright noise, stripes, checks."""
    path.mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    grey = {
        "smooth": 40 + 10 * np.sin(xx / 7.0),
        "noise": rng.uniform(150, 255, (size, size)),
        "stripes": 128 + 120 * np.sign(np.sin(xx * 1.3)),
        "checks": 255.0 * ((xx // 3 + yy // 3) % 2),
    }
    for name, g in grey.items():
        rgb = np.repeat(g[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(path / f"{name}.png")
    return path


def test_cswd_floor_is_what_sampling_alone_gives_and_falls_with_the_count(tmp_path) -> None:
    from gantk.texture.data import load_texture_sources

    sources = load_texture_sources(str(_unlike_textures(tmp_path / "t")), "all")
    floors = {}
    for count in (6, 96):
        _, real = sample_pairs(sources, R, count, seed=0)
        floors[count] = cswd_floor(sources, real, seed=0)
        assert cswd_floor(sources, real, seed=0) == floors[count]  # deterministic
        # Another seed draws another second set (the first set fixed): another value.
        assert cswd_floor(sources, real, seed=5) != floors[count]
    # Few crops of four unlike textures: the two draws hold them in different shares.
    assert floors[6] > 0 and floors[96] < 0.6 * floors[6]


def test_cli_refuses_a_model_of_another_kind(cli, tmp_path: Path) -> None:
    from gantk.fingerprint.stego import KIND
    from gantk.io.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "stego.safetensors", {"w": torch.zeros(1)}, KIND, {})
    textures = _texture_folder(tmp_path / "textures", 48)
    line = error_line(cli("evaluate", "texture", other, textures, "--device", "cpu"))
    assert "holds a stego" in line
    assert "gantk train texture" in line and "builtin:texture-mixer" in line


def test_cli_refuses_textures_smaller_than_the_model(cli, tiny_model: Path, tmp_path) -> None:
    textures = _texture_folder(tmp_path / "small", 12)
    line = error_line(cli("evaluate", "texture", tiny_model, textures, "--device", "cpu"))
    assert "12x12 px" in line and f"model's {R} px" in line


def test_cli_refuses_an_unknown_method(cli, tiny_model: Path, tmp_path: Path) -> None:
    textures = _texture_folder(tmp_path / "textures", 48)
    args = ("evaluate", "texture", tiny_model, textures, "--methods", "ours,bogus")
    line = error_line(cli(*args))
    assert "'bogus'" in line and "ours, alpha" in line


def test_cli_standard_lpips_without_weights_names_the_file(cli, tiny_model, tmp_path) -> None:
    textures = _texture_folder(tmp_path / "textures", 48)
    args = ("evaluate", "texture", tiny_model, textures, "--lpips-net", "alex", "--device", "cpu")
    assert "alexnet-owt-7be5be79.pth" in error_line(cli(*args, "--gram-net", "random-vgg19"))


def test_periodic_peak_finds_grid_lines_at_the_cell_period() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 64, 256, generator=gen) * 2 - 1
    plain = periodic_peak(noise, 4)
    lined = noise.clone()
    lined[..., ::4, :] += 0.5  # a horizontal line every 4 rows
    with_lines = periodic_peak(lined, 4)
    assert plain < 10 < 100 < with_lines
    assert periodic_peak(lined.transpose(-1, -2), 4) == pytest.approx(with_lines)  # columns
    # Lines at another period do not count as this period's grid.
    other = noise.clone()
    other[..., ::7, :] += 0.5
    assert periodic_peak(other, 4) < 10
    # Against an independent computation: a pure cosine at the period over white noise.
    y = torch.arange(64, dtype=torch.float64)
    wave = noise + 0.3 * torch.cos(2 * torch.pi * y / 4)[:, None]
    profile = wave.double().mean(dim=(0, 1)).mean(dim=1).numpy()
    windowed = (profile - profile.mean()) * np.hanning(64)
    power = np.abs(np.fft.rfft(windowed)) ** 2
    around = np.concatenate([power[8:15], power[18:25]])
    assert periodic_peak(wave, 4) >= power[16] / np.median(around) * (1 - 1e-9)
    with pytest.raises(GantkError, match="too small"):
        periodic_peak(noise[..., :6, :6], 4)
