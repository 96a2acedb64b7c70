"""Which implementation an op runs: the reference or the compiled kernels (``GANTK_OPS``).

The op modules (:mod:`gantk.ops.modulated_conv`, :mod:`gantk.ops.patch_attention`) ask
:func:`kernels_for` on every call; the kernels come from the loader the package sets
(:func:`gantk.ops.build.load_kernels`, wired in :mod:`gantk.ops`), which builds them once and
checks them against the reference (:mod:`gantk.ops.selfcheck`, which runs the op modules).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from gantk.errors import GantkError

if TYPE_CHECKING:
    import torch

# required -> the kernel module, or None when unavailable (gantk.ops.build.load_kernels).
_loader: Callable[[bool], ModuleType | None] | None = None


def set_loader(loader: Callable[[bool], ModuleType | None]) -> None:
    global _loader
    _loader = loader


CHOICES = ("auto", "ref", "cuda")


def requested_backend() -> str:
    value = os.environ.get("GANTK_OPS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise GantkError(f"GANTK_OPS={value!r} is not one of {', '.join(CHOICES)}")
    return value


def kernels_for(tensor: torch.Tensor) -> ModuleType | None:
    """The compiled kernel module if ``tensor`` should be processed by it, else None."""
    requested = requested_backend()
    if requested == "ref" or not tensor.is_cuda:
        return None
    if _loader is None:
        raise GantkError("gantk.ops was imported without its kernel loader")
    return _loader(requested == "cuda")
