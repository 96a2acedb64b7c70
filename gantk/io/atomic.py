"""Writing outputs safely: atomically, never over an existing file unless forced, never into
an input.

Every command writes through :func:`atomic_file` or :func:`atomic_dir`: the result is built
under a temporary name beside the target and renamed into place only once complete, so an
interrupted or failed command leaves nothing half-written behind.

Two rules make the publish step safe against other writers and planted links:

- A symbolic link at the output path is never followed. It counts as an existing output
  (``--force`` needed, even when it dangles), and ``--force`` replaces the link itself; the file
  or folder it points to is left as it was. Links in the folders above the output are followed,
  as for any path the user names.
- Publishing never overwrites what another process wrote meanwhile. Without ``force`` the
  target is created by a rename that fails if the name exists (``RENAME_NOREPLACE``); with
  ``force`` the target must still be the one found when the command started. The command that
  loses such a race fails with an error and removes only its own temporary output.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from gantk.errors import GantkError
from gantk.io.safefile import (
    default_mode,
    partial_prefix,
    remove,
    remove_stale_partials,
    rename_noreplace,
    temporary_beside,
)

# Every file and folder the running command was given to read (set by the CLI for the whole
# command, gantk.cli.common.handle_errors): every output checked anywhere below it is checked
# against all of them, not only against the inputs its caller thought of.
_COMMAND_INPUTS: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "gantk_command_inputs", default=()
)


@contextlib.contextmanager
def command_inputs(paths: Iterable[str | Path]) -> Iterator[None]:
    """Declare the inputs of the command running in this block (see :func:`check_output`)."""
    token = _COMMAND_INPUTS.set(tuple(Path(p) for p in paths))
    try:
        yield
    finally:
        _COMMAND_INPUTS.reset(token)


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


OutputKind = Literal["file", "dir"]


def check_output(
    target: str | Path,
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    kind: OutputKind | None = None,
) -> Path:
    """Validate an output path before any work is done; returns it absolute, with the folders
    above it resolved but not the last component (a link there is replaced, never followed).

    Refuses: an existing target (a link, even dangling, counts) without ``force``; a target equal
    to, inside, or containing an input (``inputs`` and every input the command declared,
    :func:`command_inputs`); with ``force``, replacing a folder by a file (``kind`` "file"; a
    link is replaced whatever it points to); a target whose parent is not a writable directory.
    """
    target = Path(target).expanduser()
    # Lexically first (so "x/.." and "." have a real last component), then the folders above.
    absolute = Path(os.path.normpath(target.absolute()))
    resolved = absolute.parent.resolve() / absolute.name
    for item in [*inputs, *_COMMAND_INPUTS.get()]:
        src = Path(item).expanduser().resolve()
        if resolved == src or _is_within(resolved, src) or _is_within(src, resolved):
            raise GantkError(
                f"output {target} overlaps the input {item}; choose an --out outside the inputs"
            )
    here = Path.cwd().resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    if resolved in (here, home) or _is_within(here, resolved):
        raise GantkError(
            f"output {target} is the folder you are in, one above it, or your home; "
            "choose an --out of its own"
        )
    if os.path.lexists(target) and not force:
        what = "is a symbolic link" if target.is_symlink() else "already exists"
        raise GantkError(f"{target} {what}; pass --force to replace it or choose another --out")
    if kind == "file" and target.is_dir() and not target.is_symlink():
        # --force replaces an earlier output file: never a folder (someone's files) by a file.
        raise GantkError(
            f"{target} is a folder; --force replaces a file, never a folder and its files: "
            "choose another name (or remove the folder yourself)"
        )
    # Check the nearest existing ancestor; folders are created only when writing starts, so a
    # command that fails later leaves no empty folders behind.
    ancestor = resolved.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise GantkError(
            f"cannot write {target}: {ancestor} is not a directory; choose another --out"
        )
    if not os.access(ancestor, os.W_OK):
        raise GantkError(f"cannot write into {ancestor} (permission denied); choose another --out")
    return resolved


def missing_top(folder: Path) -> Path | None:
    """The topmost folder of ``folder``'s path that does not exist yet (None if it exists):
    what creating ``folder`` would create, so that a failure can remove it again."""
    top = None
    while not folder.exists():
        top, folder = folder, folder.parent
    return top


def remove_empty_folders(folder: Path, top: Path | None) -> None:
    """Remove ``folder`` and the folders above it, up to ``top``, while they are empty (None:
    nothing was created): a failed command leaves no empty folders behind."""
    if top is None or (folder != top and top not in folder.parents):
        return  # never above what was created
    while True:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another writer's files) or gone: leave it
        if folder == top:
            return
        folder = folder.parent


def _make_parent(target: Path) -> Path | None:
    """Create the folders above ``target``; returns the topmost one created (None if all
    existed), for :func:`remove_empty_folders` when the command fails."""
    top = missing_top(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GantkError(
            f"cannot create the folder for {target} ({exc.strerror}); choose another --out"
        ) from exc
    return top


Identity = tuple[int, int, int] | None


def _identity(path: Path) -> Identity:
    """What sits at ``path`` (the link itself for a link): device, inode, modification time;
    None if nothing. A different value at publish time means another process wrote there
    meanwhile (writers publish new inodes; rename() keeps both inode and mtime)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def os_reason(exc: OSError) -> str:
    """The cause of an OSError in a few words (h5py puts a whole report in its message)."""
    return exc.strerror or str(exc).split("(")[0].strip().splitlines()[0] or type(exc).__name__


