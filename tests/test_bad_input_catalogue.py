"""Walk docs/bad-inputs.md: every row's command, run as written, gives one error line with the
expected words, exit status 2, writes nothing and leaves its inputs as they were."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line_after_warnings, write_corrupt_png, write_png_bomb
from PIL import Image

from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.fingerprint.train_stego import save_stego
from gantk.gan.networks import GENERATOR_KIND, Generator, NetworkConfig
from gantk.io.checkpoint import save_checkpoint

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
NET = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                    channel_max=8)  # fmt: skip


def rows() -> list[tuple[str, str, str]]:
    text = CATALOGUE.read_text()
    table = text.split("<!-- catalogue:")[1].split("<!-- end of catalogue -->")[0]
    found = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            found.append((cells[0], cells[1].strip("`"), cells[2]))
    return found


def _images(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    f: dict[str, Path] = {"images": _images(root / "images")}
    f["bad_images"] = _images(root / "bad_images")
    write_corrupt_png(f["bad_images"] / "broken.png")
    write_png_bomb(f["bad_images"] / "bomb.png")
    f["bombs"] = root / "bombs"
    f["bombs"].mkdir()
    write_png_bomb(f["bombs"] / "bomb.png")
    f["cmyk"] = root / "cmyk"
    f["cmyk"].mkdir()
    Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(f["cmyk"] / "c.tif")
    torch.manual_seed(0)
    tensors = Generator(NET).state_dict()
    f["gen"] = save_checkpoint(root / "g.safetensors", tensors, GENERATOR_KIND,
                               {"network": NET.to_dict()})  # fmt: skip
    forged = {**NET.to_dict(), "z_dim": -5}
    f["forged"] = save_checkpoint(root / "forged.safetensors", tensors, GENERATOR_KIND,
                                  {"network": forged})  # fmt: skip
    f["pickle"] = root / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, f["pickle"])
    config = StegoConfig(8, 32)
    f["stego"] = save_stego(root / "stego.safetensors", StegoEncoder(config), StegoDecoder(config))
    f["damaged_run"] = root / "run"
    f["damaged_run"].mkdir()
    (f["damaged_run"] / "train-config.json").write_text('{"data": "builtin:shapes", "out')
    (f["damaged_run"] / "latest-state.safetensors").write_bytes(f["gen"].read_bytes())
    f["bad_csv"] = root / "attrs.csv"
    f["bad_csv"].write_bytes("filename,smile\na.png,1\nb\xe9.png,0\n".encode("latin-1"))
    return f


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_catalogue_has_every_class() -> None:
    cases = [case for case, _, _ in rows()]
    assert len(cases) >= 19 and len(set(cases)) == len(cases)


@pytest.mark.parametrize(("case", "command", "expected"), rows(), ids=[r[0] for r in rows()])
def test_catalogue_row(cli, files, tmp_path, case, command, expected) -> None:
    out = tmp_path / "out"
    out.mkdir()
    places = {name: str(path) for name, path in files.items()}
    places["tmp"] = str(out)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    places["link"] = str(out / "link.png")
    Path(places["link"]).symlink_to(precious)
    places["dangling"] = str(out / "dangling")
    Path(places["dangling"]).symlink_to(tmp_path / "nowhere")
    args = [re.sub(r"\{(\w+)\}", lambda m: places[m.group(1)], a) for a in shlex.split(command)]
    before = _snapshot(files["images"].parent)
    line = error_line_after_warnings(cli(*args))
    assert expected in line, (case, line)
    assert sorted(p.name for p in out.iterdir()) == ["dangling", "link.png"]  # nothing written
    assert precious.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    assert _snapshot(files["images"].parent) == before


def test_catalogue_commands_name_real_files(files) -> None:
    names = {m for _, command, _ in rows() for m in re.findall(r"\{(\w+)\}", command)}
    assert names <= {*files, "tmp", "link", "dangling"}, names
