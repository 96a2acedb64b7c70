"""Removing the latent-cell grid (gantk.texture.deblock) and its place in the Mixer."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_TEXTURE_MIXER

from gantk.texture.deblock import deblock
from gantk.texture.mixing import Mixer
from gantk.texture.networks import TextureMixer, TextureMixerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

N = 256


def _ramp(size: int = N) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    colours = torch.tensor([0.003, -0.002, 0.001])[:, None, None]
    return (colours * xx + 0.002 * yy - 0.4)[None]


def _pattern(period: int = 4, size: int = N, seed: int = 0) -> torch.Tensor:
    """A zero-mean pattern of period x period pixels, tiled from pixel 0 (a mean would be the
    image's brightness, not a pattern)."""
    cell = torch.randn(1, 3, period, period, generator=torch.Generator().manual_seed(seed))
    cell = cell - cell.mean(dim=(2, 3), keepdim=True)
    return 0.1 * cell.repeat(1, 1, size // period, size // period)


def test_smooth_gradients_pass_unchanged() -> None:
    ramp = _ramp()
    assert torch.allclose(deblock(ramp, 4), ramp, atol=1e-6)


def test_a_cell_pattern_is_removed_exactly_inside_and_mostly_at_the_borders() -> None:
    ramp, pattern = _ramp(), _pattern()
    left = deblock(ramp + pattern, 4) - ramp
    inside = left[..., 64:-64, 64:-64]  # more than two sigmas (2 x 4 cells x 4 px) in
    assert float(inside.abs().max()) < 1e-5
    assert float(left.abs().max()) < 0.15 * float(pattern.abs().max())
    # Noise (no period) over the pattern: the pattern still goes, the noise mostly stays.
    noise = 0.2 * torch.randn(1, 3, N, N, generator=torch.Generator().manual_seed(1))
    cleaned = deblock(ramp + pattern + noise, 4) - ramp
    error = (cleaned - noise)[..., 32:-32, 32:-32]
    assert float(error.square().mean()) < 0.1 * float(pattern.square().mean())
    assert float(cleaned.square().mean()) > 0.9 * float(noise.square().mean())


def test_margins_and_small_images_are_left_alone_and_odd_periods_refused() -> None:
    image = torch.randn(2, 3, 70, 45, generator=torch.Generator().manual_seed(2))
    out = deblock(image, 4)
    assert out.shape == image.shape
    assert torch.equal(out[:, :, 68:], image[:, :, 68:])
    assert torch.equal(out[..., 44:], image[..., 44:])
    assert not torch.equal(out[:, :, :68, :44], image[:, :, :68, :44])
    tiny = torch.randn(1, 3, 6, 64)  # one row of cells: nothing to average over
    assert torch.equal(deblock(tiny, 4), tiny)
    with pytest.raises(ValueError, match="even period"):
        deblock(image, 3)


def test_the_mixer_deblocks_the_canvas_it_decodes() -> None:
    torch.manual_seed(0)
    model = TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)).eval()
    textures = [torch.rand(1, 3, 16, 16) * 2 - 1 for _ in range(2)]
    plain = Mixer(model, cover="patches", mix="select").strip(textures, 64, seed=3)
    cleaned = Mixer(model, cover="patches", mix="select", deblock=True).strip(textures, 64, 3)
    assert plain.shape == cleaned.shape == (1, 3, 16, 64)
    # 16 x 64 px is a whole number of 4 px cells: the canvas decoded is the strip.
    assert torch.allclose(cleaned, deblock(plain, 4), atol=1e-6)
    assert float((cleaned - plain).abs().max()) > 1e-4


def test_cli_deblocks_by_default_and_not_with_no_deblock(cli, tmp_path) -> None:
    import json

    import numpy as np
    from PIL import Image

    from gantk.texture.train import save_texture_mixer

    torch.manual_seed(0)
    model = save_texture_mixer(
        tmp_path / "m.safetensors", TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)),
        "random-vgg19",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    names = []
    for i in range(2):
        names.append(tmp_path / f"t{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(names[-1])
    outs = {}
    for flag in ("--deblock", "--no-deblock"):
        outs[flag] = tmp_path / f"{flag}.png"
        extra = [flag] if flag == "--no-deblock" else []  # the default: deblocked
        result = cli("texture-mix", *names, "--length", "64", "--model", model, "--device",
                     "cpu", "--out", outs[flag], "--json", *extra)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["deblock"] is (flag == "--deblock")
    with Image.open(outs["--deblock"]) as a, Image.open(outs["--no-deblock"]) as b:
        assert a.size == b.size == (64, 16)
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() > 0
