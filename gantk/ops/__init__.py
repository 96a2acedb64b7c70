"""Low-level ops that have a pure-PyTorch reference and may have a compiled CUDA kernel.

``GANTK_OPS=ref|cuda|auto`` chooses the implementation (default ``auto``: the CUDA kernel when a
GPU and a kernel build are available, otherwise the reference). This module only reports and
validates that choice; each op module registers its implementations.
"""

from __future__ import annotations

import os

from gantk.errors import GantkError

CHOICES = ("auto", "ref", "cuda")

# Ops register here the names of the ops that have a compiled CUDA implementation.
CUDA_KERNELS: set[str] = set()


def requested_backend() -> str:
    value = os.environ.get("GANTK_OPS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise GantkError(f"GANTK_OPS={value!r} is not one of {', '.join(CHOICES)}")
    return value


def backend_report() -> dict[str, str]:
    """Which implementation ops use in this process, and why."""
    import torch

    requested = requested_backend()
    if requested == "ref":
        return {"requested": requested, "active": "ref", "reason": "forced by GANTK_OPS=ref"}
    if not torch.cuda.is_available():
        return {"requested": requested, "active": "ref", "reason": "no CUDA device"}
    if not CUDA_KERNELS:
        return {
            "requested": requested,
            "active": "ref",
            "reason": "this build ships no compiled kernels; the PyTorch reference runs on CUDA",
        }
    return {"requested": requested, "active": "cuda", "reason": ", ".join(sorted(CUDA_KERNELS))}
