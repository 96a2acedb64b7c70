"""`gantk train gan` and `gantk generate` through the command line, on one tiny trained run."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line as one_error_line
from PIL import Image
from typer.testing import CliRunner

from gantk.cli.app import app

TINY = [
    "--resolution", "16", "--batch-size", "8", "--z-dim", "32", "--w-dim", "32",
    "--mapping-layers", "2", "--channel-base", "128", "--channel-max", "16",
]  # fmt: skip
DATA = "builtin:shapes?n=32"


pytestmark = pytest.mark.usefixtures("one_thread")


def listing(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A 3-step run (0.024 kimg of batch 8) and the JSON summary `train gan --json` printed."""
    run = tmp_path_factory.mktemp("gan") / "run"
    args = ["train", "gan", DATA, *TINY, "--kimg", "0.024", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return run, json.loads(result.stdout)


@pytest.fixture
def ckpt(trained) -> Path:
    return trained[0] / "latest.safetensors"


# --- train ----------------------------------------------------------------------------------


def test_train_json_summary_and_run_folder(trained) -> None:
    run, summary = trained
    assert summary["kimg"] == pytest.approx(0.024)
    assert summary["steps"] == 3 and summary["interrupted"] is False
    assert Path(summary["checkpoint"]) == run / "latest.safetensors"
    for name in ("train-config.json", "log.jsonl", "latest-state.safetensors"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "train-config.json").read_text())
    assert saved["network"]["resolution"] == 16 and saved["network"]["z_dim"] == 32
    assert saved["batch_size"] == 8 and saved["loss"] == "ns"
    assert saved["preset"] == "auto"  # the CLI's default --config
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and np.isfinite(last["loss_d"])


