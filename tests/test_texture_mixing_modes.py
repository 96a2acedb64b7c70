"""How textures fill and meet a canvas (covers: patches, rows, none; mixes: select, blend), and
adapting a model to the user's textures before mixing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TEXTURE_MIXER
from PIL import Image

from gantk.errors import GantkError
from gantk.texture import latent
from gantk.texture.adapt import adapt
from gantk.texture.mixing import Mixer
from gantk.texture.networks import TextureMixer, TextureMixerConfig
from gantk.texture.train import save_texture_mixer

pytestmark = pytest.mark.usefixtures("one_thread")


def _z(channels: int = 3, size: int = 8) -> torch.Tensor:
    """A latent whose every cell is distinct: value = cell index (so crops can be located)."""
    cells = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    return cells.repeat(1, channels, 1, 1) + torch.arange(channels).view(1, -1, 1, 1) * 1000


def test_patch_cover_is_made_of_whole_crops_of_the_latent_on_a_grid() -> None:
    z = _z()
    canvas = latent.patch_cover(z, 21, 30, (3, 5), torch.Generator().manual_seed(0))
    assert canvas.shape == (1, 3, 21, 30)
    patch = 4  # half the latent's side
    # The grid starts a whole number of patches from the origin (3, 5): rows 3, 7, 11...
    for top in range(3 % patch, 21 - patch + 1, patch):
        for left in range(5 % patch, 30 - patch + 1, patch):
            block = canvas[0, 0, top : top + patch, left : left + patch]
            y, x = divmod(int(block[0, 0]), 8)
            torch.testing.assert_close(block, z[0, 0, y : y + patch, x : x + patch])
    # Different seeds, different patches; the same seed, the same canvas.
    again = latent.patch_cover(z, 21, 30, (3, 5), torch.Generator().manual_seed(0))
    other = latent.patch_cover(z, 21, 30, (3, 5), torch.Generator().manual_seed(1))
    assert torch.equal(canvas, again) and not torch.equal(canvas, other)


def test_cover_keeps_the_placed_latent_exact_for_every_kind() -> None:
    z = _z()
    for kind in latent.COVERS:
        canvas = latent.cover(z, 20, 40, [(0, 0), (0, 32)], torch.Generator().manual_seed(2), kind)
        torch.testing.assert_close(canvas[..., :8, :8], z)
        torch.testing.assert_close(canvas[..., :8, 32:40], z)


def test_selection_gives_each_texture_its_share_in_regions() -> None:
    share = 0.3
    weights = latent.uniform_weights(120, 120, share)
    masks = latent.select_weights(weights, torch.Generator().manual_seed(0))
    torch.testing.assert_close(masks.sum(0), torch.ones(120, 120))
    # Each cell goes to texture 1 with probability 0.3 (about 400 independent blobs here: the
    # share's spread is about 0.025).
    assert abs(float(masks[1].mean()) - share) < 0.075
    # Regions, not a dither: many cells belong to one texture outright (the rest are edges).
    assert float(((masks[1] < 0.02) | (masks[1] > 0.98)).float().mean()) > 0.4


def test_selection_keeps_placed_textures_exact() -> None:
    weights = latent.palette_weights(40, 40, 8)
    masks = latent.select_weights(weights, torch.Generator().manual_seed(0))
    fixed = weights >= 1 - 1e-6
    assert fixed.any()
    torch.testing.assert_close(masks[fixed], torch.ones(int(fixed.sum())))


def test_mixer_refuses_unknown_modes() -> None:
    model = TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)).eval()
    with pytest.raises(GantkError, match="--cover must be one of patches, rows, none"):
        Mixer(model, cover="tiles")
    with pytest.raises(GantkError, match="--mix must be one of select, blend"):
        Mixer(model, mix="average")


def _textures(count: int, size: int = 32) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        yy, xx = np.mgrid[:size, :size]
        wave = (
            np.sin(xx / (1.5 + i) + yy / (2.5 + i))[None]
            * np.array([0.7, -0.3, 0.4])[:, None, None]
        )
        noisy = wave + rng.normal(0, 0.1, (3, size, size))
        out.append(torch.from_numpy(np.clip(noisy, -1, 1)).float()[None])
    return out


def test_adaptation_improves_the_reconstruction_of_the_given_textures(random_gram) -> None:
    torch.manual_seed(0)
    model = TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    textures = _textures(2)

    def error(m: TextureMixer) -> float:
        crops = torch.cat([t[..., :16, :16] for t in textures])
        with torch.no_grad():
            return float((m(crops) - crops).abs().mean())

    tuned = adapt(model, textures, 40, random_gram, seed=0, precision="fp32")
    assert error(tuned) < 0.9 * error(model)
    # On the select task (texture-mix --mix select passes it on): as good, and not the same.
    selected = adapt(model, textures, 40, random_gram, seed=0, precision="fp32", mix="select")
    assert error(selected) < 0.9 * error(model)
    a, b = selected.generator.state_dict(), tuned.generator.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # The model given stays as it was (the shipped one is never changed).
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert adapt(model, textures, 0, random_gram) is model
    with pytest.raises(GantkError, match=r"--adapt must be in 0\.\.100000"):
        adapt(model, textures, -1, random_gram)


@pytest.mark.usefixtures("fast_gram")
def test_cli_palette_with_selection_and_adaptation(cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_texture_mixer(
        tmp_path / "m.safetensors", TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)),
        "random-vgg19",
    )  # fmt: skip
    names = []
    for i, tex in enumerate(_textures(4, 40)):
        arr = ((tex[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        names.append(tmp_path / f"t{i}.png")
        Image.fromarray(arr).save(names[-1])
    out = tmp_path / "p.png"
    result = cli("texture-mix", *names, "--palette", "--size", "48", "--model", model, "--cover",
                 "patches", "--mix", "select", "--adapt", "3", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["adapt_steps"] == 3 and report["adapt_seconds"] > 0
    assert Image.open(out).size == (48, 48)
    bad = cli("texture-mix", *names, "--palette", "--model", model, "--adapt", "-2", "--out",
              tmp_path / "q.png")  # fmt: skip
    assert bad.exit_code == 2 and "--adapt must be in 0..100000" in bad.stderr
    assert not (tmp_path / "q.png").exists()


def test_adaptation_reads_a_resized_texture_without_a_torch_warning(tmp_path: Path) -> None:
    """The resized texture is a read-only array (Pillow's): torch warned about it once per run
    of texture-mix --adapt (a fresh process, as torch warns only once per process)."""
    import subprocess
    import sys

    path = tmp_path / "t.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    code = (
        "from gantk.texture.adapt import at_model_scale\n"
        f"x = at_model_scale({str(path)!r}, 16, 2.0)\n"  # a 32 px window read at 16 px
        "assert tuple(x.shape) == (1, 3, 16, 16) and float(x.min()) == -1.0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "not writable" not in done.stderr
