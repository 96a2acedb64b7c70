"""Reading NVIDIA StyleGAN2(-ADA) network pickles without running any code from them.

stylegan2-ada-pytorch writes its snapshots with :mod:`pickle`, and its network classes are
"persistent": each pickled object names ``torch_utils.persistence._reconstruct_persistent_obj``
with a record holding the class's module *source code*, which the ordinary unpickler would
execute. Here a restricted unpickler resolves only an allow-list of names, each to a function of
gantk's own that rebuilds inert data:

- ``_reconstruct_persistent_obj`` -> a :class:`PersistentRecord` (class name, the module source
  kept as an inert string, the object's state dict);
- tensors and parameters -> torch's tensor rebuild functions, their storages through
  ``torch.load(..., weights_only=True)``;
- ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (a dict), numpy dtypes and scalars.

Any other name (``os.system``, ``builtins.eval``, a class to instantiate, …) raises GantkError
before anything is called. :func:`read_network_pickle` returns the snapshot as plain data;
:func:`module_tensors` flattens one network's parameters and buffers into a state dict.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantk.errors import GantkError


@dataclass
class PersistentRecord:
    """What a persistent NVIDIA object is made of, without its class ever being built."""

    class_name: str
    module_name: str
    version: int
    state: dict[str, Any] = field(default_factory=dict)
    module_src: str = field(default="", repr=False)  # never executed: kept for the record


def _persistent(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise GantkError("the pickle holds a persistent object gantk cannot read")
    state = meta.get("state")
    return PersistentRecord(
        class_name=str(meta.get("class_name")),
        module_name=str(meta.get("module_name", "")),
        version=int(meta.get("version", 0)),
        state=dict(state) if isinstance(state, dict) else {},
        module_src=str(meta.get("module_src", "")),
    )


def _storage_from_bytes(data: bytes) -> Any:
    # torch's own _load_from_bytes calls torch.load without weights_only; these bytes hold a
    # bare storage, which the weights-only loader reads without running anything.
    if not isinstance(data, bytes):
        raise GantkError("the pickle holds a tensor storage that is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        # The weights-only loader runs nothing: any error it raises (KeyError, RuntimeError,
        # UnpicklingError, ...) means damaged bytes.
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise GantkError(
            f"a tensor's data in the pickle is damaged ({reason}); convert an intact snapshot"
        ) from None
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise GantkError("the pickle holds tensor data that is no storage")
    return storage


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or data is None:
        raise GantkError("the pickle holds a numpy value gantk cannot read")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(str(name))
    if dtype.hasobject:
        raise GantkError("the pickle holds a numpy object array; gantk reads numbers only")
    return dtype


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any) -> Any:
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> Any:
    # The rest (requires_grad, backward hooks, metadata) is dropped: inert data is all we need.
    return torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _BoundedFile:
    """The pickle file for the unpickler: a read of more bytes than the file has left is
    refused before anything is allocated. A damaged or hostile length field (BINBYTES8 claiming
    2^45 or 2^63 bytes) would otherwise be a MemoryError or an OverflowError."""

    def __init__(self, f: io.BufferedReader, size: int) -> None:
        self.f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.f.tell()
        if n > left:
            raise GantkError(
                f"a value claims {n} bytes where {max(left, 0)} are left: it is damaged; "
                "convert an intact snapshot"
            )
        return self.f.read(n)

    def readinto(self, buffer: Any) -> int:
        # Only reached for lengths read() has not checked: the buffer exists already, and
        # cannot be larger than the allocation Python just made for it.
        return self.f.readinto(buffer)

    def readline(self) -> bytes:
        return self.f.readline()


def _refuse_opcode(self: Any) -> None:
    raise GantkError("the pickle uses an opcode network pickles never hold (a bytearray or an "
                     "out-of-band buffer); refused")  # fmt: skip


# The pure-Python unpickler (pickle._Unpickler): every length it reads goes through
# _BoundedFile.read before anything of that size is allocated, where the C unpickler allocates
# first. Its two opcodes that allocate before reading are refused: network pickles hold neither.
_DISPATCH = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
for _op in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
    _DISPATCH[_op[0]] = _refuse_opcode


class _Restricted(pickle._Unpickler):  # type: ignore[name-defined,misc]
    dispatch = _DISPATCH

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is None:
            raise GantkError(
                f"the pickle asks for {module}.{name}, which gantk does not load (a network "
                "pickle needs only tensors, containers and NVIDIA's persistent records): refused "
                "without running it"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise GantkError("the pickle refers to outside objects; gantk reads self-contained ones")


def read_network_pickle(path: str | Path) -> dict[str, Any]:
    """The snapshot dict of a stylegan2-ada-pytorch pickle (``G``, ``D``, ``G_ema``, …), with
    networks as :class:`PersistentRecord`; raises GantkError for anything else."""
    from gantk.io.files import open_regular

    path = Path(path)
    with open_regular(path, "network pickle") as f:
        try:
            data = _Restricted(_BoundedFile(f, os.fstat(f.fileno()).st_size)).load()
            _check_depth(data)
        except GantkError as exc:
            raise GantkError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, RuntimeError, struct.error) as exc:  # fmt: skip
            # Index/KeyError: an opcode popping from an empty stack or a missing memo entry;
            # RuntimeError: torch refusing a tensor's size or strides.
            raise GantkError(f"{path} is not a readable network pickle ({exc})") from None
        except RecursionError:
            raise GantkError(f"{path} is nested too deeply to be a network pickle") from None
        except OSError as exc:
            raise GantkError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not any(
        isinstance(data.get(k), PersistentRecord) for k in ("G_ema", "G", "D")
    ):
        raise GantkError(
            f"{path} is a pickle but not a StyleGAN2-ADA snapshot (no G_ema, G or D network)"
        )
    return data


# Nesting a network pickle needs (a snapshot dict, networks, sub-modules, their state dicts,
# construction arguments): a few dozen levels. A deeper one is damaged or hostile, and reading it
# recursively would exhaust the stack.
MAX_DEPTH = 100


def _check_depth(data: Any) -> None:
    """Refuse data nested deeper than MAX_DEPTH, walking it without recursion (a pickle may
    even hold cycles: each container is visited once)."""
    stack, seen = [(data, 0)], set()
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        if depth > MAX_DEPTH:
            raise GantkError(
                f"it is nested more than {MAX_DEPTH} levels deep: it is damaged; convert an "
                "intact snapshot"
            )
        if isinstance(node, PersistentRecord):
            node = node.state
        if isinstance(node, dict):
            seen.add(id(node))
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            seen.add(id(node))
            stack.extend((v, depth + 1) for v in node)


def _group(record: PersistentRecord, group: str, where: str) -> dict[str, Any]:
    value = record.state.get(group)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GantkError(
            f"the pickle's {where or 'network'} has {group} of type {type(value).__name__}, "
            "not a mapping by name: it is damaged; convert an intact snapshot"
        )
    return value


def module_tensors(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a network record and its sub-modules, by dotted name;
    GantkError for a record whose groups are not mappings of names to tensors."""
    out: dict[str, torch.Tensor] = {}
    where = prefix.rstrip(".")
    for group in ("_parameters", "_buffers"):
        for name, value in _group(record, group, where).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
            elif value is not None:
                raise GantkError(
                    f"the pickle's {prefix + name} is a {type(value).__name__}, not a tensor: "
                    "it is damaged; convert an intact snapshot"
                )
    for name, child in _group(record, "_modules", where).items():
        if isinstance(child, PersistentRecord):
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out
