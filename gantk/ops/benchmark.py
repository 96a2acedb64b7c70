"""Forward+backward time and peak memory of the ops: CUDA kernels vs the PyTorch paths.

Modulated convolution runs three ways: ``grouped`` (per-sample weights, one grouped conv: the
reference's fused form), ``unfused`` (scale x, shared conv, scale the output: the reference's
training form) and ``cuda`` (the compiled kernel). Patch attention runs ``unfold`` (the
reference) and ``cuda``. Shapes are those of a StyleGAN2 generator at 128x128 and 256x256
(channel base 16384, max 512) and SAN's 7x7 attention at 32x32 with 256 channels.

Each row: milliseconds per forward+backward (CUDA events, median of ``repeat``), peak memory
above the inputs, the speed and memory ratio of the kernel to the best PyTorch path of the same
case, the achieved fraction of the device's peak throughput (conv) or memory bandwidth (patch
attention), and whether the kernel meets its target (:data:`TARGETS`). Used by ``gantk ops check
--bench`` and bench/ops.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from types import ModuleType

import torch

from gantk.ops.modulated_conv import modulated_conv2d_kernel, modulated_conv2d_ref
from gantk.ops.patch_attention import PatchAttentionKernel, patch_attention_ref

# What the kernels must achieve against the best PyTorch path of the same case (issue 18):
# (minimum speed ratio, minimum memory ratio), each kernel-vs-PyTorch, larger is better.
TARGETS = {"patch_attention": (5.0, 10.0), "modulated_conv2d": (1.0, None)}

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


def conv_cases(
    device: torch.device, dtype: torch.dtype, kernels: ModuleType | None, batch: int,
    repeat: int, small: bool = False,
) -> list[dict]:  # fmt: skip
    rows = []
    for label, cin, cout, k, res in SMALL_CONV_SHAPES if small else CONV_SHAPES:
        x = torch.randn(batch, cin, res, res, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(cout, cin, k, k, device=device, requires_grad=True)
        s = torch.randn(batch, cin, device=device, requires_grad=True)
        demod = k == 3  # toRGB layers do not demodulate
        paths = {
            "grouped": partial(modulated_conv2d_ref, x, w, s, demod, k // 2, fused=True),
            "unfused": partial(modulated_conv2d_ref, x, w, s, demod, k // 2, fused=False),
        }
        if kernels is not None:
            paths["cuda"] = partial(modulated_conv2d_kernel, kernels, x, w, s, demod)
        flops = 3 * 2 * batch * cout * cin * k * k * res * res  # fwd + 2 backward convs
        for path, fn in paths.items():
            ms, peak = time_fwd_bwd(fn, device, repeat)
            rows.append(
                {"op": "modulated_conv2d", "case": label, "path": path, "ms": ms,
                 "peak_gib": peak, "work": flops, "work_kind": "flop"}
            )  # fmt: skip
    return rows


def attention_cases(
    device: torch.device, dtype: torch.dtype, kernels: ModuleType | None, batch: int,
    repeat: int, small: bool = False,
) -> list[dict]:  # fmt: skip
    rows = []
    for label, c, cw, k, res in SMALL_ATTN_SHAPES if small else ATTN_SHAPES:
        shape = (batch, c, res, res)
        v = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        wt = torch.randn(batch, cw, k * k, res, res, device=device, dtype=dtype)
        wt.requires_grad_(True)
        paths = {"unfold": partial(patch_attention_ref, v, wt, k)}
        if kernels is not None:
            paths["cuda"] = partial(PatchAttentionKernel.apply, kernels, v, wt, k, 1, "zeros")
        # Bytes the kernels must move at least: forward reads values and weights and writes the
        # output; backward reads grad, values, weights and writes both gradients.
        size = v.element_size()
        traffic = size * (2 * v.numel() + wt.numel()) + size * (3 * v.numel() + 2 * wt.numel())
        for path, fn in paths.items():
            ms, peak = time_fwd_bwd(fn, device, repeat)
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


def run(
    device: torch.device, dtypes: list[str], kernels: ModuleType | None, batch: int = 32,
    repeat: int = 20, small: bool = False,
) -> list[dict]:  # fmt: skip
    """Every case in every dtype, with ratios and target verdicts."""
    rows: list[dict] = []
    peaks = device_peaks(device)
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        found = conv_cases(device, dtype, kernels, batch, repeat, small)
        found += attention_cases(device, dtype, kernels, batch, repeat, small)
        add_ratios(found, peaks, dtype_name)
        for row in found:
            row["dtype"] = dtype_name
            row["meets_target"] = meets_target(row)
        rows.extend(found)
    return rows


def meets_target(row: dict) -> bool | None:
    """Whether a kernel row meets :data:`TARGETS` (None for the PyTorch paths)."""
    if row["path"] != "cuda":
        return None
    speed, memory = TARGETS[row["op"]]
    ok = row["speedup_vs_best_torch"] >= speed
    if memory is not None:
        ratio = row["memory_ratio_vs_best_torch"]
        ok = ok and ratio is not None and ratio >= memory
    return bool(ok)


def table_lines(rows: list[dict]) -> list[str]:
    """The rows as a fixed-width text table."""
    lines = [
        f"{'dtype':<9} {'op':<17} {'case':<19} {'path':<8} {'ms':>8} {'peak GiB':>9} "
        f"{'speed x':>8} {'mem x':>6} {'of peak':>8} {'target':>6}"
    ]
    for r in rows:
        mem = r["memory_ratio_vs_best_torch"]
        frac = r["fraction_of_peak"]
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.3f}"  # nan: CPU
        target = {None: "", True: "met", False: "MISSED"}[r["meets_target"]]
        lines.append(
            f"{r['dtype']:<9} {r['op']:<17} {r['case']:<19} {r['path']:<8} {r['ms']:>8.2f} "
            f"{peak:>9} {r['speedup_vs_best_torch']:>8.2f} "
            f"{(f'{mem:.1f}' if mem else '-'):>6} {(f'{frac:.1%}' if frac else '-'):>8} "
            f"{target:>6}"
        )
    return lines
