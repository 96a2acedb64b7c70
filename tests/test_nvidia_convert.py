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
    from gantk.gan.sampling import latents_for

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
def test_conditional_models_compute_what_nvidia_computes(cli, tmp_path) -> None:
    ref = np.load(FIXTURES / "sg2ada-tiny-32-cond-reference.npz")
    converted = convert(FIXTURES / "sg2ada-tiny-32-cond.pkl")
    assert converted.config.c_dim == 4
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        for psi in (1.0, 0.7):
            img = converted.G(z, psi=psi, noise_mode="const", c=c).numpy()
            np.testing.assert_allclose(img, ref[f"img_psi{psi}"], rtol=0, atol=1e-4)
        logits = converted.D(torch.from_numpy(ref["img_psi1.0"]), c=c).numpy()
    np.testing.assert_allclose(logits, ref["d_logits"].reshape(-1), rtol=0, atol=1e-4)
    # the CLI: seed s of class s % 4 is NVIDIA's image; no class, or a wrong one, is one line
    g = tmp_path / "cond.safetensors"
    assert cli("convert", FIXTURES / "sg2ada-tiny-32-cond.pkl", "--out", g).exit_code == 0
    for seed in range(4):
        out = tmp_path / f"class{seed}"
        result = cli("generate", g, "--seeds", str(seed), "--class", str(seed % 4), "--out", out)
        assert result.exit_code == 0, result.stderr
        made = np.asarray(Image.open(next(out.glob("*.png"))), dtype=np.int16)
        expected = np.clip(np.round((ref["img_psi1.0"][seed] + 1) * 127.5), 0, 255)
        assert np.abs(made - expected.transpose(1, 2, 0)).max() <= 1
    assert "class-conditional (4 classes): give a class" in error_line(
        cli("generate", g, "--seeds", "0", "--out", tmp_path / "none")
    )
    assert "has 4 classes, 0..3" in error_line(
        cli("generate", g, "--seeds", "0", "--class", "4", "--out", tmp_path / "none")
    )
    assert "is class-conditional; gantk trains unconditional GANs" in error_line(
        cli("train", "gan", "builtin:shapes", "--init", g, "--out", tmp_path / "run")
    )


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


def _tiny_pair(tmp_path: Path) -> tuple[Path, Path, NetworkConfig]:
    from gantk.gan.networks import Discriminator
    from gantk.gan.nvidia import DISCRIMINATOR_KIND

    config = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                           channel_max=8, conv_clamp=256.0)  # fmt: skip
    torch.manual_seed(3)
    g = save_checkpoint(tmp_path / "g.safetensors", Generator(config).state_dict(),
                        "gan-generator", {"network": config.to_dict()})  # fmt: skip
    d = save_checkpoint(tmp_path / "d.safetensors", Discriminator(config).state_dict(),
                        DISCRIMINATOR_KIND, {"network": config.to_dict()})  # fmt: skip
    return g, d, config


def test_training_starts_from_a_model(cli, tmp_path) -> None:
    from gantk.gan.config import TrainConfig
    from gantk.gan.run import start_from
    from gantk.gan.trainer import Trainer
    from gantk.io.checkpoint import load_checkpoint

    g, d, config = _tiny_pair(tmp_path)
    trainer = Trainer(TrainConfig(data="builtin:shapes?n=32", out=str(tmp_path / "lib"),
                                  network=config, batch_size=8, device="cpu", init=str(g),
                                  init_discriminator=str(d)), log=lambda _: None)  # fmt: skip
    start_from(trainer, trainer.cfg)
    for net, path in ((trainer.G, g), (trainer.G_ema, g), (trainer.D, d)):
        given = load_checkpoint(path).tensors
        assert all(torch.equal(net.state_dict()[k], v) for k, v in given.items())
    run = tmp_path / "run"
    result = cli("train", "gan", "builtin:shapes?n=32", "--init", g, "--init-discriminator", d,
                 "--kimg", "0.016", "--batch-size", "8", "--device", "cpu", "--out", run,
                 "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    saved = json.loads((run / "train-config.json").read_text())
    assert saved["init"] == str(g) and saved["network"]["conv_clamp"] == 256.0


def test_init_errors(cli, tmp_path) -> None:
    g, d, _ = _tiny_pair(tmp_path)
    run = tmp_path / "run"
    base = ["train", "gan", "builtin:shapes?n=32", "--out", run, "--device", "cpu"]
    assert "--init takes the network from" in error_line(cli(*base, "--init", g, "--w-dim", "16"))
    assert "makes 16x16 images, not 32x32" in error_line(
        cli(*base, "--init", g, "--resolution", "32")
    )
    assert "goes with --init" in error_line(cli(*base, "--init-discriminator", d))
    other = tmp_path / "other"
    other.mkdir()
    config = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                           channel_max=16)  # fmt: skip
    from gantk.gan.networks import Discriminator
    from gantk.gan.nvidia import DISCRIMINATOR_KIND

    wider = save_checkpoint(other / "wide.safetensors", Discriminator(config).state_dict(),
                            DISCRIMINATOR_KIND, {"network": config.to_dict()})  # fmt: skip
    assert "does not fit the generator" in error_line(
        cli(*base, "--init", g, "--init-discriminator", wider, "--kimg", "0.016")
    )
    assert not run.exists() or not (run / "latest.safetensors").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"synthesis_kwargs": {"architecture": "progressive"}},
         "the 'progressive' generator architecture"),
        ({"img_channels": 1}, "1 channels"),
        ({"synthesis_kwargs": {"resample_filter": [1, 2, 1]}}, "another resampling filter"),
        ({"mapping_kwargs": {"num_layers": 2, "lr_multiplier": 0.1}},
         "another mapping learning-rate multiplier"),
        ({"img_resolution": 48}, "does not fit gantk's networks"),
    ],
)  # fmt: skip
def test_unsupported_settings_are_named(change, message) -> None:
    from gantk.errors import GantkError
    from gantk.gan.nvidia import network_config

    g_kwargs = {"z_dim": 64, "w_dim": 64, "c_dim": 0, "img_resolution": 32, "img_channels": 3,
                "mapping_kwargs": {"num_layers": 2},
                "synthesis_kwargs": {"channel_base": 1024, "channel_max": 64}}  # fmt: skip
    g_kwargs.update(change)
    with pytest.raises(GantkError, match=message.replace("(", r"\(").replace("[", r"\[")):
        network_config(g_kwargs, None)


