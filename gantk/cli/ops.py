"""``gantk ops``: prebuild the CUDA kernels (e.g. on a cluster login node without a GPU)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from gantk.cli.common import JsonOpt, Output, QuietOpt, handle_errors

app = typer.Typer(
    help="The compiled CUDA kernels behind modulated convolution and SAN patch attention.\n\n"
    "They build by themselves on first CUDA use (cached per sources, torch, CUDA version and GPU "
    "architecture); GANTK_OPS=ref|cuda|auto picks the implementation and `gantk info` shows "
    "which one runs and why.",
    no_args_is_help=True,
)

# TORCH_CUDA_ARCH_LIST syntax: compute capabilities like 8.0 or 9.0+PTX, separated by ; or space.
_ARCH_PATTERN = re.compile(r"^\d+\.\d+(\+PTX)?([; ]+\d+\.\d+(\+PTX)?)*$")


@app.command("build")
@handle_errors
def build(
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="GPU architectures to compile for, as in TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0'). "
            "Default: TORCH_CUDA_ARCH_LIST, else the visible GPUs. Needed where no GPU is "
            "visible; the build is then cached for GPUs of these architectures.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the compiler commands and output.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build (or verify the cached build of) the CUDA kernels, retrying a failed build.

    The cache is $GANTK_OPS_CACHE, else $XDG_CACHE_HOME/gantk/ops, else ~/.cache/gantk/ops; a
    shared cache on a cluster lets one prebuild serve every node with the same GPU architecture.
    """
    import time

    from gantk.errors import GantkError
    from gantk.ops import build as ops_build

    if arch is not None and not _ARCH_PATTERN.match(arch.strip()):
        raise GantkError(
            f"--arch {arch!r} is not a list of compute capabilities such as '8.0;9.0' or '9.0+PTX'"
        )
    out = Output(quiet, as_json)
    ops_build.require_cuda_home()
    arches = ops_build.normalize_arches(ops_build.target_arches(arch))
    cached = ops_build.cached_library(arches) is not None
    out.say(
        f"{'checking the cached' if cached else 'building the'} CUDA kernels for arch {arches} "
        f"in {ops_build.build_dir(arches)}" + ("" if cached else " (about a minute)")
    )
    start = time.perf_counter()
    ops_build.build(arch=arches, verbose=verbose, retry_failed=True)
    elapsed = time.perf_counter() - start
    library = ops_build.cached_library(arches)
    summary = {
        "arch": arches,
        "key": ops_build.build_key(arches),
        "build_dir": str(ops_build.build_dir(arches)),
        "library": str(library) if library else None,
        "was_cached": cached,
        "seconds": round(elapsed, 1),
    }
    out.table("CUDA kernels", ["item", "value"], [[k, v] for k, v in summary.items()])
    out.result(summary)
