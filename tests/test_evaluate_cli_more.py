"""gantk evaluate lpips / ivom / swd / modes through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def alexnet_weights(torch_hub: Path) -> Path:
    """Random AlexNet weights under the standard name in a temporary torch hub cache."""
    import torchvision

    hub = torch_hub
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), hub / ALEXNET_FILE)
    return hub / ALEXNET_FILE


def folder(path: Path, seed: int, names=("a.png", "b.png", "c.png")) -> Path:
    path.mkdir()
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path / name)
    return path


def test_lpips_paired_folders(cli, alexnet_weights, tmp_path) -> None:
    a, b = folder(tmp_path / "a", 0), folder(tmp_path / "b", 1)
    csv = tmp_path / "per.csv"
    result = cli("evaluate", "lpips", a, b, "--per-image", csv, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 3 and summary["metric"] == "lpips-alex"
    rows = csv.read_text().splitlines()
    assert rows[0] == "file,lpips" and len(rows) == 4
    values = [float(r.split(",")[1]) for r in rows[1:]]
    assert summary["mean"] == pytest.approx(np.mean(values))
    same = json.loads(cli("evaluate", "lpips", a, a, "--json", "--device", "cpu").stdout)
    assert same["mean"] == pytest.approx(0.0, abs=1e-6)


def test_lpips_missing_weights_names_the_file(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    a, b = folder(tmp_path / "a", 0), folder(tmp_path / "b", 1, ("x.png", "y.png", "z.png"))
    assert ALEXNET_FILE in error_line(cli("evaluate", "lpips", a, b, "--device", "cpu"))


def test_swd_cli_identical_sets_are_at_zero(cli) -> None:
    spec = "builtin:textures?n=32&resolution=32"
    result = cli("evaluate", "swd", spec, spec, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mean"] == pytest.approx(0.0, abs=1e-9)
    other = json.loads(
        cli(
            "evaluate",
            "swd",
            spec,
            "builtin:photos?n=32&resolution=32",
            "--json",
            "--device",
            "cpu",
        ).stdout
    )
    assert other["mean"] > 1.0


def test_ivom_cli_with_attributes(cli, alexnet_weights, tmp_path) -> None:
    from gantk.gan.networks import Generator, NetworkConfig
    from gantk.gan.trainer import GENERATOR_KIND
    from gantk.io.checkpoint import save_checkpoint

    config = NetworkConfig(
        resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=4
    )
    torch.manual_seed(0)
    ckpt = tmp_path / "g.safetensors"
    save_checkpoint(
        ckpt, Generator(config).state_dict(), GENERATOR_KIND, {"network": config.to_dict()}
    )
    queries = tmp_path / "q"
    queries.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            queries / f"{i}.png"
        )
    csv = tmp_path / "attrs.csv"
    csv.write_text("filename,smiling,glasses\n0.png,1,0\n1.png,1,0\n2.png,0,0\n3.png,0,0\n")
    result = cli(
        "evaluate",
        "ivom",
        ckpt,
        queries,
        "--attributes",
        csv,
        "--steps",
        "3",
        "--net",
        "alex",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 4 and summary["steps"] == 3
    assert summary["schedule"] == "authors" and summary["network"] == "lpips-alex"
    # The default backbone is the authors' VGG-16, whose weights this cache lacks.
    missing = cli("evaluate", "ivom", ckpt, queries, "--steps", "1", "--device", "cpu")
    assert missing.exit_code == 2 and "vgg16" in missing.stderr
    assert summary["attributes"]["glasses"] is None  # no query has it
    assert summary["attributes"]["smiling"] is not None


def test_modes_cli_on_the_data_with_a_cached_classifier(cli, tmp_path, monkeypatch) -> None:
    from gantk.metrics import modes

    monkeypatch.setenv("GANTK_CACHE_DIR", str(tmp_path / "cache"))
    trained = []
    real_train = modes.train_digit_classifier

    def quick(*args, **kwargs):
        trained.append(1)
        return real_train(*args, **{**kwargs, "epochs": 2})

    monkeypatch.setattr(modes, "train_digit_classifier", quick)
    result = cli(
        "evaluate",
        "modes",
        "builtin:stacked-digits?n=500",
        "-n",
        "500",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 500 and 0 < summary["modes_covered"] <= 500
    assert trained == [1]
    assert (tmp_path / "cache" / "digit-classifier-32.safetensors").is_file()
