"""gantk.io.atomic: outputs appear complete or not at all, never over inputs or old results."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gantk.errors import GantkError
from gantk.io import safefile
from gantk.io.atomic import atomic_dir, atomic_file, check_output


class Boom(Exception):
    pass


def _entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- atomic_file


def test_atomic_file_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        assert not target.exists()  # nothing visible under the final name yet
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_file_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert not target.exists()
    assert _entries(tmp_path) == []


def test_atomic_file_keyboard_interrupt_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"x" * 100)
        raise KeyboardInterrupt
    assert _entries(tmp_path) == []


def test_atomic_file_refuses_existing_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(GantkError, match="--force"), atomic_file(target) as tmp:
        tmp.write_text("new")  # pragma: no cover - never reached
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_file_force_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_file(target, force=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_file_force_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_file(target, force=True) as tmp:
        tmp.write_text("new")
        raise Boom
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_file_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("x")
    assert target.read_text() == "x"


def test_atomic_file_has_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "out.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_atomic_dir_has_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


# --------------------------------------------------------------------------- check_output


def test_check_output_returns_resolved(tmp_path: Path) -> None:
    out = check_output(tmp_path / "x" / ".." / "new.h5")
    assert out == (tmp_path / "new.h5").resolve()


def test_check_output_inside_input(tmp_path: Path) -> None:
    data = tmp_path / "images"
    data.mkdir()
    with pytest.raises(GantkError, match="overlaps"):
        check_output(data / "pack.h5", inputs=[data])
    with pytest.raises(GantkError, match="overlaps"):
        check_output(data / "sub" / "out", inputs=[tmp_path / "other", data])


def test_check_output_equal_to_input(tmp_path: Path) -> None:
    src = tmp_path / "pack.h5"
    src.write_bytes(b"data")
    with pytest.raises(GantkError, match="overlaps"):
        check_output(src, force=True, inputs=[src])
    # Also through a different spelling of the same path.
    with pytest.raises(GantkError, match="overlaps"):
        check_output(tmp_path / "." / "pack.h5", force=True, inputs=[str(src)])
    assert src.read_bytes() == b"data"


def test_check_output_containing_input(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="overlaps"):
        check_output(tmp_path / "out", inputs=[tmp_path / "out" / "images"])


def test_check_output_beside_input_is_fine(tmp_path: Path) -> None:
    data = tmp_path / "images"
    data.mkdir()
    assert check_output(tmp_path / "images_out", inputs=[data]) == (tmp_path / "images_out")


def test_check_output_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file")
    with pytest.raises(GantkError, match="not a directory"):
        check_output(blocker / "out.h5")
    with pytest.raises(GantkError, match=r"file\.txt is not a directory"):
        check_output(blocker / "deeper" / "out.h5")
    assert blocker.read_text() == "I am a file"


def test_check_output_creates_no_folders(tmp_path: Path) -> None:
    """Folders appear only when writing starts: a command refused later leaves none behind."""
    check_output(tmp_path / "a" / "b" / "out.h5")
    assert not (tmp_path / "a").exists()
    with atomic_file(tmp_path / "a" / "b" / "out.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "x"


def test_check_output_existing_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "exists"
    target.mkdir()
    with pytest.raises(GantkError, match="--force"):
        check_output(target)
    assert check_output(target, force=True) == target


# --------------------------------------------------------------------------- atomic_dir


def test_atomic_dir_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path
        assert not target.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (target / "a.txt").read_text() == "a"
    assert (target / "sub" / "b.txt").read_text() == "b"
    assert _entries(tmp_path) == ["out"]


def test_atomic_dir_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(Boom), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
        raise Boom
    assert not target.exists()
    assert _entries(tmp_path) == []


def test_atomic_dir_refuses_existing_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(GantkError, match="--force"), atomic_dir(target):
        pass  # pragma: no cover - never reached
    assert _entries(target) == ["old.txt"]
    assert _entries(tmp_path) == ["out"]


def test_atomic_dir_force_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target, force=True) as tmp:
        # The old content is still in place while the new one is being built.
        assert (target / "old.txt").read_text() == "old"
        (tmp / "new.txt").write_text("new")
    assert _entries(target) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert _entries(tmp_path) == ["out"]


def test_atomic_dir_force_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise Boom
    assert _entries(target) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert _entries(tmp_path) == ["out"]


def test_atomic_dir_force_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("was a file")
    with atomic_dir(target, force=True) as tmp:
        (tmp / "x.txt").write_text("x")
    assert target.is_dir()
    assert _entries(target) == ["x.txt"]
    assert _entries(tmp_path) == ["out"]


# --------------------------------------------------------------------------- symbolic links


def test_link_to_a_file_is_replaced_never_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    link = tmp_path / "out.png"
    link.symlink_to(precious)
    with pytest.raises(GantkError, match=r"out\.png is a symbolic link; pass --force"):
        check_output(link)
    with atomic_file(link, force=True) as tmp:
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert precious.read_text() == "keep me"


def test_dangling_link_needs_force(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "nowhere" / "created.csv")
    with pytest.raises(GantkError, match="symbolic link"), atomic_file(link) as tmp:
        tmp.write_text("x")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_link_to_a_folder_is_replaced_and_the_folder_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_text("theirs")
    link = tmp_path / "o" / "dirlink"
    link.parent.mkdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    with atomic_dir(link, force=True) as tmp:
        (tmp / "b.png").write_text("ours")
    assert not link.is_symlink() and _entries(link) == ["b.png"]
    assert _entries(elsewhere) == ["a.png"] and (elsewhere / "a.png").read_text() == "theirs"
    assert _entries(link.parent) == ["dirlink"]  # no leftovers beside it


def test_links_in_parent_folders_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    with atomic_file(tmp_path / "via" / "x.txt") as tmp:
        tmp.write_text("x")
    assert (real / "x.txt").read_text() == "x"


def test_cli_export_over_a_folder_link_keeps_the_linked_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("mine")
    (tmp_path / "dirlink").symlink_to(elsewhere, target_is_directory=True)
    gantk = [sys.executable, "-m", "gantk"]
    args = ["data", "export", "builtin:shapes", str(tmp_path / "dirlink"), "-n", "2", "--flat"]
    refused = subprocess.run([*gantk, *args, "--quiet"], capture_output=True, text=True)
    assert refused.returncode == 2 and "symbolic link" in refused.stderr
    done = subprocess.run([*gantk, *args, "--force", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dirlink").is_dir() and not (tmp_path / "dirlink").is_symlink()
    assert len(list((tmp_path / "dirlink").glob("*.png"))) == 2
    assert _entries(elsewhere) == ["mine.txt"]


# --------------------------------------------------------------------------- concurrent writers

# A writer that builds its output, says so, and publishes only when told to: the test makes
# another real process publish in between.
SLOW_WRITER = """
import sys, time
from pathlib import Path
from gantk.errors import GantkError
from gantk.io.atomic import atomic_dir, atomic_file
kind, target, force, text, ready, go = sys.argv[1:]
writer = atomic_dir if kind == "dir" else atomic_file
try:
    with writer(target, force=force == "1") as tmp:
        (tmp / "content.txt" if kind == "dir" else tmp).write_text(text)
        Path(ready).touch()
        while not Path(go).exists():
            time.sleep(0.02)
