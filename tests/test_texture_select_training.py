"""The Texture Mixer's interpolation task with ``mix`` select (`gantk train texture --mix`):
the latent each cell decodes is one texture's, in the regions texture-mix draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TEXTURE_MIXER, error_line
from PIL import Image

from gantk.texture.networks import TextureMixer, TextureMixerConfig
from gantk.texture.train import interpolation_crop

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_ARGS = [
    "--resolution", "16", "--channels", "8", "--latent-channels", "4", "--global-dim", "4",
    "--res-blocks", "1", "--d-channels", "4", "--batch-size", "2", "--snapshot-every", "2",
    "--gram-net", "random-vgg19", "--device", "cpu",
]  # fmt: skip


class _Recorder(TextureMixer):
    """Encodes S1 as all +1 latents and S2 as all -1 (global codes +2 and -2) and records what
    the generator is asked to decode: the canvas is then 2w - 1 for S1's weight w."""

    def encode(self, x: torch.Tensor):  # type: ignore[override]
        n = x.shape[0] // 2
        size = self.config.latent_size
        sign = torch.cat([torch.ones(n), -torch.ones(n)])[:, None, None, None]
        local = sign.expand(-1, self.config.latent_channels, size, size).clone()
        return local, 2 * sign[:, :, 0, 0].expand(-1, self.config.global_dim).clone()

    def decode(self, z_local: torch.Tensor, z_global: torch.Tensor | None):  # type: ignore[override]
        self.seen = (z_local, z_global)
        return super().decode(z_local, z_global)


def _crop(mix: str, batch: int, seed: int = 0):
    torch.manual_seed(0)
    model = _Recorder(TextureMixerConfig(**TINY_TEXTURE_MIXER))
    s = torch.zeros(batch, 3, 16, 16)
    with torch.no_grad():
        crop, alpha = interpolation_crop(model, s, s, torch.Generator().manual_seed(seed), mix=mix)
    return crop, alpha, *model.seen


def test_select_gives_each_cell_one_texture_in_shares_that_follow_alpha() -> None:
    crop, alpha, local, glob = _crop("select", batch=48)
    assert crop.shape == (48, 3, 16, 16) and alpha.shape == (48,)
    w = (local + 1) / 2  # S1's weight per cell and channel
    assert torch.allclose(w, w[:, :1].expand_as(w))  # every channel alike
    w = w[:, 0]
    assert w.shape == (48, 12, 12)  # 3x3 tiles of the 4x4 latent
    assert float(w.min()) >= -1e-6 and float(w.max()) <= 1 + 1e-6
    # Regions, not an average: edges are feathered over about a cell, the rest is one texture.
    # (An average at alpha ~ U(0, 1) would put a fifth of the cells this near 0 or 1.)
    near_pure = ((w - 0.5).abs() > 0.4).float().mean()
    assert near_pure > 0.6
    # The shares follow alpha (each cell S1's with probability alpha, neighbours agreeing).
    share = w.mean(dim=(1, 2))
    assert np.corrcoef(alpha.numpy(), share.numpy())[0, 1] > 0.8
    assert abs(float((share - alpha).mean())) < 0.1
    # The global code follows the same regions: +2 where S1's, -2 where S2's.
    assert torch.allclose(glob, 2 * (2 * w[:, None] - 1).expand_as(glob), atol=1e-6)


def test_blend_is_the_papers_average_of_the_two_latents() -> None:
    _, alpha, local, glob = _crop("blend", batch=6)
    expected = (2 * alpha - 1)[:, None, None, None].expand_as(local)
    assert torch.allclose(local, expected, atol=1e-6)  # one alpha over the whole canvas
    assert torch.allclose(glob, (2 * expected[:, :1]).expand_as(glob), atol=1e-6)


def test_the_draws_depend_on_the_generator_only() -> None:
    first, second, other = _crop("select", 4, 3), _crop("select", 4, 3), _crop("select", 4, 4)
    assert torch.equal(first[2], second[2]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[2], other[2])


@pytest.fixture(scope="module")
def textures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("select_textures")
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"t{i}.png")
    return root


def _saved_mix(run: Path) -> str:
    from gantk.io.checkpoint import load_training_state
    from gantk.texture.train import STATE_KIND

    return load_training_state(run / "state.safetensors", STATE_KIND)[1]["mix"]


@pytest.mark.usefixtures("fast_gram")
def test_cli_trains_select_and_switches_a_blend_run_on_resume(cli, textures, tmp_path) -> None:
    run = tmp_path / "select"
    result = cli("train", "texture", textures, "--out", run, *TRAIN_ARGS, "--steps", 2,
                 "--mix", "select", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert np.isfinite(json.loads(result.stdout)["l1"])
    assert json.loads((run / "config.json").read_text())["mix"] == "select"

    blend = tmp_path / "blend"
    result = cli("train", "texture", textures, "--out", blend, *TRAIN_ARGS, "--steps", 2)
    assert result.exit_code == 0, result.stderr
    assert _saved_mix(blend) == "blend"  # the paper's, for a new run
    # Resumed without --mix: the run keeps its task; with it: the task switches.
    result = cli("train", "texture", "--out", blend, "--resume", "--steps", 4, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert _saved_mix(blend) == "blend"
    result = cli("train", "texture", "--out", blend, "--resume", "--steps", 6, "--mix", "select",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert _saved_mix(blend) == "select"


def test_cli_refuses_an_unknown_mix(cli, textures, tmp_path) -> None:
    run = tmp_path / "run"
    line = error_line(cli("train", "texture", textures, "--out", run, *TRAIN_ARGS, "--mix", "grey"))
    assert "--mix must be one of select, blend, got 'grey'" in line
    assert not run.exists()
