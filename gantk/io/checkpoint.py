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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gantk import __version__
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file
from gantk.io.safefile import default_mode

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
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``tensors`` atomically with the gantk metadata; returns the path. ``dtype`` (e.g.
    float16 for the models that ship in the wheel) converts the floating-point tensors; every
    loader converts them back to float32."""
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
    if dtype is not None:
        payload = {k: v.to(dtype) if v.is_floating_point() else v for k, v in payload.items()}
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


# Bytes per element of each dtype a safetensors header may name.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1,
               "F8_E5M2": 1}  # fmt: skip


def _damaged(path: Path, why: str) -> GantkError:
    return GantkError(
        f"{path} is not a usable safetensors checkpoint ({why}); re-copy it or use a "
        "checkpoint gantk wrote"
    )


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(path: Path, name: str, entry: Any, data_bytes: int) -> None:
    """One tensor's header entry: dtype, shape and data_offsets of the right types, the byte
    range inside the file and as long as the shape and dtype say."""
    from gantk.io.files import describe

    if not isinstance(entry, dict):
        raise _damaged(path, f"tensor {name!r} is described by {describe(entry)}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise _damaged(path, f"tensor {name!r} has dtype {describe(dtype)}")
    if not isinstance(shape, list) or not all(_whole(d) for d in shape):
        raise _damaged(path, f"tensor {name!r} has shape {describe(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
            and offsets[0] <= offsets[1]):  # fmt: skip
        raise _damaged(path, f"tensor {name!r} has data_offsets {describe(offsets)}, not "
                             "[begin, end]")  # fmt: skip
    if offsets[1] > data_bytes:
        raise GantkError(
            f"{path} is truncated or damaged (tensor {name!r} runs past the end "
            "of the file); re-copy it or use an earlier checkpoint"
        )
    count = 1
    for d in shape:
        count *= d
    if offsets[1] - offsets[0] != count * DTYPE_BYTES[dtype]:
        raise _damaged(path, f"tensor {name!r} of shape {shape} does not fill its bytes")


def read_header(path: str | Path) -> dict[str, Any]:
    """Parse and validate the safetensors header without loading any tensor data: the one
    reader of safetensors files (a regular file; a header of bounded size, JSON, with a
    well-formed entry per tensor inside the file and string metadata)."""
    from gantk.io.files import describe, open_regular, parse_json

    path = Path(path)
    with open_regular(path, "checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
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
        header = parse_json(raw, "header")
    except GantkError:
        raise GantkError(f"{path} is not a safetensors checkpoint (unreadable header)") from None
    if not isinstance(header, dict):
        raise GantkError(f"{path} is not a safetensors checkpoint (bad header)")
    data_bytes = size - 8 - length
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _damaged(path, f"__metadata__ is {describe(metadata)}, not text by name")
    for name, entry in header.items():
        if name != "__metadata__":
            _check_entry(path, name, entry, data_bytes)
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
    return Checkpoint(tensors, found, read_config(path, meta), meta.get("gantk.version", "unknown"),
                      meta)  # fmt: skip


def read_config(path: str | Path, meta: Mapping[str, str]) -> dict[str, Any]:
    """A checkpoint's ``gantk.config``: a JSON object (what each network's config is then
    parsed from, field by field, in :mod:`gantk.io.config_schema`)."""
    from gantk.io.files import describe, parse_json

    try:
        # NaN/Infinity as Python's json writes them: parse_config names a field holding one.
        config = parse_json(meta.get("gantk.config", "{}"), "gantk.config", allow_nan=True)
    except GantkError as exc:
        raise GantkError(
            f"{path} has a damaged gantk.config ({exc}); re-create the checkpoint"
        ) from None
    if not isinstance(config, dict):
        raise GantkError(
            f"{path} has a damaged gantk.config (config is {describe(config)}, not an object of "
            "settings); re-create the checkpoint"
        )
    return config


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


# Nesting a training state needs (optimizer state: state -> param id -> moment): far below
# this; a skeleton nested deeper is damaged or hostile, and would exhaust the stack.
MAX_STATE_DEPTH = 32
# numpy arrays a state may hold (RNG states): numbers only.
_ARRAY_KINDS = "biuf"


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """The nested state from its tensors and JSON skeleton; ValueError naming the place if the
    skeleton is not one :func:`flatten_state` writes (unknown markers, a reference to a tensor
    the file lacks, a non-numeric array, nesting deeper than MAX_STATE_DEPTH)."""

    def build(node: Any, where: str, depth: int) -> Any:
        if depth > MAX_STATE_DEPTH:
            raise ValueError(f"{where} is nested more than {MAX_STATE_DEPTH} deep")
        if isinstance(node, list):
            return [build(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if _TENSOR_REF in node:
            key = node[_TENSOR_REF]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"{where} names tensor {key!r}, which the file does not hold")
            return tensors[key]
        if "__dict__" in node:
            pairs = node["__dict__"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str | int) for p in pairs
            ):
                raise ValueError(f"{where} is not a list of [key, value] pairs")
            return {k: build(v, f"{where}.{k}", depth + 1) for k, v in pairs}
        if "__tuple__" in node:
            items = node["__tuple__"]
            if not isinstance(items, list):
                raise ValueError(f"{where} is not a list of items")
            return tuple(build(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items))
        if "__ndarray__" in node:
            import numpy as np

            try:
                dtype = np.dtype(str(node.get("dtype")))
                if dtype.kind not in _ARRAY_KINDS:
                    raise TypeError(f"dtype {dtype} is not numeric")
                return np.asarray(node["__ndarray__"], dtype=dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"{where} is not a numeric array ({exc})") from None
        raise ValueError(f"{where} is an object flatten_state does not write")

    return build(skeleton, "state", 0)


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
    """The nested state and the config of a training-state file, the skeleton checked
    (:func:`unflatten_state`); GantkError naming the file if it is damaged."""
    from gantk.io.files import parse_json

    ckpt = load_checkpoint(path, kind)
    try:
        # Infinity is a state's value (e.g. the best metric before any was measured).
        skeleton = parse_json(ckpt.metadata["gantk.state"], "its gantk.state", allow_nan=True)
        return unflatten_state(ckpt.tensors, skeleton), ckpt.config
    except (KeyError, GantkError, ValueError) as exc:
        why = "no gantk.state" if isinstance(exc, KeyError) else str(exc)
        raise GantkError(
            f"{path} has no readable training state ({why}); resume from a copy of the run or "
            "start a new one"
        ) from None


def load_checked_state(load: Callable[[Any], Any], state: Any, path: str | Path) -> Any:
    """``load(state)`` (its result), where the state came from a file: one that lacks a part,
    holds a part of the wrong type or shape (KeyError, TypeError, ValueError, RuntimeError from
    the load) is damaged, or from another kind of run, and refused naming the file."""
    try:
        return load(state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:160]
        raise GantkError(
            f"{path} is damaged or belongs to another kind of run ({what}); resume from a copy "
            "of the run or start a new one"
        ) from None


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
