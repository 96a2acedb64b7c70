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
import pickle
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
    return torch.load(io.BytesIO(data), weights_only=True)


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


class _Restricted(pickle.Unpickler):
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
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _Restricted(f).load()
    except GantkError as exc:
        raise GantkError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise GantkError(f"{path} is not a readable network pickle ({exc})") from None
    except OSError as exc:
        raise GantkError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not any(
        isinstance(data.get(k), PersistentRecord) for k in ("G_ema", "G", "D")
    ):
        raise GantkError(
            f"{path} is a pickle but not a StyleGAN2-ADA snapshot (no G_ema, G or D network)"
        )
    return data


def module_tensors(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a network record and its sub-modules, by dotted name."""
    out: dict[str, torch.Tensor] = {}
    state = record.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out
