"""Sizes checked before anything of that size is allocated or written.

A number typed on the command line (``--seeds 0-1000000000000``, ``--count 10**12``,
``builtin:shapes?n=1000000&resolution=1024``, ``texture-mix --length 100000000``) becomes a
list, an array or files of that size. Each such number is checked here first, and refused with
one message naming the size it asks for and what it has to fit in:

- :func:`check_count`: a count against a fixed bound of what one command does;
- :func:`check_memory`: bytes to hold at once against this machine's memory;
- :func:`check_disk`: bytes to write against the free space where they go.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gantk.errors import GantkError
from gantk.io.files import size_text

# One command never makes more images (or generators) than this: more would be a typing mistake
# (10^12) long before it is a plan, and the lists of names and seeds alone would not fit.
MAX_ITEMS = 10_000_000


def check_count(
    what: str, count: int, fix: str, noun: str = "images", limit: int = MAX_ITEMS
) -> int:
    """``count`` if at most ``limit``; GantkError naming it otherwise."""
    if count > limit:
        raise GantkError(
            f"{what} asks for {count} {noun}, more than the {limit} one command makes; {fix}"
        )
    return count


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(what: str, needed: int, fix: str) -> int:
    """Refuse to hold ``needed`` bytes at once when they exceed this machine's memory."""
    total = physical_memory()
    if total is not None and needed > total:
        raise GantkError(
            f"{what} needs {size_text(needed)} of memory, more than this machine's "
            f"{size_text(total)}; {fix}"
        )
    return needed


def check_disk(target: str | Path, needed: int, what: str, fix: str) -> int:
    """Refuse to write ``needed`` bytes to ``target`` when its file system has less free space
    (measured at the nearest folder above it that exists)."""
    folder = Path(target).expanduser().absolute().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise GantkError(
            f"{what} needs about {size_text(needed)}, but only {size_text(free)} are free on "
            f"{folder}; {fix}"
        )
    return needed
