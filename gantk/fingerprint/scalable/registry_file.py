"""The HDF5 layout of a registry of scalable fingerprints (see
:mod:`gantk.fingerprint.scalable.registry` for what it holds and why): its entries, the canonical
text its seal is computed over, and writing and reading the file's fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KIND = "fingerprint-registry"
FORMAT = 2  # 2: HMAC seal and key_id; 1: plain SHA-256 checksum (read, upgraded on save)


@dataclass(eq=False)
class RegistryEntry:
    """One user: name, fingerprint (uint8 0/1, read-only), registration time, shipped file hash."""

    name: str
    fingerprint: np.ndarray
    created: str
    instance_sha256: str


def content(
    fmt: int, bits: int, run: str, created: str, version: str, entries: list[RegistryEntry]
) -> str:
    """A canonical JSON serialization, independent of the HDF5 layout (chunking, string
    storage), so that only a change of content changes its seal."""
    content = {
        "kind": KIND,
        "format": fmt,
        "version": version,
        "bits": bits,
        "run": run,
        "created": created,
        "entries": [
            [e.name, (e.fingerprint + ord("0")).astype(np.uint8).tobytes().decode("ascii"),
             e.created, e.instance_sha256]
            for e in entries
        ],
    }  # fmt: skip
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def attr_str(attrs, key: str) -> str:
    value = attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def strings(dataset) -> list[str]:
    return [str(s) for s in dataset.asstr()[...]]


def write_h5(tmp: Path, registry: Any, checksum: str, version: str, key: str) -> None:
    """Write the whole ``registry`` (a :class:`~gantk.fingerprint.scalable.registry.Registry`,
    typed loosely: that module imports this one) into ``tmp`` (a fresh file, replaced into place
    by the caller)."""
    import h5py

    strings = h5py.string_dtype()
    with h5py.File(tmp, "w") as f:
        f.attrs["gantk.kind"] = KIND
        f.attrs["gantk.format"] = FORMAT
        f.attrs["gantk.version"] = version
        f.attrs["bits"] = registry.bits
        f.attrs["run"] = registry.run
        f.attrs["created"] = registry.created
        f.attrs["checksum"] = checksum
        f.attrs["key_id"] = key
        entries = registry.entries
        f.create_dataset("names", data=np.array([e.name for e in entries], dtype=object),
                         dtype=strings)  # fmt: skip
        f.create_dataset("fingerprints", data=registry.fingerprints(), dtype=np.uint8)
        f.create_dataset("created", data=np.array([e.created for e in entries], dtype=object),
                         dtype=strings)  # fmt: skip
        f.create_dataset(
            "instance_sha256",
            data=np.array([e.instance_sha256 for e in entries], dtype=object),
            dtype=strings,
        )


def stored_checksum(path: Path) -> str | None:
    """The checksum attribute of the file at ``path``; None if it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return attr_str(f.attrs, "checksum")
    except (OSError, KeyError, TypeError, ValueError):
        return None
