"""Writing and locking files safely: the primitives every writer in gantk goes through.

- A new file is built under a temporary name beside its target (:func:`temporary_beside`,
  named ``.NAME.HOST-PID.RANDOM8.partial`` so that a later command can clear what a killed one
  left: :func:`remove_stale_partials`), with its final mode from the start, then moved into
  place in one step: :func:`rename_noreplace` (never over another writer's file, for
  :mod:`gantk.io.atomic`'s outputs) or :func:`replace_file` (over the previous version, synced
  to disk first, for state that is rewritten in place: the fingerprint registry, the ops
  build's marks).
- One lock (:func:`exclusive`): a lock file naming its owner (pid, host, start time), taken by
  an exclusive create and cleared when its owner is gone or, if asked, too old; used by the
  registry of scalable fingerprints and the CUDA ops build.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path


def default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp and mkdtemp
    use 0600/0700, which would make every output private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def remove(path: Path) -> None:
    """Remove a file, a link or a folder with everything in it; nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def partial_prefix(target: Path) -> str:
    """Temporaries are named ``.NAME.HOST-PID.RANDOM8.partial``: who made one is in its name,
    so a later command can tell one whose maker is gone (killed with -9, or by the machine
    going down) from one another command is still writing."""
    return f".{target.name}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove the temporaries of ``target`` left by commands that died before finishing (no
    handler runs on kill -9): only those named for this very output, made on this machine by a
    process that no longer exists. Returns what was removed."""
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.{re.escape(_host())}-(\d+)\.[A-Za-z0-9_]+\.partial"
    )
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk: without it a crash soon after a
    rename can leave an empty file under the final name."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # some platforms cannot open folders; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def temporary_beside(target: Path, mode: int) -> Iterator[Path]:
    """A new empty file beside ``target`` with ``mode`` from the start (set before anything is
    written: a reader who opened it earlier would keep reading after a later chmod), removed
    again if the block fails. Temporaries of killed commands for ``target`` are cleared first."""
    remove_stale_partials(target)
    fd, name = tempfile.mkstemp(prefix=partial_prefix(target), suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, mode)
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def replace_file(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block succeeds, sync it and move it
    over ``target`` (replacing the previous version), then sync the folder. A failure leaves the
    previous file as it was. ``mode``: default, what a plain open() would give."""
    with temporary_beside(target, default_mode(False) if mode is None else mode) as tmp:
        yield tmp
        fsync(tmp)
        os.replace(tmp, target)
    fsync(target.parent, directory=True)


# ----------------------------------------------------------------------------------------------
# The lock

# A lock file still being written by its owner is unreadable for a moment; after this long an
# unreadable lock belongs to a process that died mid-write.
UNREADABLE_LOCK_GRACE_S = 10.0


def lock_is_stale(path: Path, stale_after: float | None) -> bool:
    """Whether the lock at ``path`` can be cleared: its owner (on this host) died, or it is
    older than ``stale_after`` seconds (None: never too old)."""
    try:
        owner = json.loads(path.read_text())
        started = float(owner["time"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_LOCK_GRACE_S
        except FileNotFoundError:
            return False
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return True
    return stale_after is not None and time.time() - started > stale_after


@contextlib.contextmanager
def exclusive(
    path: Path,
    timeout: float,
    busy: Callable[[], Exception],
    stale_after: float | None = None,
    what: str = "lock",
    poll: float = 0.5,
) -> Iterator[None]:
    """Hold the lock file ``path`` for the block, against every other gantk process.

    Waits up to ``timeout`` seconds for another holder, then raises ``busy()``; a stale lock
    (:func:`lock_is_stale`) is cleared with a warning naming ``what``. The lock file is removed
    on release (only if it is still this holder's)."""
    deadline = time.monotonic() + timeout
    token = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_is_stale(path, stale_after):
                warnings.warn(f"cleared a stale {what}: {path}", stacklevel=4)
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise busy() from None
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(token, handle)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()) == token:
                path.unlink()
