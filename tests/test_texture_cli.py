"""`gantk texture-mix` (strip, palette, dissolve, brush, fill) and `gantk train texture`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TEXTURE_MIXER, error_line
from PIL import Image
from typer.testing import Result

from gantk.errors import GantkError
from gantk.texture.data import load_texture
from gantk.texture.gram import load_gram_net
from gantk.texture.mixing import to_uint8
from gantk.texture.networks import TextureMixer, TextureMixerConfig
from gantk.texture.train import load_texture_mixer, save_texture_mixer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TINY_TEXTURE_MIXER
TRAIN_ARGS = [
    "--resolution", "16", "--channels", "8", "--latent-channels", "4", "--global-dim", "4",
    "--res-blocks", "1", "--d-channels", "4", "--batch-size", "2", "--snapshot-every", "2",
    "--gram-net", "random-vgg19",
]  # fmt: skip


def _structured(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    wave = 127 + 100 * np.sin(xx / (1.5 + seed) + yy / (2.5 + seed))
    colour = np.array([1.0, 0.3 + 0.2 * seed, 0.8 - 0.2 * seed])
    arr = wave[..., None] * colour + rng.normal(0, 12, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _mask(path: Path, height: int, width: int, box: tuple[int, int, int, int]) -> Path:
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    top, bottom, left, right = box
    arr[top:bottom, left:right] = 255
    return _png(path, arr)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random Texture Mixer, four 24 px textures, a 10 px one, a background and a
    photo with masks."""
    root = tmp_path_factory.mktemp("texture_cli")
    torch.manual_seed(0)
    model = TextureMixer(TextureMixerConfig(**TINY)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.3)
    out = {"model": save_texture_mixer(root / "mixer.safetensors", model, "random-vgg19")}
    for i in range(4):
        out[f"t{i}"] = _png(root / f"t{i}.png", _structured(24, 24, i))
    out["small"] = _png(root / "small.png", _structured(10, 10, 1))
    out["background"] = _png(root / "background.png", _structured(26, 30, 2))
    out["brush_mask"] = _mask(root / "brush_mask.png", 26, 30, (4, 20, 2, 14))
    out["photo"] = _png(root / "photo.png", _structured(40, 48, 3))
    out["hole"] = _mask(root / "hole.png", 40, 48, (14, 26, 18, 30))
    return out


def _mix(cli: Callable, files: dict[str, Path], *args: object) -> Result:
    return cli("texture-mix", *args, "--model", files["model"], "--device", "cpu")


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _texture_pixels(path: Path) -> np.ndarray:
    tensor, _ = load_texture(str(path), 16)
    return to_uint8(tensor)


# --- texture-mix: successful runs -----------------------------------------------------------


