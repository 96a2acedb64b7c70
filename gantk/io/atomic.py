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
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from gantk.errors import GantkError


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


def check_output(
    target: str | Path, force: bool = False, inputs: Iterable[str | Path] = ()
) -> Path:
    """Validate an output path before any work is done; returns it absolute, with the folders
    above it resolved but not the last component (a link there is replaced, never followed).

    Refuses: an existing target (a link, even dangling, counts) without ``force``; a target equal
    to, inside, or containing an input; a target whose parent is not a writable directory.
    """
    target = Path(target).expanduser()
    # Lexically first (so "x/.." and "." have a real last component), then the folders above.
    absolute = Path(os.path.normpath(target.absolute()))
    resolved = absolute.parent.resolve() / absolute.name
    for item in inputs:
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


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GantkError(
            f"cannot create the folder for {target} ({exc.strerror}); choose another --out"
        ) from exc


def default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp and mkdtemp
    use 0600/0700, which would make every output private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        func = ctypes.CDLL(name, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None  # not glibc >= 2.28 (e.g. macOS, musl): the portable fallback is used
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


_RENAMEAT2 = _renameat2()


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising FileExistsError if ``dst`` exists, atomically.

    Linux's renameat2(RENAME_NOREPLACE) where the file system supports it; otherwise a hard link
    for files (link() never replaces) and, for folders, rename() after a check: rename() refuses
    a non-empty folder in the way, so only an empty one appearing in that instant is lost.
    """
    if _RENAMEAT2 is not None:
        if (
            _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
            == 0
        ):
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    if src.is_dir():
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from exc
            raise
    else:
        os.link(src, dst, follow_symlinks=False)
        os.unlink(src)


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
    _remove(old)  # left by an earlier crashed process that had the same pid
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
        _remove(old)
        raise _lost_race(target) from None
    _remove(old)


@contextlib.contextmanager
def atomic_file(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` if the block succeeds."""
    target = check_output(target, force)
    before = _identity(target)
    _make_parent(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, default_mode(directory=False))
    try:
        yield tmp
        _publish(tmp, target, before)
    except OSError as exc:
        _remove(tmp)
        raise write_failed(target, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; it becomes ``target`` on success.

    With ``force`` an existing target is replaced only after the new content is complete.
    """
    target = check_output(target, force)
    before = _identity(target)
    _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(tmp, default_mode(directory=True))
    try:
        yield tmp
        _publish(tmp, target, before)
    except OSError as exc:
        _remove(tmp)
        raise write_failed(target, exc) from exc
    except BaseException:
        _remove(tmp)
        raise
