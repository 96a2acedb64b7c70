"""`gantk project`: an image the generator made is recovered to a small LPIPS, the latents file
renders the same reconstruction again (`generate --latents`), the noise regulariser against a
hand computation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import error_line
from PIL import Image

from gantk.gan.networks import Generator, NetworkConfig
from gantk.gan.projector import noise_regularizer, project, w_statistics
from gantk.io.checkpoint import save_checkpoint
from gantk.metrics.lpips_metric import load_lpips, lpips_distance, to_unit_range

pytestmark = pytest.mark.usefixtures("one_thread")

ALEX_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / ALEX_FILE
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Generator, Path]:
    torch.manual_seed(3)
    config = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                           channel_max=8)  # fmt: skip
    G = Generator(config).eval().requires_grad_(False)
    path = tmp_path_factory.mktemp("g") / "g.safetensors"
    save_checkpoint(path, G.state_dict(), "gan-generator", {"network": config.to_dict()})
    return G, path


def _made_by(G: Generator, seed: int) -> torch.Tensor:
    """A uint8 image G draws from a w near its average (a reachable target)."""
    w_avg, _ = w_statistics(G)
    w = G.mapping(torch.randn(1, 8, generator=torch.Generator().manual_seed(seed)))[:, 0]
    w = w_avg + 0.7 * (w - w_avg)
    img = G.synthesis(w[:, None].expand(1, G.num_ws, -1), noise_mode="const")[0]
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte()


def test_an_image_the_generator_made_is_recovered(generator, alex_file: Path) -> None:
    G, _ = generator
    model = load_lpips("alex", alex_file)
    target = _made_by(G, 1)
    start = project(G, target, model, steps=1, lr=1e-9, noise_weight=0)
    found = project(G, target, model, steps=150, lr=0.05, noise_weight=0)
    assert found.distance < 0.2 * start.distance
    assert found.distance < 0.05
    # The reported distance is the reconstruction's own.
    with torch.no_grad():
        image = G.synthesis(found.ws[None], noise_mode="const")
        t = to_unit_range(target[None])
        assert float(lpips_distance(model, image, t)) == pytest.approx(found.distance, rel=1e-5)


def test_noise_regularizer_by_hand() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(16, 16), torch.randn(8, 8)]
    want = torch.zeros([])
    for m in maps:
        x = m
        while True:
            want += (x * x.roll(1, dims=1)).mean() ** 2 + (x * x.roll(1, dims=0)).mean() ** 2
            if x.shape[0] <= 8:
                break
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(dim=(1, 3))
    assert float(noise_regularizer(maps)) == pytest.approx(float(want), rel=1e-5)
    # White noise has little autocorrelation; a constant map has the most.
    assert float(noise_regularizer([torch.ones(16, 16)])) > 100 * float(noise_regularizer(maps))


def test_project_cli_writes_and_generate_renders_again(
    cli, generator, alex_file: Path, tmp_path: Path
) -> None:
    G, model_path = generator
    images = tmp_path / "images"
    images.mkdir()
    for seed in (1, 2):
        array = _made_by(G, seed).permute(1, 2, 0).numpy()
        Image.fromarray(array).save(images / f"img{seed}.png")
    out = tmp_path / "projected"
    result = cli("project", str(images), "--model", str(model_path), "--out", str(out),
                 "--steps", "20", "--lpips-net", "alex", "--lpips-weights", str(alex_file),
                 "--wplus", "--gif", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["space"] == "w+" and set(summary["images"]) == {"img1", "img2"}
    for name in ("img1.png", "img2.png", "img1-progress.gif", "latents.npz", "projection.json"):
        assert (out / name).is_file(), name
    with np.load(out / "latents.npz") as data:
        assert data["ws"].shape == (2, G.num_ws, 8)
        assert any(key.startswith("noise/") for key in data.files)
    rendered = tmp_path / "rendered"
    again = cli("generate", str(model_path), "--latents", str(out / "latents.npz"), "--out",
                str(rendered))  # fmt: skip
    assert again.exit_code == 0, again.stderr
    for name in ("img1.png", "img2.png"):
        with Image.open(out / name) as a, Image.open(rendered / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_input(cli, generator, tmp_path: Path) -> None:
    _, model_path = generator
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    result = cli("generate", str(model_path), "--latents", str(bogus), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "is not a latents file of `gantk project`" in error_line(
        result
    )
    np.savez(tmp_path / "w4.npz", ws=np.zeros((1, 8, 4), np.float32), names=np.array(["a"]),
             distance=np.zeros(1))  # fmt: skip
    mismatch = cli("generate", str(model_path), "--latents", str(tmp_path / "w4.npz"), "--out",
                   str(tmp_path / "r"))  # fmt: skip
    assert mismatch.exit_code == 2 and "project with the same generator" in error_line(mismatch)
    assert not (tmp_path / "r").exists()
