"""NVIDIA StyleGAN2-ADA models converted: the same numbers as NVIDIA's code on its own fixtures
(made with that code: ../shared/fixtures/stylegan2-ada), the same latents for the same seeds,
and one-line errors for what gantk does not compute."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.gan.generate import load_generator
from gantk.gan.networks import Generator, NetworkConfig, with_resampling_of
from gantk.gan.nvidia import convert, load_discriminator
from gantk.io.checkpoint import read_metadata, save_checkpoint
from gantk.nn.resample import upsample2d

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2-ada"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason="../shared/fixtures is absent (a bare clone)"
)


@needs_fixtures
def test_converted_networks_compute_what_nvidia_computes() -> None:
    ref = np.load(FIXTURES / "sg2ada-tiny-32-reference.npz")
    converted = convert(FIXTURES / "sg2ada-tiny-32.pkl")
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        np.testing.assert_allclose(converted.G.mapping(z).numpy(), ref["ws"], rtol=0, atol=1e-4)
        for psi in (1.0, 0.7):
            img = converted.G(z, psi=psi, noise_mode="const").numpy()
            np.testing.assert_allclose(img, ref[f"img_psi{psi}"], rtol=0, atol=1e-4)
        logits = converted.D(torch.from_numpy(ref["img_psi1.0"])).numpy()
    np.testing.assert_allclose(logits, ref["d_logits"].reshape(-1), rtol=0, atol=1e-4)
    assert converted.config.conv_clamp == 256 and converted.config.mapping_layers == 2


@needs_fixtures
def test_convert_command_then_generate_gives_nvidias_images_for_its_seeds(cli, tmp_path):
    ref = np.load(FIXTURES / "sg2ada-tiny-32-reference.npz")
    g, d = tmp_path / "g.safetensors", tmp_path / "d.safetensors"
    result = cli("convert", FIXTURES / "sg2ada-tiny-32.pkl", "--out", g, "--discriminator", d,
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    source = summary["source"]
    assert source["G_kwargs"]["synthesis_kwargs"]["architecture"] == "skip"
    import hashlib

    digest = hashlib.sha256((FIXTURES / "sg2ada-tiny-32.pkl").read_bytes()).hexdigest()
    assert source["sha256"] == digest and read_metadata(g)["gantk.source_sha256"] == digest
    assert read_metadata(g)["gantk.latents"] == "numpy-randomstate"
    # the latents for seeds 0-3 are NVIDIA's
    G = load_generator(g)
    from gantk.gan.generate import latents_for

    np.testing.assert_array_equal(latents_for([0, 1, 2, 3], G).numpy(), ref["z"])
    out = tmp_path / "images"
    assert cli("generate", g, "--seeds", "0-3", "--out", out, "--quiet").exit_code == 0
    expected = np.clip(np.round((ref["img_psi1.0"] + 1) * 127.5), 0, 255).astype(np.int16)
    made = [np.asarray(Image.open(p), dtype=np.int16) for p in sorted(out.glob("*.png"))]
    assert len(made) == 4
    for image, reference in zip(made, expected, strict=True):
        assert np.abs(image - reference.transpose(1, 2, 0)).max() <= 1  # uint8 rounding only
    D = load_discriminator(d)
    with torch.no_grad():
        logits = D(torch.from_numpy(ref["img_psi1.0"])).numpy()
    np.testing.assert_allclose(logits, ref["d_logits"].reshape(-1), atol=1e-4)


@needs_fixtures
def test_what_gantk_does_not_compute_is_one_line(cli, tmp_path) -> None:
    out = tmp_path / "g.safetensors"
    line = error_line(cli("convert", FIXTURES / "sg2ada-tiny-32-cond.pkl", "--out", out))
    assert "class labels (c_dim 4), which gantk does not compute" in line
    assert not out.exists()


class Payload:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_convert_refuses_a_pickle_that_would_run_code(cli, tmp_path) -> None:
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps({"G_ema": Payload(marker)}))
    out = tmp_path / "g.safetensors"
    line = error_line(cli("convert", model, "--out", out))
    assert "refused without running it" in line
    assert not marker.exists() and not out.exists()


def test_runs_from_before_saved_filters_keep_their_upsampling(tmp_path) -> None:
    """gantk 0.1 correlated after upsampling; its checkpoints (no resampling filters) still
    compute that, while new ones compute the reference's flipped, wider-padded convolution."""
    config = NetworkConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                           channel_max=4)  # fmt: skip
    torch.manual_seed(0)
    G = Generator(config).eval()
    old = {k: v for k, v in G.state_dict().items() if not k.endswith("resample_filter")}
    path = save_checkpoint(tmp_path / "old.safetensors", old, "gan-generator",
                           {"network": config.to_dict()})  # fmt: skip
    legacy = load_generator(path)
    assert legacy.config.resampling == "gantk-0.1"
    assert with_resampling_of(config, G.state_dict()).resampling == "reference"
    layer = legacy.blocks[1].conv0
    x, w = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    with torch.no_grad():
        styles = layer.affine(w)
        weight = layer.weight * layer.weight_gain
        wmod = weight[None] * styles[:, None, :, None, None]
        wmod = wmod * (wmod.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
        up = upsample2d(x, layer.resample_filter)
        by_hand = torch.cat([torch.nn.functional.conv2d(up[i : i + 1], wmod[i], padding=1)
                             for i in range(2)])  # fmt: skip
        by_hand = layer.add_noise(by_hand, "const")
        by_hand = torch.nn.functional.leaky_relu(by_hand + layer.bias[None, :, None, None], 0.2)
        assert torch.allclose(layer(x, w, "const"), by_hand * 2**0.5, atol=1e-5)
        new = Generator(config).eval()
        new.load_state_dict(G.state_dict())
        assert not torch.allclose(new.blocks[1].conv0(x, w, "const"), by_hand * 2**0.5, atol=1e-3)
