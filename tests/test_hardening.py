"""Issue 35's classes that a row of docs/bad-inputs.md cannot express: a process killed with -9,
a full disk, photos checked pixel by pixel, file names holding newlines, metric values against
an independent computation, and the table of every option that writes a file."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
from helpers import error_line, write_corrupt_png
from PIL import Image

from gantk.cli.common import WRITES
from gantk.errors import GantkError
from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.fingerprint.train_stego import save_stego
from gantk.io.images import is_deep_color_png, read_deep_png, save_deep_png
from gantk.metrics.frechet import check_gaussian, frechet_distance

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------ metrics


def test_a_gaussian_is_accepted_within_rounding_and_refused_beyond() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 64)) @ rng.normal(size=(64, 64))
    cov = np.cov(features, rowvar=False)  # rank 39 of 64: zero eigenvalues, rounded either way
    mu, rounded = check_gaussian(features.mean(0), cov.astype(np.float32), "a float32 copy")
    assert rounded.dtype == np.float64 and mu.shape == (64,)
    shifted = cov - 1e-3 * np.abs(np.linalg.eigvalsh(cov)).max() * np.eye(64)
    with pytest.raises(GantkError, match="negative eigenvalue"):
        check_gaussian(mu, shifted, "shifted")
    with pytest.raises(GantkError, match="do not describe one Gaussian"):
        check_gaussian(mu, cov[:10, :10], "cut")
    with pytest.raises(GantkError, match="8-d and 64-d"):
        frechet_distance(np.zeros(8), np.eye(8), mu, cov)


def test_fid_of_valid_files_is_the_closed_form(cli, tmp_path) -> None:
    """The checks do not change a valid score: diagonal covariances have a closed form."""
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=2048), rng.normal(size=2048)
    var1, var2 = rng.uniform(0.5, 2, 2048), rng.uniform(0.5, 2, 2048)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    np.savez(one, mu=mu1, sigma=np.diag(var1).astype(np.float32))
    np.savez(two, mu=mu2, sigma=np.diag(var2))
    result = cli("evaluate", "fid", one, two, "--json")
    assert result.exit_code == 0, result.stderr
    closed = ((mu1 - mu2) ** 2).sum() + (
        (np.sqrt(var1.astype(np.float32)) - np.sqrt(var2)) ** 2
    ).sum()
    assert json.loads(result.stdout)["metrics"]["fid"] == pytest.approx(closed, rel=1e-6)


def test_json_output_has_no_nan_or_infinity(capsys) -> None:
    from gantk.cli.common import Output

    Output(as_json=True).result({"loss": float("nan"), "best": [float("inf"), np.float64(2.5)]})
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "best": [None, 2.5]}


# ------------------------------------------------------------------------------------ faults


def test_a_killed_commands_temporaries_are_removed_by_the_next_run(cli, tmp_path) -> None:
    """kill -9 runs no handler: the temporary stays until the next command writing the same
    output removes it. Only its own: another output's, or a living process's, stay."""
    target = tmp_path / "out"
    ready = tmp_path / "ready"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom gantk.io.atomic import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'half.png').write_bytes(b'x')\n    Path(sys.argv[2]).touch()\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(target), str(ready)])
    try:
        for _ in range(600):
            if ready.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the writer did not start"
    finally:
        process.kill()  # SIGKILL: no clean-up runs
        process.wait()
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(left) == 1 and left[0].name.startswith(".out.")
    host = left[0].name.split(".")[2].rsplit("-", 1)[0]
    living = tmp_path / f".out.{host}-1.abcd1234.partial"  # pid 1 never dies
    other = tmp_path / f".other.{host}-{process.pid}.abcd1234.partial"
    living.mkdir()
    other.mkdir()
    result = cli("data", "export", "builtin:shapes?n=2", target, "--resolution", "16", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert not left[0].exists() and living.exists() and other.exists()
    assert len(list(target.rglob("*.png"))) == 2


def test_train_stego_on_a_full_disk_leaves_nothing_behind(cli, tmp_path, monkeypatch) -> None:
    from gantk.fingerprint.train_stego import StegoTrainer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StegoTrainer, "save_model", full)
    out = tmp_path / "runs" / "stego"
    line = error_line(cli("train", "stego", "builtin:shapes?n=8", "--out", out, "--steps", "1",
                          "--batch-size", "2", "--resolution", "32", "--bits", "8", "--design",
                          "paper", "--device", "cpu", "--quiet"))  # fmt: skip
    assert "No space left on device" in line
    assert list(tmp_path.iterdir()) == []  # neither the run's folder nor the one above it


def test_a_new_gan_run_on_a_full_disk_leaves_nothing_behind(cli, tmp_path, monkeypatch) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('IoError(Os { code: 28, message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "runs" / "gan"
    line = error_line(cli("train", "gan", "builtin:shapes?n=8", "--resolution", "16", "--kimg",
                          "0.008", "--batch-size", "4", "--z-dim", "8", "--w-dim", "8",
                          "--mapping-layers", "2", "--channel-base", "64", "--channel-max", "8",
                          "--device", "cpu", "--out", out, "--quiet"))  # fmt: skip
    assert "No space left on device" in line
    assert list(tmp_path.iterdir()) == []  # neither the run's folder nor the one above it


# ------------------------------------------------------------------------------------ photos


@pytest.fixture
def stego_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = StegoConfig(8, 32)
    return save_stego(tmp_path / "stego.safetensors", StegoEncoder(config).eval(),
                      StegoDecoder(config).eval())  # fmt: skip


def test_embed_keeps_phone_orientation_and_16_bit_colour(cli, stego_file, tmp_path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(2)
    ramp = np.linspace(0, 255, 48)[None, :, None] * np.ones((32, 1, 3))
    stored = (ramp + rng.integers(0, 30, (32, 48, 3))).clip(0, 255).astype(np.uint8)  # sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    Image.fromarray(stored).save(root / "phone.jpg", exif=exif.tobytes(), quality=98)
    deep = rng.integers(0, 65536, (40, 40, 3)).astype(np.uint16)
    save_deep_png(deep, root / "deep.png")
    out = tmp_path / "marked"
    result = cli("fingerprint-embed", root, "--encoder", stego_file, "--out", out, "--strength",
                 "0.2", "--design", "paper", "--device", "cpu", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr

    marked = np.asarray(Image.open(out / "phone.png").convert("RGB"), dtype=np.float64)
    photo = Image.open(root / "phone.jpg")
    shown = np.asarray(photo.transpose(Image.Transpose.ROTATE_270))  # as viewers show it
    wrong = np.asarray(photo.transpose(Image.Transpose.ROTATE_90))
    assert marked.shape == shown.shape == (48, 32, 3)
    assert np.abs(marked - shown).mean() < np.abs(marked - wrong).mean() / 3

    saved = Image.open(out / "deep.png")
    assert is_deep_color_png(saved)
    again = read_deep_png(out / "deep.png").astype(np.int64)
    change = again - deep
    inside = (again > 0) & (again < 65535)
    assert np.all(change[inside] % 257 == 0) and np.any(change != 0)  # the low bits survive
    assert np.abs(change).max() <= 257 * 40


def test_deep_colour_png_round_trip_and_decoding_against_libpng(tmp_path) -> None:
    pixels = np.random.default_rng(4).integers(0, 65536, (9, 13, 4)).astype(np.uint16)
    save_deep_png(pixels, tmp_path / "a.png")
    np.testing.assert_array_equal(read_deep_png(tmp_path / "a.png"), pixels)
    # Pillow reads the same file, to 8 bits: the top byte of each value
    top = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(top, (pixels >> 8).astype(np.uint8))


# ------------------------------------------------------------------------------------ messages


def test_a_file_name_with_a_newline_cannot_start_a_line(cli, tmp_path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "good.png")
    write_corrupt_png(root / "bad\nerror: everything failed.png")
    result = cli("data", "pack", root, tmp_path / "p.h5", "--resolution", "32")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("error:") for line in lines), result.stderr
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "bad\\nerror: everything failed.png" in warnings[0]


# ------------------------------------------------------------------------------------ outputs

# Every option of every command that names a file or folder to write (marked WRITES): each is
# checked against every input of the command (gantk.cli.common.check_paths). A new one must be
# marked, or it would count as an input and its own --force would be refused.
WRITERS = {
    "attribute": {"predictions", "confusion", "visualize"},
    "convert": {"out", "discriminator"},
    "data export": {"out_dir"},
    "data pack": {"out_file"},
    "data preview": {"out_file"},
    "evaluate all": {"save_stats", "plot"},
    "evaluate fid": {"save_stats", "plot"},
    "evaluate kid": {"save_stats", "plot"},
    "evaluate lpips": {"per_image"},
    "evaluate merge-stats": {"out"},
    "evaluate pr": {"save_stats", "plot"},
    "evaluate prd": {"save_stats", "plot"},
    "evaluate robustness": {"plot_path"},
    "evaluate scalable": {"plot_path"},
    "evaluate texture": {"samples"},
    "fingerprint-decode": {"csv_out"},
    "fingerprint-embed": {"out", "registry"},
    "fingerprint-merge": {"out"},
    "generate": {"out", "grid"},
    "project": {"out"},
    "texture-mix": {"out"},
    "train attributor": {"out"},
    "train digit-classifier": {"out"},
    "train gan": {"out", "resume"},
    "train report": {"out"},
    "train stego": {"out"},
    "train texture": {"out"},
    "train texture-classifiers": {"out"},
}


def test_every_option_that_writes_is_marked() -> None:
    import typer.main

    from gantk.cli.app import app
    from gantk.cli.common import _path_roles

    found: dict[str, set[str]] = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        func = getattr(command.callback, "__wrapped__", command.callback)
        writes = {k for k, role in _path_roles(func).items() if role == "writes"}
        if writes:
            found[" ".join(path)] = writes

    walk(typer.main.get_command(app), [])
    assert found == WRITERS


def _two_outputs(out: Path, grid: Annotated[Path, WRITES]) -> None:
    """A command's signature: --out and --grid both write."""


def test_two_outputs_naming_one_path_are_refused(tmp_path) -> None:
    from gantk.cli.common import check_paths

    for grid in (tmp_path / "x", tmp_path / "x" / "grid.png"):
        with pytest.raises(GantkError, match="two outputs name"):
            check_paths(_two_outputs, {"out": tmp_path / "x", "grid": grid})
    with check_paths(_two_outputs, {"out": tmp_path / "x", "grid": tmp_path / "grid.png"}):
        pass
