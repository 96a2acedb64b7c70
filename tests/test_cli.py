"""The command line: conventions (exit codes, --json, one-line errors) and the data commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line
from PIL import Image

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.builtin import BUILTINS, load_builtin
from gantk.io.images import load_rgb


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom gantk.cli.main import main\nsys.argv = ['gantk', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY' if {'torch', 'numpy', 'PIL'} & set(sys.modules) else 'LIGHT')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "Commands:" in out and "data" in out and "info" in out
    assert out.strip().endswith("LIGHT")


def test_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gantk", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"gantk {__version__}"


def test_info_json_reports_versions_ops_and_weights(cli, tmp_path, monkeypatch) -> None:
    import torch

    hub = tmp_path / "weights"
    hub.mkdir()
    (hub / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    monkeypatch.setenv("GANTK_WEIGHTS_DIR", str(hub))
    result = cli("info", "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["torch"] == torch.__version__ and facts["gantk"] == __version__
    assert facts["devices"][0]["name"] == "cpu"
    if not torch.cuda.is_available():
        assert facts["ops"]["active"] == "ref"
    found = {w["key"]: w["found"] for w in facts["weights"]}
    assert found["inception-fid"] == str(hub / "pt_inception-2015-12-05-6726825d.pth")
    assert found["alexnet"] is None
    assert facts["weights_search_path"][0] == str(hub)


def test_info_rejects_bad_ops_choice(cli, monkeypatch) -> None:
    monkeypatch.setenv("GANTK_OPS", "fast")
    assert "GANTK_OPS" in error_line(cli("info"))


def test_data_list_json_names_every_builtin(cli) -> None:
    result = cli("data", "list", "--json")
    assert result.exit_code == 0
    names = [d["name"] for d in json.loads(result.stdout)["datasets"]]
    assert names == list(BUILTINS)
    assert result.stderr == ""  # --json output is for programs: no table
    table = cli("data", "list")
    assert table.stdout == "" and "stacked-digits" in table.stderr  # people's table on stderr


def test_export_writes_class_folders_and_attribute_csv(cli, tmp_path) -> None:
    out = tmp_path / "shapes"
    result = cli("data", "export", "builtin:shapes", out, "-n", 12, "--resolution", 16, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == 12 and summary["resolution"] == 16
    reference = load_builtin("builtin:shapes", count=12, resolution=16, seed=0)
    rows = (out / "attributes.csv").read_text().splitlines()
    assert rows[0] == "filename," + ",".join(reference.attribute_names)
    for i, row in enumerate(rows[1:]):
        name, *values = row.split(",")
        cls = reference.class_names[reference.labels[i]]
        assert name == f"{cls}/{i:06d}.png"
        assert [int(v) for v in values] == reference.attributes[i].tolist()
        # PNG is lossless: the files hold exactly the built-in's pixels.
        assert np.array_equal(load_rgb(out / name), reference.images[i])
    assert not list(tmp_path.glob(".*partial*"))


def test_export_pack_info_round_trip(cli, tmp_path) -> None:
    folder, pack = tmp_path / "shapes", tmp_path / "packs" / "shapes.h5"
    assert cli("data", "export", "builtin:shapes", folder, "-n", 20, "-r", 16).exit_code == 0
    result = cli(
        "data",
        "pack",
        folder,
        pack,
        "--resolution",
        16,
        "--labels",
        "--attributes",
        folder / "attributes.csv",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 20
    info = cli("data", "info", pack, "--json")
    assert info.exit_code == 0
    facts = json.loads(info.stdout)
    expected = load_builtin("builtin:shapes", count=20, resolution=16, seed=0).summary()
    assert facts["count"] == 20 and facts["resolution"] == 16
    assert facts["classes"] == expected["classes"]
    assert facts["attributes"] == expected["attributes"]


def test_pack_builtin_directly_and_info_of_builtin(cli, tmp_path) -> None:
    pack = tmp_path / "digits.h5"
    assert cli("data", "pack", "builtin:digits", pack, "-n", 30, "-q").exit_code == 0
    facts = json.loads(cli("data", "info", pack, "--json").stdout)
    assert facts["count"] == 30 and facts["resolution"] == 32
    assert sum(facts["classes"].values()) == 30
    facts = json.loads(cli("data", "info", "builtin:stacked-digits?n=50", "--json").stdout)
    assert facts["count"] == 50 and len(facts["classes"]) == 1000


def test_preview_writes_grid_png(cli, tmp_path) -> None:
    out = tmp_path / "grid.png"
    result = cli("data", "preview", "builtin:digits", out, "--rows", 2, "--cols", 3)
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (3 * 34 + 2, 2 * 34 + 2)  # 32 px tiles, 2 px padding


def test_preview_of_a_folder(cli, image_folder, tmp_path) -> None:
    out = tmp_path / "grid.png"
    assert cli("data", "preview", image_folder, out, "--rows", 1, "--cols", 6).exit_code == 0
    with Image.open(out) as img:
        assert img.size == (6 * 66 + 2, 68)


# --- bad input: each gives one line, exit status 2, nothing written, inputs untouched ---------


def test_missing_path(cli, tmp_path) -> None:
    line = error_line(cli("data", "info", tmp_path / "nope"))
    assert "does not exist" in line


def test_empty_folder_and_non_images(cli, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no files" in error_line(cli("data", "pack", empty, tmp_path / "a.h5", "-r", 32))
    (empty / "notes.txt").write_text("hi")
    assert "only non-image files" in error_line(
        cli("data", "pack", empty, tmp_path / "a.h5", "-r", 32)
    )
    assert not (tmp_path / "a.h5").exists()


def test_unknown_builtin_lists_valid_names(cli, tmp_path) -> None:
    line = error_line(cli("data", "export", "builtin:mnist", tmp_path / "o"))
    assert all(f"builtin:{n}" in line for n in BUILTINS)
    assert not (tmp_path / "o").exists()


def test_resolution_not_power_of_two(cli, image_folder, tmp_path) -> None:
    line = error_line(cli("data", "pack", image_folder, tmp_path / "a.h5", "--resolution", 48))
    assert "power of two" in line
    assert not (tmp_path / "a.h5").exists()


def test_pack_folder_needs_resolution(cli, image_folder, tmp_path) -> None:
    assert "--resolution" in error_line(cli("data", "pack", image_folder, tmp_path / "a.h5"))


def test_image_smaller_than_resolution(cli, image_folder, tmp_path) -> None:
    line = error_line(cli("data", "pack", image_folder, tmp_path / "a.h5", "-r", 64))
    assert "40x40" in line and "--allow-upscale" in line
    ok = cli("data", "pack", image_folder, tmp_path / "a.h5", "-r", 64, "--allow-upscale", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["resolution"] == 64


def test_existing_output_needs_force_and_is_kept(cli, image_folder, tmp_path) -> None:
    out = tmp_path / "a.h5"
    out.write_bytes(b"precious")
    assert "--force" in error_line(cli("data", "pack", image_folder, out, "-r", 32))
    assert out.read_bytes() == b"precious"
    assert cli("data", "pack", image_folder, out, "-r", 32, "--force").exit_code == 0
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_output_inside_input_is_refused(cli, image_folder) -> None:
    before = tree(image_folder)
    line = error_line(cli("data", "export", image_folder, image_folder / "copy", "-r", 32))
    assert "overlaps the input" in line
    assert tree(image_folder) == before


def test_unwritable_out(cli, image_folder, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = error_line(cli("data", "pack", image_folder, blocker / "a.h5", "-r", 32))
    assert "choose another --out" in line


def test_attribute_csv_errors(cli, image_folder, tmp_path) -> None:
    csv = tmp_path / "attrs.csv"
    rows = [f"{c}/img{i}.png,{i % 2}" for c in ("0_real", "1_fake") for i in range(3)]
    csv.write_text("filename,smiling\n" + "\n".join([*rows, "ghost.png,1"]) + "\n")
    line = error_line(
        cli("data", "pack", image_folder, tmp_path / "a.h5", "-r", 32, "--attributes", csv)
    )
    assert "ghost.png" in line
    csv.write_text(
        "filename,smiling\n" + "\n".join(rows).replace("img2.png,0", "img2.png,yes") + "\n"
    )
    line = error_line(
        cli("data", "pack", image_folder, tmp_path / "a.h5", "-r", 32, "--attributes", csv)
    )
    assert "'yes'" in line and "not 0 or 1" in line
    assert not (tmp_path / "a.h5").exists()


def test_corrupt_images_warn_or_fail_with_strict(cli, image_folder, tmp_path) -> None:
    good = (image_folder / "0_real" / "img0.png").read_bytes()
    (image_folder / "0_real" / "cut.png").write_bytes(good[: len(good) // 2])
    buf = tmp_path / "x.jpg"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buf, quality=90)
    (image_folder / "1_fake" / "cut.jpg").write_bytes(buf.read_bytes()[:300])
    before = tree(image_folder)
    out = tmp_path / "a.h5"
    result = cli("data", "pack", image_folder, out, "-r", 32, "--labels", "--json")
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2
    assert any("0_real/cut.png" in w for w in warnings) and any(
        "1_fake/cut.jpg" in w for w in warnings
    )
    summary = json.loads(result.stdout)
    assert summary["written"] == 6 and len(summary["skipped"]) == 2
    strict = cli("data", "pack", image_folder, tmp_path / "b.h5", "-r", 32, "--strict")
    line = error_line(strict)
    assert "cut.png" in line or "cut.jpg" in line
    assert not (tmp_path / "b.h5").exists() and not list(tmp_path.glob(".b.h5*"))
    assert tree(image_folder) == before


def test_labels_on_a_flat_folder(cli, tmp_path) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "a.png")
    line = error_line(cli("data", "pack", folder, tmp_path / "a.h5", "-r", 32, "--labels"))
    assert "one subfolder per class" in line


def test_debug_shows_traceback(cli, tmp_path) -> None:
    from gantk.cli.common import DEBUG

    try:
        result = cli("--debug", "data", "info", tmp_path / "nope")
    finally:
        DEBUG["enabled"] = False
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "error: " in result.stderr


def test_usage_errors_are_one_line(cli) -> None:
    assert error_line(cli("data", "export")) == (
        "error: Missing argument 'DATASET' (see 'gantk data export --help')"
    )
    line = error_line(cli("data", "export", "builtin:digits", "o", "-n", "0"))
    assert "'-n' / '--count'" in line and "greater than or equal to 1" in line
    assert "No such option: --bogus" in error_line(cli("data", "list", "--bogus"))


def test_usage_errors_one_line_from_the_installed_command(tmp_path) -> None:
    """The same through `python -m gantk` (click's standalone mode), where help and the version
    keep exit status 0."""
    import subprocess
    import sys

    gantk = [sys.executable, "-m", "gantk"]
    bad = subprocess.run([*gantk, "data", "export", "x", str(tmp_path / "o"), "-n", "0"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("error: Invalid value for '-n' / '--count'")
    version = subprocess.run([*gantk, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("gantk ")
    helped = subprocess.run([*gantk, "data", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "export" in helped.stdout


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["generate", "g.safetensors", "--grid", "g.png", "--truncation", "nan"],
         "--truncation / --psi"),
        (["texture-mix", "a.png", "b.png", "--out", "m.png", "--scale", "nan"], "--scale"),
        (["train", "stego", "builtin:shapes", "--out", "o", "--lr", "nan"], "--lr"),
        (["train", "attributor", "builtin:shapes", "--out", "o", "--lr", "inf"], "--lr"),
        (["train", "gan", "builtin:shapes", "--out", "o", "--r1-gamma", "-inf"], "--r1-gamma"),
        (["evaluate", "fid", "a", "b", "--truncation", "nan"], "--truncation"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_refused(cli, tmp_path, args, flag) -> None:
    line = error_line(cli(*[a if "." not in a else str(tmp_path / a) for a in args]))
    assert line.startswith(f"error: {flag} must be a finite number, got ")
    assert list(tmp_path.iterdir()) == []


def test_resolution_zero_is_refused_not_the_default(cli, image_folder, tmp_path) -> None:
    """0 used to fall back to the default size (``resolution or default``)."""
    out = tmp_path / "o"
    line = error_line(cli("data", "export", "builtin:shapes?resolution=0", out, "-n", "2"))
    assert "--resolution 0 is not a power of two" in line
    line = error_line(cli("attribute", image_folder, "--baseline", "knn", "--fit", image_folder,
                          "--resolution", "0"))  # fmt: skip
    assert "--resolution 0 is not a power of two" in line
    line = error_line(cli("train", "attributor", image_folder, "--out", out, "--resolution", "0"))
    assert "--resolution 0 is not a power of two" in line
    assert not out.exists()


def test_reversed_seed_range_and_non_utf8_attributes(cli, tmp_path, image_folder) -> None:
    from gantk.gan.generate import parse_seeds

    with pytest.raises(GantkError, match="--seeds range '9-0' runs backwards; write 0-9"):
        parse_seeds("9-0")
    assert parse_seeds("3-3,5") == [3, 5]
    bad = tmp_path / "attrs.csv"
    bad.write_bytes(b"filename,smile\n\xff\xfe.png,1\n")
    out = tmp_path / "p.h5"
    line = error_line(
        cli("data", "pack", image_folder, out, "--resolution", "32", "--attributes", bad)
    )
    assert line == f"error: attribute CSV {bad} is not UTF-8 text (byte 15); save it as 'CSV UTF-8'"
    assert not out.exists()
