"""Checkpoints: safetensors files that say what they hold.

Metadata keys: ``gantk.kind`` (what network or state this is, e.g. ``gan-generator``),
``gantk.config`` (JSON enough to rebuild the network), ``gantk.version``. Files are checked
before anything is read: a pickle, a truncated file or a file of another kind is refused with a
clear message, and nothing in a user's file is ever executed.

Training state for ``--resume`` (optimizer moments, counters, RNG states) uses the same format:
:func:`flatten_state` turns any nesting of dicts, lists, tensors and JSON values into tensors
plus a JSON skeleton, and :func:`unflatten_state` reverses it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file, default_mode

# safetensors files begin with an 8-byte little-endian header length; anything above this is
# not a header we would write (and guards against reading a huge bogus length into memory).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_TENSOR_REF = "__tensor__"


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    kind: str
    config: dict[str, Any]
    version: str
    metadata: dict[str, str] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    kind: str,
    config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    force: bool = True,
) -> Path:
    """Write ``tensors`` atomically with the gantk metadata; returns the path."""
    from safetensors.torch import save_file

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(
        {
            "gantk.kind": kind,
            "gantk.config": json.dumps(dict(config or {}), sort_keys=True),
            "gantk.version": __version__,
        }
    )
    # safetensors refuses views that share storage; a contiguous CPU copy of each is always valid.
    payload = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    from safetensors import SafetensorError

    with atomic_file(path, force) as tmp:
        try:
            save_file(payload, str(tmp), metadata=meta)
        except SafetensorError as exc:  # how safetensors reports a failed write (disk full...)
            raise OSError(errno.EIO, str(exc).split("message:")[-1].strip(' "})')) from exc
        os.chmod(tmp, default_mode(directory=False))  # save_file recreates the file as 0600
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (recorded for models a file came from)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_header(path: str | Path) -> dict[str, Any]:
    """Parse and validate the safetensors header without loading any tensor data."""
    path = Path(path)
    if not path.is_file():
        raise GantkError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise GantkError(f"{path} is not a safetensors checkpoint (file too short)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise GantkError(
                f"{path} is not a safetensors checkpoint (pickles and other formats "
                "are refused for safety); convert it or give a gantk .safetensors file"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GantkError(f"{path} is not a safetensors checkpoint (unreadable header)") from None
    if not isinstance(header, dict):
        raise GantkError(f"{path} is not a safetensors checkpoint (bad header)")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        end = entry.get("data_offsets", [0, 0])[1] if isinstance(entry, dict) else None
        if end is None or end > data_bytes:
            raise GantkError(
                f"{path} is truncated or damaged (tensor {name!r} runs past the end "
                "of the file); re-copy it or use an earlier checkpoint"
            )
    return header


def read_metadata(path: str | Path) -> dict[str, str]:
    return dict(read_header(path).get("__metadata__") or {})


def load_checkpoint(
    path: str | Path, kind: str | Iterable[str] | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a gantk checkpoint; ``kind`` (one or several) is what the caller can use."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_metadata(path)
    found = meta.get("gantk.kind")
    if found is None:
        raise GantkError(f"{path} is a safetensors file but not a gantk checkpoint (no gantk.kind)")
    wanted = [kind] if isinstance(kind, str) else list(kind or [])
    if wanted and found not in wanted:
        raise GantkError(
            f"{path} holds a {found}, not a {' or '.join(wanted)}; "
            "give a checkpoint of the right kind"
        )
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise GantkError(
            f"{path} could not be read ({exc}); re-copy it or use another checkpoint"
        ) from exc
    try:
        config = json.loads(meta.get("gantk.config", "{}"))
    except json.JSONDecodeError:
        raise GantkError(f"{path} has a damaged gantk.config; re-create the checkpoint") from None
    return Checkpoint(tensors, found, config, meta.get("gantk.version", "unknown"), meta)


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into tensors (keyed by path) and a JSON skeleton referring to them."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[key] = node
            return {_TENSOR_REF: key}
        if isinstance(node, Mapping):
            # JSON object keys are strings: remember which were ints (optimizer param ids).
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if hasattr(node, "tolist"):  # numpy arrays and scalars (e.g. numpy RNG state)
            return {"__ndarray__": node.tolist(), "dtype": str(node.dtype)}
        raise TypeError(f"cannot store {type(node).__name__} at {key} in a training state")

    skeleton = walk(state, prefix or "state")
    return tensors, skeleton


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    def build(node: Any) -> Any:
        if isinstance(node, list):
            return [build(v) for v in node]
        if isinstance(node, dict):
            if _TENSOR_REF in node:
                return tensors[node[_TENSOR_REF]]
            if "__dict__" in node:
                return {k: build(v) for k, v in node["__dict__"]}
            if "__tuple__" in node:
                return tuple(build(v) for v in node["__tuple__"])
            if "__ndarray__" in node:
                import numpy as np

                return np.asarray(node["__ndarray__"], dtype=node["dtype"])
        return node

    return build(skeleton)


def save_training_state(
    path: str | Path,
    state: Any,
    kind: str = "training-state",
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Store a nested training state (e.g. optimizer.state_dict(), counters, RNG states)."""
    tensors, skeleton = flatten_state(state)
    return save_checkpoint(path, tensors, kind, config, {"gantk.state": json.dumps(skeleton)})


def load_training_state(path: str | Path, kind: str = "training-state") -> tuple[Any, dict]:
    ckpt = load_checkpoint(path, kind)
    try:
        skeleton = json.loads(ckpt.metadata["gantk.state"])
    except (KeyError, json.JSONDecodeError):
        raise GantkError(
            f"{path} has no readable training state; resume from another run"
        ) from None
    return unflatten_state(ckpt.tensors, skeleton), ckpt.config


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, so a resumed run continues the same sequence."""
    import random

    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    import random

    import numpy as np

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
