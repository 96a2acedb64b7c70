"""Writing outputs safely: atomically, never over an existing file unless forced, never into
an input.

Every command writes through :func:`atomic_file` or :func:`atomic_dir`: the result is built
under a temporary name beside the target and renamed into place only once complete, so an
interrupted or failed command leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
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
    """Validate an output path before any work is done; returns it resolved.

    Refuses: an existing target without ``force``; a target equal to, inside, or containing an
    input; a target whose parent is not a writable directory.
    """
    target = Path(target).expanduser()
    resolved = target.resolve()
    for item in inputs:
        src = Path(item).expanduser().resolve()
        if resolved == src or _is_within(resolved, src) or _is_within(src, resolved):
            raise GantkError(
                f"output {target} overlaps the input {item}; choose an --out outside the inputs"
            )
    if target.exists() and not force:
        raise GantkError(
            f"{target} already exists; pass --force to replace it or choose another --out"
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


@contextlib.contextmanager
def atomic_file(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` if the block succeeds."""
    target = check_output(target, force)
    _make_parent(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, default_mode(directory=False))
    try:
        yield tmp
        if target.is_dir():
            _remove(target)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; it becomes ``target`` on success.

    With ``force`` an existing target is replaced only after the new content is complete.
    """
    target = check_output(target, force)
    _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(tmp, default_mode(directory=True))
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
