"""One reading policy for unreadable files (corrupt, truncated, decompression bombs) in every
command: skipped with a warning naming the file where the result stays meaningful (`--strict`
stops instead), a one-line error naming the file where a measurement would be biased."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, write_corrupt_png, write_png_bomb
from PIL import Image

from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.fingerprint.train_stego import save_stego
from gantk.io.images import UnreadableImage, load_rgb, read_image_size

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three good 32x32 images, a corrupt one and a bomb in a sub-folder."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
    write_corrupt_png(root / "broken.png")
    write_png_bomb(root / "sub" / "bomb.png")
    return root


@pytest.fixture
def stego_file(tmp_path: Path) -> Path:
    config = StegoConfig(8, 32)
    return save_stego(tmp_path / "stego.safetensors", StegoEncoder(config), StegoDecoder(config))


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_bomb_is_unreadable_before_any_pixel_is_decoded(tmp_path: Path) -> None:
    bomb, big = tmp_path / "bomb.png", tmp_path / "big.png"
    write_png_bomb(bomb)
    write_png_bomb(big, 10_000, 10_000)  # over Pillow's limit, under twice it: Pillow only warns
    for read in (read_image_size, load_rgb):
        with pytest.raises(UnreadableImage, match="decompression bomb"):
            read(bomb)
        with pytest.raises(UnreadableImage, match="claims 10000x10000 pixels"):
            read(big)
    write_corrupt_png(tmp_path / "x.png")
    with pytest.raises(UnreadableImage, match=r"x\.png"):
        load_rgb(tmp_path / "x.png")


def test_embed_skips_unreadable_files_and_lists_them(cli, folder, stego_file, tmp_path) -> None:
    before = _snapshot(folder)
    out = tmp_path / "marked"
    result = cli("fingerprint-embed", folder, "--encoder", stego_file, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert "skipping unreadable image broken.png" in result.stderr
    assert "skipping unreadable image sub/bomb.png" in result.stderr  # the path, not the name
    record = json.loads((out / "fingerprint.json").read_text())
    assert record["images"] == 3 and record["skipped"] == ["broken.png", "sub/bomb.png"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png", "b.png", "sub/c.png"
    ]  # fmt: skip
    assert _snapshot(folder) == before


def test_embed_strict_stops_and_writes_nothing(cli, folder, stego_file, tmp_path) -> None:
    out = tmp_path / "marked"
    args = ("fingerprint-embed", folder, "--encoder", stego_file, "--out", out, "--strict")
    line = error_line(cli(*args))
    assert "cannot read image" in line and "broken.png" in line and "--strict" in line
    assert not out.exists() and list(tmp_path.glob(".marked*")) == []


def test_embed_of_nothing_readable_writes_nothing(cli, stego_file, tmp_path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    write_corrupt_png(root / "x.png")
    out = tmp_path / "marked"
    result = cli("fingerprint-embed", root, "--encoder", stego_file, "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "warning: skipping unreadable image x.png",
        f"error: {root} holds no readable images; nothing was written",
    ]
    assert not out.exists()


def test_decode_skips_unreadable_files(cli, folder, stego_file) -> None:
    result = cli("fingerprint-decode", folder, "--decoder", stego_file, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["images"] == 3
    assert report["summary"]["skipped"] == ["broken.png", "sub/bomb.png"]
    assert "skipping unreadable image sub/bomb.png" in result.stderr
    line = error_line(cli("fingerprint-decode", folder, "--decoder", stego_file, "--strict"))
    assert "broken.png" in line


def test_robustness_stops_naming_the_file(cli, folder, stego_file) -> None:
    args = ["--decoder", stego_file, "--expect", "0xb2", "--perturb", "jpeg"]
    line = error_line(cli("evaluate", "robustness", folder, *args))
    assert "cannot read image" in line and "broken.png" in line


@pytest.mark.parametrize(
    "command",
    [
        ("data", "pack", "{folder}", "{tmp}/p.h5", "--resolution", "32"),
        ("data", "export", "{folder}", "{tmp}/ex", "--resolution", "32"),
    ],
)
def test_data_layer_commands_skip_a_bomb_with_a_warning(cli, folder, tmp_path, command) -> None:
    args = [a.format(folder=folder, tmp=tmp_path) for a in command]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "sub/bomb.png" in result.stderr and "broken.png" in result.stderr


@pytest.mark.parametrize("metric", ["swd", "fid", "kid"])
def test_metrics_stop_at_an_unreadable_file(cli, folder, metric) -> None:
    extra = [] if metric == "swd" else ["--features", "random-inception"]
    line = error_line(cli("evaluate", metric, folder, "builtin:shapes", "-n", "3", *extra))
    assert "cannot use unreadable image" in line and "broken.png" in line