def test_train_resume_continues(cli, trained, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    result = cli("train", "gan", "--resume", run, "--kimg", "0.04", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 5 and summary["kimg"] == pytest.approx(0.04)
    assert json.loads((run / "train-config.json").read_text())["kimg"] == pytest.approx(0.04)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 5 and steps == sorted(steps)


def test_train_resume_refuses_a_changed_option(cli, trained, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    result = cli(
        "train", "gan", "--resume", run, "--kimg", "0.024", "--device", "cpu", "--loss", "hinge"
    )
    assert "loss" in one_error_line(result)


def test_train_resume_without_kimg_keeps_the_runs_target(
    cli, trained, tmp_path: Path, monkeypatch
) -> None:
    from gantk.gan import trainer as train_module

    def no_training(self, progress=None) -> dict:
        return {"kimg": self.cfg.kimg, "steps": self.step, "interrupted": False, "checkpoint": ""}

    monkeypatch.setattr(train_module.Trainer, "run", no_training)
    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    result = cli("train", "gan", "--resume", run, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kimg"] == pytest.approx(0.024)
    assert json.loads((run / "train-config.json").read_text())["kimg"] == pytest.approx(0.024)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--resolution", "48"], ["--resolution 48", "power of two"]),
        (["--g-attn", "san@64"], ["--g-attn", "no 64px layer"]),
        (["--d-attn", "reference@4"], ["--d-attn", "no 4px layer"]),
        (["--loss", "foo"], ["unknown loss 'foo'"]),
    ],
)
def test_train_bad_options(cli, tmp_path: Path, extra: list[str], words: list[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "gan", DATA, *TINY, "--kimg", "0.008", "--device", "cpu"]
    line = one_error_line(cli(*args, *extra, "--out", out))
    for word in words:
        assert word in line
    assert not out.exists()


def test_train_resume_of_an_empty_folder(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = one_error_line(cli("train", "gan", "--resume", tmp_path / "empty", "--device", "cpu"))
    assert "no resumable run" in line
    assert listing(tmp_path / "empty") == []


def test_train_needs_data_and_out(cli, tmp_path: Path) -> None:
    line = one_error_line(cli("train", "gan", "--out", tmp_path / "run", "--device", "cpu"))
    assert "DATA" in line and "--resume" in line
    line = one_error_line(cli("train", "gan", DATA, *TINY, "--device", "cpu"))
    assert "--out" in line
    assert listing(tmp_path) == []


def test_train_refuses_an_existing_run_folder(cli, trained) -> None:
    run = trained[0]
    before = listing(run)
    args = ["train", "gan", DATA, *TINY, "--kimg", "0.008", "--device", "cpu", "--out", run]
    assert "already holds a run" in one_error_line(cli(*args))
    assert listing(run) == before


# --- generate -------------------------------------------------------------------------------


def test_generate_images_by_seed(cli, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "imgs"
    result = cli(
        "generate", ckpt, "-n", "5", "--out", out, "--seed", "3", "--json", "--device", "cpu"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 5 and summary["seeds"] == [3, 7]
    assert listing(out) == [f"seed{s:06d}.png" for s in range(3, 8)]
    for name in listing(out):
        with Image.open(out / name) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    images = [np.asarray(Image.open(out / n)) for n in listing(out)]
    assert not np.array_equal(images[0], images[1])
    # Any one image can be regenerated alone, whatever -n was.
    alone = tmp_path / "alone"
    result = cli("generate", ckpt, "--seeds", "5", "--out", alone, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert listing(alone) == ["seed000005.png"]
    assert (alone / "seed000005.png").read_bytes() == (out / "seed000005.png").read_bytes()


def test_generate_grid_and_truncation(cli, ckpt: Path, tmp_path: Path) -> None:
    grid = tmp_path / "g.png"
    result = cli("generate", ckpt, "--grid", grid, "--rows", "2", "--cols", "3", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.size == (48, 32)
        arr = np.asarray(im.convert("RGB"))
    tiles = [arr[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] for r in range(2) for c in range(3)]
    assert not all(np.array_equal(tiles[0], t) for t in tiles[1:])
    flat = tmp_path / "t0.png"
    result = cli(
        "generate",
        ckpt,
        "--grid",
        flat,
        "--rows",
        "2",
        "--cols",
        "3",
        "--truncation",
        "0",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    arr = np.asarray(Image.open(flat).convert("RGB"))
    tiles = [arr[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] for r in range(2) for c in range(3)]
    assert all(np.array_equal(tiles[0], t) for t in tiles[1:])


def test_generate_interpolation_gif_and_frames(cli, ckpt: Path, tmp_path: Path) -> None:
    gif = tmp_path / "w.gif"
    result = cli(
        "generate",
        ckpt,
        "--interpolate",
        "3",
        "--steps",
        "4",
        "--out",
        gif,
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 12
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 12 and im.size == (16, 16)
    frames = tmp_path / "frames"
    result = cli(
        "generate", ckpt, "--interpolate", "3", "--steps", "4", "--out", frames, "--device", "cpu"
    )
    assert result.exit_code == 0, result.stderr
    names = listing(frames)
    assert len(names) == 12 and all(n.endswith(".png") for n in names)
    # The walk is a closed loop through the keyframes: frame 0 and frame 4 are seeds 0 and 1.
    keys = tmp_path / "keys"
    assert cli("generate", ckpt, "--seeds", "0,1", "--out", keys, "--device", "cpu").exit_code == 0
    first = np.asarray(Image.open(frames / names[0]))
    assert np.array_equal(first, np.asarray(Image.open(keys / "seed000000.png")))


def test_generate_refuses_a_training_state(cli, trained, tmp_path: Path) -> None:
    line = one_error_line(
        cli(
            "generate",
            trained[0] / "latest-state.safetensors",
            "--out",
            tmp_path / "o",
            "--device",
            "cpu",
        )
    )
    assert "gan-training-state" in line and "gan-generator" in line
    assert listing(tmp_path) == []


@pytest.mark.parametrize("kind", ["pickle", "torch", "missing"])
def test_generate_refuses_unreadable_checkpoints(cli, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "in" / "model.pt"
    bad.parent.mkdir()
    if kind == "pickle":
        bad.write_bytes(pickle.dumps({"weights": [1.0, 2.0] * 100}))
    elif kind == "torch":
        torch.save({"weight": torch.zeros(4)}, bad)
    line = one_error_line(cli("generate", bad, "--out", tmp_path / "o", "--device", "cpu"))
    assert str(bad) in line
    assert ("does not exist" if kind == "missing" else "not a safetensors") in line
    assert not (tmp_path / "o").exists()


def test_generate_needs_an_output(cli, ckpt: Path) -> None:
    line = one_error_line(cli("generate", ckpt, "-n", "2", "--device", "cpu"))
    assert "--out" in line and "--grid" in line


def test_generate_refuses_an_existing_output(cli, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "imgs"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    line = one_error_line(cli("generate", ckpt, "-n", "2", "--out", out, "--device", "cpu"))
    assert "already exists" in line and "--force" in line
    assert listing(out) == ["mine.txt"]
    grid = tmp_path / "g.png"
    grid.write_bytes(b"old")
    line = one_error_line(cli("generate", ckpt, "--grid", grid, "--device", "cpu"))
    assert "already exists" in line and grid.read_bytes() == b"old"
    result = cli("generate", ckpt, "-n", "2", "--out", out, "--force", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert listing(out) == ["seed000000.png", "seed000001.png"]
