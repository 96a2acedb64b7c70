"""The machine says no (disk full, a failed write): one error line naming the output and the
cause, exit status 2, nothing half-written, and a training run keeps its last good state.
ENOSPC is injected where the bytes are written, so the tests run anywhere without a tmpfs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from helpers import error_line
from PIL import Image

FULL = OSError(errno.ENOSPC, "No space left on device")
TINY = ["--resolution", "16", "--batch-size", "8", "--z-dim", "8", "--w-dim", "8",
        "--mapping-layers", "2", "--channel-base", "64", "--channel-max", "8", "--device", "cpu",
        "--quiet"]  # fmt: skip


def _disk_full(*args, **kwargs):
    raise FULL


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".old-" in p.name)


def test_export_on_a_full_disk(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Image.Image, "save", _disk_full)
    out = tmp_path / "ex"
    line = error_line(cli("data", "export", "builtin:shapes", out, "-n", "3"))
    assert line == (
        f"error: cannot write {out} (No space left on device); nothing was written: free space "
        "or fix permissions and run again"
    )
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.fixture
def run(cli, tmp_path) -> Path:
    out = tmp_path / "run"
    result = cli("train", "gan", "builtin:shapes?n=32", "--kimg", "0.016", "--out", out, *TINY)
    assert result.exit_code == 0, result.stderr
    return out


def test_grid_on_a_full_disk(cli, run, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Image.Image, "save", _disk_full)
    grid = tmp_path / "grid.png"
    line = error_line(cli("generate", run / "latest.safetensors", "--grid", grid))
    assert f"cannot write {grid} (No space left on device)" in line
    assert not grid.exists() and _leftovers(tmp_path) == []


def test_training_on_a_full_disk_keeps_the_last_good_state(cli, run, monkeypatch) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    state = (run / "latest-state.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    line = error_line(cli("train", "gan", "--resume", run, "--kimg", "0.032", "--device", "cpu",
                          "--quiet"))  # fmt: skip
    assert "cannot write" in line and "No space left on device" in line
    assert (run / "latest-state.safetensors").read_bytes() == state
    assert _leftovers(run) == []


def test_pack_refuses_before_writing_when_it_cannot_fit(cli, tmp_path, monkeypatch) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    out = tmp_path / "p.h5"
    line = error_line(cli("data", "pack", "builtin:shapes", out, "-n", "100", "--resolution", "64"))
    assert "needs about 2.2 MiB, but only 1.0 MiB are free" in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_pack_write_failure_is_one_line(cli, tmp_path, monkeypatch) -> None:
    import h5py

    monkeypatch.setattr(h5py.Dataset, "resize", _disk_full)
    out = tmp_path / "p.h5"
    line = error_line(cli("data", "pack", "builtin:shapes", out, "-n", "4", "--resolution", "16"))
    assert f"cannot write {out} (No space left on device)" in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_other_os_errors_become_one_line(cli, tmp_path, monkeypatch) -> None:
    """An OSError outside the writers (here: reading a built-in's cache) is still one line."""
    import gantk.cli.data as data_cli

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/cache")

    monkeypatch.setattr(data_cli, "_open", denied)
    line = error_line(cli("data", "export", "builtin:shapes", tmp_path / "o", "-n", "1"))
    assert line == (
        "error: cannot go on: /some/cache (Permission denied); free space or fix permissions "
        "and run again"
    )


def test_training_on_built_in_data_checks_its_folder_first(cli, tmp_path) -> None:
    """The output check used to be skipped for built-in data (it guards against training into
    the data folder): an unusable --out failed only at the first write."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = error_line(cli("train", "gan", "builtin:shapes?n=32", "--kimg", "0.016", "--out",
                          blocker / "run", *TINY))  # fmt: skip
    assert f"{blocker} is not a directory" in line
    assert blocker.read_text() == "x"