def test_strip(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "strip.png"
    result = _mix(
        cli, files, files["t0"], files["t1"], "--out", out, "--length", 48, "--blend", "graphcut",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "strip" and doc["frames"] == 1 and doc["out"] == str(out)
    assert (doc["width"], doc["height"]) == (48, 16)
    pixels = _read(out)
    assert pixels.shape == (16, 48, 3)
    # The placed textures come back exactly in their cores (the graph cut never seams there).
    left, right = _texture_pixels(files["t0"]), _texture_pixels(files["t1"])
    assert np.array_equal(pixels[4:12, 4:12], left[4:12, 4:12])
    assert np.array_equal(pixels[4:12, 36:44], right[4:12, 4:12])


def test_strip_with_odd_size_and_default_blend(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "strip.jpg"
    result = _mix(
        cli, files, files["t0"], files["t1"], "--out", out, "--length", 50, "--height", 22,
        "--seed", 3, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["width"], doc["height"]) == (50, 22)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (50, 22)


def test_palette(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "palette.png"
    corners = [files[f"t{i}"] for i in range(4)]
    result = _mix(cli, files, *corners, "--palette", "--size", 40, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "palette" and (doc["width"], doc["height"]) == (40, 40)
    assert _read(out).shape == (40, 40, 3)


def test_dissolve_gif(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "dissolve.gif"
    result = _mix(
        cli, files, files["t0"], files["t2"], "--dissolve", "--frames", 4, "--size", 20,
        "--fps", 10, "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "dissolve" and doc["frames"] == 4
    assert (doc["width"], doc["height"]) == (20, 20)
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.size == (20, 20)
        assert gif.info["duration"] == 100
        gif.seek(0)
        first = np.asarray(gif.convert("RGB")).astype(int)
        gif.seek(3)
        last = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(first - last).mean() > 1


def test_dissolve_default_size_is_twice_the_model(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "d.gif"
    result = _mix(cli, files, files["t0"], files["t1"], "--dissolve", "--frames", 2, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "dissolve: wrote" in result.stderr
    with Image.open(out) as gif:
        assert gif.n_frames == 2 and gif.size == (32, 32)


def test_brush(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "painted.png"
    result = _mix(
        cli, files, files["background"], files["t1"], "--brush", files["brush_mask"],
        "--sigma", 2, "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "brush" and (doc["width"], doc["height"]) == (30, 26)
    assert _read(out).shape == (26, 30, 3)
    # An empty brush gives the background's plain reconstruction: painting changes the result.
    empty = _mask(tmp_path / "empty.png", 26, 30, (0, 0, 0, 0))
    plain = tmp_path / "plain.png"
    result = _mix(cli, files, files["background"], files["t1"], "--brush", empty, "--out", plain)
    assert result.exit_code == 0, result.stderr
    painted, background = _read(out).astype(int), _read(plain).astype(int)
    assert np.abs(painted[4:20, 2:14] - background[4:20, 2:14]).mean() > 1


def test_fill(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "filled.png"
    result = _mix(
        cli, files, files["t0"], files["t1"], "--fill", files["hole"], "--image",
        files["photo"], "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "fill" and (doc["width"], doc["height"]) == (48, 40)
    filled, photo = _read(out), _read(files["photo"])
    outside = np.ones((40, 48), dtype=bool)
    outside[12:28, 16:32] = False  # the hole's box plus the 2 px seam ring
    assert np.array_equal(filled[outside], photo[outside])
    assert np.abs(filled[14:26, 18:30].astype(int) - photo[14:26, 18:30]).mean() > 1


def test_small_texture_is_upscaled_with_a_warning(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "strip.png"
    result = _mix(cli, files, files["small"], files["t1"], "--out", out, "--length", 40, "--json")
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == ["warning: small.png is 10x10 px, smaller than the model's 16 px: upscaled"]
    assert json.loads(result.stdout)["width"] == 40 and out.is_file()


# --- texture-mix: user errors ----------------------------------------------------------------


def test_user_errors_write_nothing(cli: Callable, files: dict[str, Path], tmp_path: Path) -> None:
    t0, t1, t2, t3 = (files[f"t{i}"] for i in range(4))
    out = tmp_path / "out.png"
    cases: list[tuple[list[object], str]] = [
        ([t0, "--out", out], "strip needs 2 textures, got 1; give 1 more"),
        ([t0, t1, t2, "--out", out], "strip takes 2 textures, got 3; for 4 corners use --palette"),
        ([t0, t1, t2, "--palette", "--out", out], "--palette takes exactly 4 textures"),
        ([t0, t1, "--dissolve", "--out", out], "--dissolve writes an animated GIF"),
        (
            [t0, t1, t2, t3, "--palette", "--dissolve", "--out", tmp_path / "x.gif"],
            "--palette and --dissolve exclude each other",
        ),
        ([t0, t1, "--fill", files["hole"], "--out", out], "--fill needs --image"),
        ([t0, t1, "--image", files["photo"], "--out", out], "--image is the photo for --fill"),
        ([t0, t1, "--blend", "feather", "--out", out], "unknown blend 'feather'"),
        ([t0, t1, "--out", tmp_path / "out.txt"], "use an image extension"),
        (
            [files["background"], t1, "--brush", files["hole"], "--out", out],
            "the brush mask is 48x40 px but the background is 30x26 px",
        ),
        (
            [t0, t1, "--fill", files["brush_mask"], "--image", files["photo"], "--out", out],
            "the hole mask is 30x26 px but the image is 48x40 px",
        ),
        ([t0, t1, "--length", 20, "--out", out], "is shorter than two textures"),
        ([t0, tmp_path / "nope.png", "--out", out], "does not exist"),
        ([t0, t1, "--scale", -1, "--out", out], "--scale must be 0 (whole image) or positive"),
        ([t0, t1, "--dissolve", "--fps", 0, "--out", tmp_path / "d.gif"], "--fps must be positive"),
        ([t0, t1, "--height", 8, "--out", out], "--height must be at least 16 px"),
        (
            [t0, t1, "--fill", files["hole"], "--image", files["hole"].parent, "--out", out],
            "names several images",
        ),
    ]
    for args, message in cases:
        line = error_line(_mix(cli, files, *args))
        assert message in line, (args, line)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_force(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "taken.png"
    out.write_bytes(b"keep me")
    args = [files["t0"], files["t1"], "--out", out, "--length", 40]
    assert "already exists; pass --force" in error_line(_mix(cli, files, *args))
    assert out.read_bytes() == b"keep me"
    assert _mix(cli, files, *args, "--force").exit_code == 0
    assert _read(out).shape == (16, 40, 3)


def test_wrong_or_missing_model(
    cli: Callable, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gantk.io import bundled
    from gantk.io.checkpoint import save_checkpoint

    stego = save_checkpoint(tmp_path / "stego.safetensors", {"w": torch.zeros(2)}, "stego", {})
    out = tmp_path / "out.png"
    base = ["texture-mix", files["t0"], files["t1"], "--out", out, "--device", "cpu"]
    line = error_line(cli(*base, "--model", stego))
    assert "holds a stego, not a" in line
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setattr(bundled, "MODELS_DIR", empty)
    line = error_line(cli(*base))  # the default builtin:texture-mixer
    assert "builtin:texture-mixer is missing" in line and "make models" in line
    line = error_line(cli(*base, "--model", tmp_path / "none.safetensors"))
    assert "does not exist; train one with gantk train texture" in line
    assert not out.exists()


# --- train texture --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_textures")
    for i in range(3):
        _png(root / f"tex{i}.png", _structured(64, 64, i))
    return root


@pytest.mark.usefixtures("fast_gram")
def test_train_then_resume_then_mix(
    cli: Callable, files: dict[str, Path], train_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = cli(
        "train", "texture", train_dir, "--out", run, *TRAIN_ARGS, "--steps", 2,
        "--gram-every", 4, "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["step"] == 2 and doc["gram_net"] == "random-vgg19" and doc["out"] == str(run)
    assert np.isfinite([doc["l1"], doc["gram_rec"], doc["d_rec"]]).all()
    for name in ("latest.safetensors", "state.safetensors", "log.jsonl", "config.json"):
        assert (run / name).is_file(), name
    assert len(list((run / "samples").glob("*.png"))) == 1

    # Steps 2-3 compute no Gram loss (--gram-every 4): the progress line must cope.
    result = cli("train", "texture", "--out", run, "--resume", "--steps", 4, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "step 4: L1" in result.stderr
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [2, 4]
    assert "gram_rec" in entries[0] and "gram_rec" not in entries[1]
    model = load_texture_mixer(run / "latest.safetensors")
    assert model.gram_net == "random-vgg19" and model.config.resolution == 16
    from gantk.io.checkpoint import read_metadata

    assert read_metadata(run / "latest.safetensors")["gantk.steps"] == "4"
    assert len(list((run / "samples").glob("*.png"))) == 2

    out = tmp_path / "mixed.png"
    result = cli(
        "texture-mix", files["t0"], files["t1"], "--model", run / "latest.safetensors",
        "--out", out, "--length", 40, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert _read(out).shape == (16, 40, 3)


@pytest.mark.usefixtures("fast_gram")
def test_train_ablation_flags(cli: Callable, train_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ablation"
    result = cli(
        "train", "texture", train_dir, "--out", run, *TRAIN_ARGS, "--steps", 1, "--no-global",
        "--no-shuffle", "--no-blend", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["global_dim"] == 0 and not config["shuffle"] and not config["blend"]
    assert load_texture_mixer(run / "latest.safetensors").global_encoder is None


def test_train_user_errors(cli: Callable, train_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cases: list[tuple[list[object], str]] = [
        ([train_dir], "give --out"),
        (["--out", run], "give TEXTURES"),
        ([train_dir, "--out", run, "--resume"], "leave out TEXTURES"),
        (["--out", run, "--resume"], "has no state.safetensors to resume"),
        ([train_dir, "--out", run, "--resolution", "24"], "power of two"),
        ([train_dir, "--out", run, *TRAIN_ARGS[:-1], "sobel"], "--gram-net 'sobel'"),
        ([tmp_path / "missing", "--out", run, *TRAIN_ARGS], "does not exist"),
    ]
    for args, message in cases:
        line = error_line(cli("train", "texture", *args, "--device", "cpu"))
        assert message in line, (args, line)
    assert not run.exists()


def test_bad_masks_and_small_backgrounds(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "inputs" / "mask.png"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a png at all")
    tiny_background = _png(tmp_path / "inputs" / "tiny.png", _structured(12, 12, 0))
    out = tmp_path / "out" / "x.png"
    out.parent.mkdir()
    line = error_line(
        _mix(cli, files, files["background"], files["t1"], "--brush", corrupt, "--out", out)
    )
    assert "cannot be decoded" in line or "is not an image" in line
    line = error_line(
        _mix(cli, files, tiny_background, files["t1"], "--brush", files["hole"], "--out", out)
    )
    assert "smaller than the model's" in line
    assert list(out.parent.iterdir()) == []


def test_gram_weights_need_the_real_vgg(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="random-vgg19 uses none"):
        load_gram_net("random-vgg19", tmp_path / "vgg19.pth")


def test_an_unknown_precision_is_refused_before_anything_is_written(
    cli: Callable, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "strip.png"
    out.parent.mkdir()
    result = _mix(cli, files, files["t1"], files["t2"], "--precision", "fp8", "--out", out)
    assert result.exit_code == 2
    assert "precision" in error_line(result)
    assert list(out.parent.iterdir()) == []
