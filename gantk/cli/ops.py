"""``gantk ops``: prebuild the CUDA kernels (e.g. on a cluster login node without a GPU)."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import JsonOpt, Output, QuietOpt, handle_errors

app = typer.Typer(
    help="The compiled CUDA kernels behind modulated convolution and SAN patch attention.\n\n"
    "They build by themselves on first CUDA use (cached per sources, torch, CUDA version and GPU "
    "architecture), and each build is checked against the reference on the GPU before its first "
    "use; GANTK_OPS=ref|cuda|auto picks the implementation and `gantk info` shows which one runs "
    "and why.",
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

    Also clears the build's self-check records, so the next use checks it again (after a failed
    check: once the cause is fixed).

    The cache is $GANTK_OPS_CACHE, else $XDG_CACHE_HOME/gantk/ops, else ~/.cache/gantk/ops; a
    shared cache on a cluster lets one prebuild serve every node with the same GPU architecture.
    """
    import time

    from gantk.errors import GantkError
    from gantk.ops import build as ops_build
    from gantk.ops import selfcheck

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
    if library is not None:
        # A rebuild (or a fix elsewhere: driver, torch) deserves a fresh self-check.
        for mark in selfcheck.clear_marks(library.parent):
            out.say(f"cleared the self-check record {mark}")
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


@app.command("check")
@handle_errors
def check(
    device: Annotated[
        str, typer.Option("--device", help="The GPU to check on: cuda or cuda:N.")
    ] = "cuda",
    bench: Annotated[
        bool,
        typer.Option(
            "--bench",
            help="Also time forward+backward and measure peak memory of each kernel against the "
            "PyTorch paths (float32 and bfloat16, StyleGAN2 128/256 px layers and SAN 7x7 "
            "attention, batch 32), with the targets of docs/performance.md.",
        ),
    ] = False,
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Timed repetitions per case with --bench.")
    ] = 10,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check the compiled kernels against the PyTorch reference on a GPU, now.

    Runs forward and every gradient of modulated convolution and patch attention in float32,
    float64, bfloat16 and float16, at tiny shapes and at the models' layer shapes, and prints
    op, dtype, max relative error, tolerance and pass. (A lighter version of this check runs by
    itself on the first use of each build on each GPU model.) On a failure the build is marked
    unusable, later processes use the reference until `gantk ops build` clears the mark, and
    the exit status is 1.
    """
    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.ops import build as ops_build
    from gantk.ops import selfcheck

    if not device.startswith("cuda"):
        raise GantkError(
            f"--device {device}: the kernels run on NVIDIA GPUs only; give cuda or cuda:N"
        )
    import torch

    if not torch.cuda.is_available():
        raise GantkError(
            "no CUDA device is usable here: `gantk ops check` runs the kernels on an NVIDIA GPU "
            "(`gantk ops build --arch 9.0` compiles them without one)"
        )
    dev = torch.device(resolve_device(device))
    torch.cuda.set_device(dev)
    out = Output(quiet, as_json)
    module = ops_build.build(retry_failed=False)
    folder = Path(module.__file__).parent
    name = selfcheck.device_name(dev)
    out.say(f"checking the kernels of {folder} on {name}")
    results = selfcheck.run_checks(module, dev, selfcheck.full_cases())
    mark = selfcheck.record(folder, dev, results)
    out.table(
        f"CUDA kernels vs reference on {name}",
        ["op", "dtype", "case", "max rel. error", "tolerance", "pass"],
        [
            [r.op, r.dtype, r.case, r.error or f"{r.max_error:.2e}", f"{r.tolerance:.2e}",
             "yes" if r.passed else "NO"]
            for r in results
        ],
    )  # fmt: skip
    summary: dict = {
        "device": name,
        "build_dir": str(folder),
        "passed": mark is None,
        "failure_mark": str(mark) if mark else None,
        "checks": [asdict(r) for r in results],
    }
    if mark is None and (folder / selfcheck.FAILED_MARK).is_file():
        out.warn(
            f"an earlier failure mark remains ({folder / selfcheck.FAILED_MARK}); "
            "`gantk ops build` clears it"
        )
    if bench and mark is None:
        from gantk.ops import benchmark

        with selfcheck.exact_float32():
            rows = benchmark.run(dev, ["float32", "bfloat16"], module, repeat=repeat)
        summary["bench"] = rows
        for line in benchmark.table_lines(rows):
            out.say(line)
    out.result(summary)
    if mark is not None:
        failed = sum(not r.passed for r in results)
        out.warn(
            f"{failed} of {len(results)} checks failed; this build is marked unusable ({mark}) "
            "and the reference ops are used instead"
        )
        raise typer.Exit(1)
