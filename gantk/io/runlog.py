"""A run's ``log.jsonl``: one JSON object per logged step, appended as training goes.

A run resumes from its last saved state, which may be older than the last logged step (a kill
between snapshots). :func:`rewind_log` drops the lines past the step the run restarts from, so
every step is logged once however often the run was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

LOG_FILE = "log.jsonl"


def append_log(path: Path, entry: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def rewind_log(path: Path, step: int) -> None:
    """Keep the lines of ``path`` logged at or before ``step`` (none for a new run, step 0).

    Unparseable lines (a write cut short by a kill) go too. The file is replaced by a rename, so
    a kill during the rewind leaves either the old log or the new one."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if step and isinstance(entry, dict) and entry.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.rewind-{os.getpid()}")
    try:
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
