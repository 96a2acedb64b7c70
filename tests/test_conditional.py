"""Class-conditional training (`train gan --cond`): classes and their names from the data into
the checkpoint, generation that depends on the class (by name or index), the dual contrastive
loss, metrics on a conditional generator, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line
from PIL import Image
from typer.testing import CliRunner

from gantk.cli.app import app
from gantk.gan.generate import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--resolution", "16", "--batch-size", "8", "--channel-base", "128", "--channel-max",
        "16", "--z-dim", "16", "--w-dim", "16", "--mapping-layers", "2", "--tick-kimg", "0.008",
        "--snapshot-kimg", "1", "--sample-kimg", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cond") / "run"
    args = ["train", "gan", "builtin:shapes?n=32", "--cond", "--out", str(out), "--kimg",
            "0.016", *TINY]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def test_the_checkpoint_carries_the_classes(shapes_run: Path) -> None:
    G = load_generator(shapes_run / "latest.safetensors")
    assert G.config.c_dim == 3 and G.config.class_names == ["circle", "square", "triangle"]
    config = json.loads((shapes_run / "train-config.json").read_text())
    assert config["cond"] is True and config["network"]["class_names"] == G.config.class_names
    # The sample grid shows one class per row (3 rows of classes in an 8x8 grid cycle).
    with Image.open(sorted(shapes_run.glob("samples-*.png"))[-1]) as grid:
        assert grid.size == (8 * 16, 8 * 16)


def _grid(cli, run: Path, out: Path, label: str) -> np.ndarray:
    result = cli("generate", str(run / "latest.safetensors"), "--class", label, "--grid",
                 str(out), "--rows", "2", "--cols", "2", "--seed", "5", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as image:
        return np.asarray(image)


def test_generation_depends_on_the_class_by_name_or_index(
    cli, shapes_run: Path, tmp_path: Path
) -> None:
    by_name = _grid(cli, shapes_run, tmp_path / "a.png", "triangle")
    by_index = _grid(cli, shapes_run, tmp_path / "b.png", "2")
    other = _grid(cli, shapes_run, tmp_path / "c.png", "circle")
    assert np.array_equal(by_name, by_index)
    assert np.abs(by_name.astype(int) - other.astype(int)).mean() > 0.5


def test_unknown_classes_are_refused(cli, shapes_run: Path, tmp_path: Path) -> None:
    model = str(shapes_run / "latest.safetensors")
    unknown = cli("generate", model, "--class", "hexagon", "-n", "2", "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 2
    assert "one of circle, square, triangle or an index" in error_line(unknown)
    beyond = cli("generate", model, "--class", "7", "-n", "2", "--out", str(tmp_path / "y"))
    assert beyond.exit_code == 2 and "3 classes, 0..2" in error_line(beyond)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_metrics_sample_a_conditional_generator_class_by_seed(cli, shapes_run: Path) -> None:
    result = cli("evaluate", "fid", "builtin:shapes?n=16", str(shapes_run / "latest.safetensors"),
                 "-n", "12", "--features", "random-inception", "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["fid[random-inception]"] > 0


def test_conditional_training_with_the_contrastive_loss(cli, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    args = ["builtin:digits?n=32", "--cond", "--loss", "contrastive", "--contrastive-warmup",
            "0", "--out", str(out), "--kimg", "0.016", *TINY]  # fmt: skip
    result = cli("train", "gan", *args)
    assert result.exit_code == 0, result.stderr
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(entries) == 2 and all(np.isfinite(e["loss_d"]) for e in entries)
    assert load_generator(out / "latest.safetensors").config.class_names == [
        str(d) for d in range(10)
    ]


def test_cond_on_unlabeled_data(cli, tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((16, 16, 3), i * 30, np.uint8)).save(folder / f"{i}.png")
    result = cli("train", "gan", str(folder), "--cond", "--out", str(tmp_path / "r"), *TINY)
    assert result.exit_code == 2 and "labels" in error_line(result)
    imle = cli("train", "gan", "builtin:shapes?n=32", "--cond", "--imle", "--out",
               str(tmp_path / "r2"), *TINY)  # fmt: skip
    assert imle.exit_code == 2 and "--cond trains a plain conditional StyleGAN2" in error_line(imle)
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