except GantkError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def _race(tmp_path: Path, kind: str, force: bool) -> tuple[subprocess.CompletedProcess, Path]:
    """Writer A starts first and publishes last; writer B runs whole in between."""
    target = tmp_path / ("out" if kind == "dir" else "out.txt")
    flag = "1" if force else "0"

    def start(text: str, ready: Path, go: Path) -> subprocess.Popen:
        args = [sys.executable, "-c", SLOW_WRITER, kind, str(target), flag, text, str(ready)]
        return subprocess.Popen([*args, str(go)], stderr=subprocess.PIPE, text=True)

    a = start("A", tmp_path / "a-ready", tmp_path / "a-go")
    while not (tmp_path / "a-ready").exists():
        assert a.poll() is None, a.stderr.read() if a.stderr else ""
        time.sleep(0.02)
    (tmp_path / "b-go").touch()
    b = start("B", tmp_path / "b-ready", tmp_path / "b-go")
    assert b.wait(60) == 0, b.stderr.read() if b.stderr else ""
    (tmp_path / "a-go").touch()
    a.wait(60)
    return subprocess.CompletedProcess(a.args, a.returncode, "", a.stderr.read()), target


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("force", [False, True])
def test_the_later_publisher_loses_and_the_winner_stays(
    tmp_path: Path, kind: str, force: bool
) -> None:
    if force:  # both were told to replace what was there when they started
        if kind == "dir":
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "content.txt").write_text("0")
        else:
            (tmp_path / "out.txt").write_text("0")
    loser, target = _race(tmp_path, kind, force)
    assert loser.returncode == 2
    assert "was written by another process" in loser.stderr
    assert (target / "content.txt" if kind == "dir" else target).read_text() == "B"
    leftovers = [n for n in _entries(tmp_path) if n.startswith(".")]
    assert leftovers == []


def test_noreplace_fallback_without_renameat2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(safefile, "_RENAMEAT2", None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("new")
    dst.write_text("old")
    with pytest.raises(FileExistsError):
        safefile.rename_noreplace(src, dst)
    assert dst.read_text() == "old" and src.exists()
    dst.unlink()
    safefile.rename_noreplace(src, dst)
    assert dst.read_text() == "new" and not src.exists()
    folder, full = tmp_path / "folder", tmp_path / "full"
    folder.mkdir()
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(FileExistsError):
        safefile.rename_noreplace(folder, full)
    assert _entries(full) == ["x"]


def test_output_containing_the_working_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    for target in (".", "..", str(tmp_path / "project")):
        with pytest.raises(GantkError, match="is the folder you are in, one above it"):
            check_output(target, force=True)
    assert (work / "keep.txt").read_text() == "x"
