"""Low-level ops with a pure-PyTorch reference and a compiled CUDA kernel.

``GANTK_OPS=ref|cuda|auto`` chooses the implementation:

- ``auto`` (default): the CUDA kernels for CUDA tensors when they build (once per machine, cached;
  see :mod:`gantk.ops.build`), otherwise the reference, with one warning per process;
- ``cuda``: the kernels for CUDA tensors, and an error if they cannot be built;
- ``ref``: always the reference.

Before a process uses a build, the kernels are checked against the reference on its GPU (once
per build and device, :mod:`gantk.ops.selfcheck`); a build that fails is not used.

CPU tensors always use the reference. Calls the kernels do not cover (other kernel sizes,
second-order gradients) use the reference whatever the setting; :func:`backend_report` says
which path each op takes and why.
"""

from __future__ import annotations

from pathlib import Path

from gantk.errors import GantkError
from gantk.ops import build, dispatch
from gantk.ops.dispatch import CHOICES as CHOICES  # re-exported
from gantk.ops.dispatch import kernels_for as kernels_for
from gantk.ops.dispatch import requested_backend

# The op modules ask gantk.ops.dispatch for kernels; building and self-checking them is
# gantk.ops.build's (whose self-check runs the op modules): wired here, where both are known, so
# that neither imports the other's side.
dispatch.set_loader(lambda required: build.load_kernels(required=required))

# What each op's kernel covers; everything else runs the reference.
KERNEL_SCOPE = {
    "modulated_conv2d": (
        "1x1 and 3x3 kernels with same padding, float16/bfloat16/float32/float64; other shapes and "
        "second-order gradients (create_graph, e.g. path-length regularization) use the reference"
    ),
    "patch_attention": (
        "any odd patch size and dilation, zero or reflect padding; second-order gradients use "
        "the reference"
    ),
}


def _path_and_reason(requested: str) -> tuple[str, str]:
    import torch

    if requested == "ref":
        return "ref", "forced by GANTK_OPS=ref"
    if not torch.cuda.is_available():
        return "ref", "no CUDA device (the kernels run on NVIDIA GPUs only)"
    state = build.process_state()
    if state["loaded"]:
        return "cuda", (
            f"compiled kernels loaded in this process; self-check passed on {state['checked_on']}"
        )
    if state["error"]:
        return "ref", str(state["error"])
    try:
        arches = build.target_arches()
        library = build.cached_library(arches)
        failed = build.build_dir(arches) / build.FAILED_MARK
    except GantkError as exc:
        return "ref", str(exc)
    if library is not None:
        return _prebuilt_path(library.parent)
    if failed.is_file():
        return "ref", f"an earlier build failed (log: {failed}); `gantk ops build` retries"
    if build.find_cuda_home() is None:
        return "ref", "no cached build and no CUDA toolkit (nvcc) to build one"
    return "cuda", (
        f"built on first use into {build.build_dir(arches)} (about a minute once; "
        "`gantk ops build` prebuilds)"
    )


def _prebuilt_path(folder: Path) -> tuple[str, str]:
    """What a process would do with the finished build in ``folder``, going by its self-check
    marks (the check itself runs on first use)."""
    from gantk.ops import selfcheck

    mark = folder / selfcheck.FAILED_MARK
    if mark.is_file():
        return "ref", selfcheck.failure_message(mark)
    name = selfcheck.device_name(build.check_device())
    if selfcheck.passed_mark(folder, name).is_file():
        return "cuda", f"prebuilt kernels in {folder}; self-check passed on {name}"
    return "cuda", f"prebuilt kernels in {folder}; self-checked against the reference on first use"


def backend_report() -> dict:
    """Which implementation each op uses in this process, and why (for ``gantk info``)."""
    requested = requested_backend()
    path, reason = _path_and_reason(requested)
    return {
        "requested": requested,
        "active": path,
        "reason": reason,
        "ops": {
            name: {"path": path, "kernel_covers": scope} for name, scope in KERNEL_SCOPE.items()
        },
    }