@needs_fixtures
def test_fddf_of_a_converted_pair(cli, tmp_path) -> None:
    from gantk.gan.fddf import fddf
    from gantk.io.datasets import open_dataset

    g, d = tmp_path / "g.safetensors", tmp_path / "d.safetensors"
    assert cli("convert", FIXTURES / "sg2ada-tiny-32.pkl", "--out", g, "--discriminator", d,
               "--quiet").exit_code == 0  # fmt: skip
    result = cli("evaluate", "fddf", g, "builtin:shapes", "-n", "40", "--discriminator", d,
                 "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    value = json.loads(result.stdout)["metrics"]["fddf"]
    data = open_dataset("builtin:shapes", resolution=32, allow_upscale=True)
    direct = fddf(load_discriminator(d), load_generator(g), data, 40, 64, seed=0)
    assert value == pytest.approx(direct, rel=1e-9)
    assert "also needs its discriminator" in error_line(
        cli("evaluate", "fddf", g, "builtin:shapes", "-n", "40")
    )


ARCH_DATA = Path(__file__).parent / "data" / "nvidia-arch"


@pytest.mark.parametrize("name", ["g-resnet-d-skip", "g-orig-d-orig"])
def test_the_other_architectures_compute_what_nvidia_computes(name) -> None:
    """StyleGAN2's resnet and orig generators and skip and orig discriminators, against outputs
    of NVIDIA's code stored as data in tests/data/nvidia-arch (see make_reference.py there)."""
    from safetensors.torch import load_file

    from gantk.gan.nvidia import convert_networks

    tensors = load_file(ARCH_DATA / f"{name}.safetensors")
    kwargs = json.loads((ARCH_DATA / f"{name}.json").read_text())
    ref = np.load(ARCH_DATA / f"{name}-reference.npz")
    part = lambda prefix: {k[2:]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    converted = convert_networks(kwargs["G_kwargs"], part("G."), kwargs["D_kwargs"], part("D."),
                                 {})  # fmt: skip
    g_arch = kwargs["G_kwargs"]["synthesis_kwargs"]["architecture"]
    assert (converted.config.g_arch, converted.config.d_arch) == (
        g_arch, kwargs["D_kwargs"]["architecture"]
    )  # fmt: skip
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        np.testing.assert_allclose(converted.G.mapping(z).numpy(), ref["ws"], atol=1e-4, rtol=0)
        for psi in (1.0, 0.7):
            img = converted.G(z, psi=psi, noise_mode="const").numpy()
            np.testing.assert_allclose(img, ref[f"img_psi{psi}"], atol=1e-4, rtol=0)
        logits = converted.D(torch.from_numpy(ref["img_psi1.0"])).numpy()
    np.testing.assert_allclose(logits, ref["d_logits"].reshape(-1), atol=1e-4, rtol=0)
    # only the last generator block draws RGB outside the skip architecture
    assert [hasattr(b, "torgb") for b in converted.G.blocks] == [False, False, True]
