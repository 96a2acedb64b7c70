"""Forward+backward time and peak memory of gantk's ops: CUDA kernels vs the PyTorch paths.

Modulated convolution runs three ways: ``grouped`` (per-sample weights, one grouped conv: the
reference's fused form), ``unfused`` (scale x, shared conv, scale the output: the reference's
training form) and ``cuda`` (the compiled kernel). Patch attention runs ``unfold`` (the
reference) and ``cuda``. Shapes are those of a StyleGAN2 generator at 128x128 and 256x256
(channel base 16384, max 512) and SAN's 7x7 attention at 32x32 with 256 channels; batch 32.

For each case the table gives milliseconds per forward+backward (CUDA events, median of
``--repeat``), peak memory above the inputs, the speed and memory ratio of the kernel to the best
PyTorch path of the same run, and the achieved fraction of the device's peak tensor/FP32
throughput (conv) or memory bandwidth (patch attention). Without a GPU only the PyTorch paths
run (``--device cpu`` with ``--small`` shapes: a smoke test of the script, not a benchmark).

    python bench/ops.py                           # GPU: fp32 and bf16, all shapes
    python bench/ops.py --device cpu --small      # CPU: reference paths only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from gantk.ops.modulated_conv import modulated_conv2d_kernel, modulated_conv2d_ref
from gantk.ops.patch_attention import PatchAttentionKernel, patch_attention_ref

# (label, in channels, out channels, kernel size, resolution): the heaviest layers of each model.
CONV_SHAPES = [
    ("G128/256 32px 3x3", 512, 512, 3, 32),
    ("G128 64px 3x3", 512, 256, 3, 64),
    ("G128 128px 3x3", 256, 128, 3, 128),
    ("G128 128px toRGB", 128, 3, 1, 128),
    ("G256 256px 3x3", 128, 64, 3, 256),
    ("G256 256px toRGB", 64, 3, 1, 256),
]
SMALL_CONV_SHAPES = [("small 3x3", 32, 32, 3, 16), ("small toRGB", 32, 3, 1, 16)]
# (label, channels, weight channels, kernel size, resolution)
ATTN_SHAPES = [("SAN 7x7 C256 32px", 256, 32, 7, 32), ("SAN 7x7 C512 16px", 512, 64, 7, 16)]
SMALL_ATTN_SHAPES = [("small SAN 7x7", 32, 4, 7, 8)]

# Dense peak throughput (FLOP/s) and memory bandwidth (B/s) from the vendors' data sheets, to
# express measurements as a fraction of what the device can do. Matched by substring of the name.
DEVICE_PEAKS = {
    "H200": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 4.8e12},
    "H100": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 3.35e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12, "bandwidth": 2.0e12},
}


def device_peaks(device: torch.device) -> dict[str, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks for key, peaks in DEVICE_PEAKS.items() if key in name), None)


def time_fwd_bwd(
    fn: Callable[[], torch.Tensor], device: torch.device, repeat: int
) -> tuple[float, float]:
    """Median ms of forward+backward, and peak memory (GiB) above what was allocated before."""
    for _ in range(2):  # warm-up: autotuning, lazy allocations, kernel build
        fn().sum().backward()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn().sum().backward()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:
        for _ in range(repeat):
            start_s = time.perf_counter()
            fn().sum().backward()
            times.append((time.perf_counter() - start_s) * 1000)
        peak = float("nan")  # no allocator statistics on the CPU
    return statistics.median(times), peak


def conv_cases(args, device, dtype, kernels) -> list[dict]:
    rows = []
    for label, cin, cout, k, res in SMALL_CONV_SHAPES if args.small else CONV_SHAPES:
        x = torch.randn(args.batch, cin, res, res, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(cout, cin, k, k, device=device, requires_grad=True)
        s = torch.randn(args.batch, cin, device=device, requires_grad=True)
        demod = k == 3  # toRGB layers do not demodulate
        paths = {
            "grouped": partial(modulated_conv2d_ref, x, w, s, demod, k // 2, fused=True),
            "unfused": partial(modulated_conv2d_ref, x, w, s, demod, k // 2, fused=False),
        }
        if kernels is not None:
            paths["cuda"] = partial(modulated_conv2d_kernel, kernels, x, w, s, demod)
        flops = 3 * 2 * args.batch * cout * cin * k * k * res * res  # fwd + 2 backward convs
        for path, fn in paths.items():
            ms, peak = time_fwd_bwd(fn, device, args.repeat)
            rows.append(
                {"op": "modulated_conv2d", "case": label, "path": path, "ms": ms,
                 "peak_gib": peak, "work": flops, "work_kind": "flop"}
            )  # fmt: skip
    return rows


def attention_cases(args, device, dtype, kernels) -> list[dict]:
    rows = []
    for label, c, cw, k, res in SMALL_ATTN_SHAPES if args.small else ATTN_SHAPES:
        shape = (args.batch, c, res, res)
        v = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        wt = torch.randn(args.batch, cw, k * k, res, res, device=device, dtype=dtype)
        wt.requires_grad_(True)
        paths = {"unfold": partial(patch_attention_ref, v, wt, k)}
        if kernels is not None:
            paths["cuda"] = partial(PatchAttentionKernel.apply, kernels, v, wt, k, 1, "zeros")
        # Bytes the kernels must move at least: forward reads values and weights and writes the
        # output; backward reads grad, values, weights and writes both gradients.
        size = v.element_size()
        traffic = size * (2 * v.numel() + wt.numel()) + size * (3 * v.numel() + 2 * wt.numel())
        for path, fn in paths.items():
            ms, peak = time_fwd_bwd(fn, device, args.repeat)
            rows.append(
                {"op": "patch_attention", "case": label, "path": path, "ms": ms,
                 "peak_gib": peak, "work": traffic, "work_kind": "byte"}
            )  # fmt: skip
    return rows


def add_ratios(rows: list[dict], peaks: dict[str, float] | None, dtype_name: str) -> None:
    """Kernel vs the best PyTorch path of the same case, and fraction of the device's peak."""
    for row in rows:
        same = [r for r in rows if r["case"] == row["case"] and r["path"] != "cuda"]
        best = min(same, key=lambda r: r["ms"])
        row["speedup_vs_best_torch"] = best["ms"] / row["ms"]
        row["memory_ratio_vs_best_torch"] = (
            min(r["peak_gib"] for r in same) / row["peak_gib"] if row["peak_gib"] > 0 else None
        )
        rate = row["work"] / (row["ms"] / 1000)
        if peaks is None:
            row["fraction_of_peak"] = None
        elif row["work_kind"] == "flop":
            row["fraction_of_peak"] = (
                rate / peaks["bfloat16" if dtype_name == "bfloat16" else "float32"]
            )
        else:
            row["fraction_of_peak"] = rate / peaks["bandwidth"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    device = torch.device(args.device)
    kernels = None
    if device.type == "cuda":
        from gantk.ops import build

        kernels = build.build()
        # The kernels accumulate in exact float32; let the float32 reference do the same.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    peaks = device_peaks(device)
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "batch": args.batch,
        "rows": [],
    }
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        rows = conv_cases(args, device, dtype, kernels) + attention_cases(
            args, device, dtype, kernels
        )
        add_ratios(rows, peaks, dtype_name)
        for row in rows:
            row["dtype"] = dtype_name
        report["rows"].extend(rows)

    print(f"device: {report['device']}, torch {report['torch']}, batch {args.batch}")
    print(
        f"{'dtype':<9} {'op':<17} {'case':<19} {'path':<8} {'ms':>8} {'peak GiB':>9} "
        f"{'speed x':>8} {'mem x':>6} {'of peak':>8}"
    )
    for r in report["rows"]:
        mem = r["memory_ratio_vs_best_torch"]
        frac = r["fraction_of_peak"]
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.3f}"  # nan: CPU
        print(
            f"{r['dtype']:<9} {r['op']:<17} {r['case']:<19} {r['path']:<8} {r['ms']:>8.2f} "
            f"{peak:>9} {r['speedup_vs_best_torch']:>8.2f} "
            f"{(f'{mem:.1f}' if mem else '-'):>6} {(f'{frac:.1%}' if frac else '-'):>8}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ops_{device.type}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