def write_failed(target: Path, exc: OSError) -> GantkError:
    return GantkError(
        f"cannot write {target} ({os_reason(exc)}); nothing was written: free space or fix "
        "permissions and run again"
    )


def _lost_race(target: Path) -> GantkError:
    return GantkError(
        f"{target} was written by another process while this one ran; its output is kept and "
        "this one discarded: run again with another --out (or --force to replace it)"
    )


def _publish(tmp: Path, target: Path, before: Identity) -> None:
    """Move the finished ``tmp`` onto ``target``, which held ``before`` when the command began."""
    if before is None:
        try:
            rename_noreplace(tmp, target)
        except FileExistsError:
            raise _lost_race(target) from None
        return
    # --force: set what was there aside (the link itself, never what it points to), check it is
    # still what the command started from, then put the new output in its place.
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    remove(old)  # left by an earlier crashed process that had the same pid
    try:
        os.replace(target, old)
    except FileNotFoundError:
        raise _lost_race(target) from None
    if _identity(old) != before:
        with contextlib.suppress(OSError):
            rename_noreplace(old, target)  # give the other writer its output back
        raise _lost_race(target)
    try:
        rename_noreplace(tmp, target)
    except FileExistsError:
        remove(old)
        raise _lost_race(target) from None
    remove(old)


@contextlib.contextmanager
def atomic_file(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` if the block succeeds."""
    target = check_output(target, force, kind="file")
    before = _identity(target)
    created = _make_parent(target)
    try:
        with temporary_beside(target, default_mode(directory=False)) as tmp:
            yield tmp
            _publish(tmp, target, before)
    except OSError as exc:
        remove_empty_folders(target.parent, created)
        raise write_failed(target, exc) from exc
    except BaseException:
        remove_empty_folders(target.parent, created)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; it becomes ``target`` on success.

    With ``force`` an existing target is replaced only after the new content is complete.
    """
    target = check_output(target, force, kind="dir")
    before = _identity(target)
    created = _make_parent(target)
    remove_stale_partials(target)
    tmp = Path(
        tempfile.mkdtemp(prefix=partial_prefix(target), suffix=".partial", dir=target.parent)
    )
    os.chmod(tmp, default_mode(directory=True))
    try:
        yield tmp
        _publish(tmp, target, before)
    except OSError as exc:
        remove(tmp)
        remove_empty_folders(target.parent, created)
        raise write_failed(target, exc) from exc
    except BaseException:
        remove(tmp)
        remove_empty_folders(target.parent, created)
        raise


def check_run_folder(
    out: str | Path, inputs: Iterable[str | Path] = (), force: bool = False, resume: bool = False
) -> Path:
    """The folder of a training run (``--out`` of every trainer), checked before training:
    like any output, not overlapping an input (the data) and writable; a folder, not a file nor
    a symbolic link (a run writes into it, and would follow the link); for a new run, absent or
    empty unless ``force`` (each trainer then replaces only its own earlier artifacts)."""
    out = Path(out).expanduser()
    check_output(out, force=True, inputs=inputs)
    if out.is_symlink():
        raise GantkError(f"--out {out} is a symbolic link; give the run folder itself")
    if out.exists() and not out.is_dir():
        raise GantkError(f"--out {out} is a file; give a folder for the run")
    if not resume and not force and out.is_dir() and any(out.iterdir()):
        raise GantkError(
            f"{out} already holds a run or other files; --resume it if it is a run, choose "
            "another --out, or pass --force"
        )
    return out


@contextlib.contextmanager
def new_run(out: Path, resumable: Callable[[], bool]) -> Iterator[None]:
    """A new training run in ``out``: should it fail before saving anything it could resume
    from (``resumable()`` false: a full disk, data found unusable late), what it wrote is
    removed again, and the folders the run made. A failed or refused run leaves no config.json
    and no empty folder behind; files that were there before are never touched."""
    out = Path(out).absolute()
    created = missing_top(out)
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    try:
        yield
    except BaseException:
        if not resumable() and out.is_dir():
            for path in out.iterdir():
                if path.name not in before:
                    remove(path)
            remove_empty_folders(out, created)
        raise
