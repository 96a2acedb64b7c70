"""Reading the files a user names: what every validating reader of gantk starts from.

Each file format gantk reads has one reader that checks it (a safetensors header, a training
state, a statistics file, a fingerprint record, a pack, a CSV, a run log). They all open the file
through :func:`open_regular`, which refuses, before a byte is read:

- a path that does not exist, a folder, and anything that is not a regular file: a FIFO would
  block the command forever waiting for a writer, ``/dev/zero`` would be read until memory runs
  out (opened non-blocking, then checked with ``fstat`` on the descriptor actually opened, so a
  name swapped in between cannot slip past);
- a file larger than the reader's limit, naming both sizes, so nothing is allocated for a size
  only a damaged or hostile file would claim.

CSV goes through :func:`read_csv` (csv errors and over-long fields caught), JSON through
:func:`read_json` (bounded size, bounded nesting: a deeply nested document raises
RecursionError inside the parser, caught here; ``NaN``/``Infinity``, which are not JSON,
refused), ``.npz`` archives through :func:`read_npz` (sizes of the members checked from the zip
directory before any is decompressed; no pickles). :func:`describe` shows a bad value briefly.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gantk.errors import GantkError

MiB = 2**20
FIX = "give the file gantk wrote"  # what to do, where a reader has nothing better to say


def size_text(count: float) -> str:
    """A byte count for people: 512 B, 3.0 MiB, 2.9 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def describe(value: Any, width: int = 40) -> str:
    """A bad value as it appears in a message: its repr, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _refuse_kind(path: Path, mode: int, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise GantkError(f"{what} {path} is a folder, not a file; give the file itself")
    if not stat.S_ISREG(mode):
        kind = "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise GantkError(f"{what} {path} is {kind}, not a regular file; give a file")


def check_regular(path: str | Path, what: str, limit: int | None = None) -> int:
    """The size of the regular file ``path``; GantkError (see the module docstring) otherwise.
    For readers that hand the path to a library (h5py, PIL) after this check."""
    with open_regular(path, what, limit) as f:
        return os.fstat(f.fileno()).st_size


@contextlib.contextmanager
def open_regular(path: str | Path, what: str, limit: int | None = None) -> Iterator[BinaryIO]:
    """``path`` opened for binary reading, if it is a regular file of at most ``limit`` bytes."""
    path = Path(path).expanduser()
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise GantkError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise GantkError(f"{what} {path} is a folder, not a file; give the file itself") from None
    except OSError as exc:
        raise GantkError(
            f"cannot read {what} {path} ({exc.strerror or exc}); fix its permissions or give "
            "another file"
        ) from None
    try:
        info = os.fstat(fd)
        _refuse_kind(path, info.st_mode, what)
        if limit is not None and info.st_size > limit:
            raise GantkError(
                f"{what} {path} is {size_text(info.st_size)}, more than a {what} can be "
                f"({size_text(limit)}); it is damaged or another kind of file: give the right one"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_bytes(path: str | Path, what: str, limit: int) -> bytes:
    with open_regular(path, what, limit) as f:
        try:
            return f.read(limit + 1)[:limit]
        except OSError as exc:
            raise GantkError(f"cannot read {what} {path} ({exc.strerror or exc})") from None


def read_text(path: str | Path, what: str, limit: int, fix: str = FIX) -> str:
    """A UTF-8 text file (a byte-order mark is dropped, as spreadsheets write one); ``fix``
    ends the message for text in another encoding (or binary data)."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GantkError(f"{what} {path} is not UTF-8 text (byte {exc.start}); {fix}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, where: str, allow_nan: bool = False, fix: str = FIX) -> Any:
    """JSON from text, or GantkError naming ``where`` and ending with ``fix`` (damaged, nested
    too deep; NaN and Infinity, which are not JSON, unless ``allow_nan``: a log of a loss that
    diverged)."""
    try:
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise GantkError(f"{where} is nested too deeply to be a file gantk wrote; {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise GantkError(f"{where} is not valid JSON ({exc}); {fix}") from None


def read_json(path: str | Path, what: str, limit: int = 16 * MiB, fix: str = FIX) -> Any:
    """A JSON file of at most ``limit`` bytes, parsed; GantkError naming ``what`` otherwise."""
    return parse_json(read_text(path, what, limit, fix), f"{what} {path}", fix=fix)


def read_csv(
    path: str | Path, what: str, limit: int = 64 * MiB, fix: str = FIX
) -> list[tuple[int, list[str]]]:
    """(line number, row) of each row of a UTF-8 CSV file of at most ``limit`` bytes (blank
    lines dropped);
    GantkError for text the csv module cannot split (an unclosed quote, a field longer than
    its limit, a NUL byte), naming the line."""
    import csv
    import io

    reader = csv.reader(io.StringIO(read_text(path, what, limit, fix), newline=""))
    rows = []
    try:
        for row in reader:
            if row and "".join(row).strip():
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise GantkError(f"{what} {path} line {reader.line_num}: {exc}; {fix}") from None
    return rows


def read_npz(
    path: str | Path, what: str, hint: str, limit: int = 1024 * MiB
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, loaded without pickles; refuses (GantkError ending
    with ``hint``, what to do) a file that is no such archive, is damaged, or whose arrays
    would take more than ``limit`` bytes together once decompressed."""
    with open_regular(path, what) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                total = sum(info.file_size for info in archive.infolist())
                if total > limit:
                    raise GantkError(
                        f"{what} {path} would unpack to {size_text(total)}, more than "
                        f"{size_text(limit)}; {hint}"
                    )
            f.seek(0)
            with np.load(f, allow_pickle=False) as data:
                return {name: np.asarray(data[name]) for name in data.files}
        except GantkError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GantkError(f"{path} is not a {what} ({reason}); {hint}") from None


def scalar_int(value: Any, where: str, low: int = 0, fix: str = FIX) -> int:
    """A whole number stored as a 0-d (or one-element) array, at least ``low``."""
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iu":
        raise GantkError(f"{where} is {describe(value)}, not a whole number; {fix}")
    number = int(array.reshape(()))
    if number < low:
        raise GantkError(f"{where} is {number}, less than {low}; {fix}")
    return number
