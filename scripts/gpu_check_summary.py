"""The summary of `make gpu-check` (scripts/gpu_check.sh): one markdown file, ready to paste into
docs/performance.md, from what the steps left behind. Written even when steps failed or ran out
of time: a missing result says so instead of breaking the summary.

    python scripts/gpu_check_summary.py WORK RESULTS DEVICE SECONDS
"""

from __future__ import annotations

import json
import platform
import re
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def device_line(device: str) -> str:
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(device))
            return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        return f"CPU ({platform.machine()}), torch {torch.__version__} (rehearsal: no GPU)"
    except Exception as exc:  # the summary must not fail on a broken torch
        return f"unknown ({type(exc).__name__}: {exc})"


def steps_table(work: Path) -> list[str]:
    lines = ["| step | seconds | outcome |", "| --- | --- | --- |"]
    try:
        rows = [line.split("\t") for line in (work / "steps.tsv").read_text().splitlines()]
    except OSError:
        rows = []
    lines += [f"| {name} | {seconds} | {status} |" for name, seconds, status in rows]
    return lines


def ops_check_table(results: Path) -> list[str]:
    report = _load(results / "ops-check.json")
    if report is None:
        return ["No `gantk ops check` result (see the steps above)."]
    lines = [
        f"`gantk ops check` on {report['device']}: "
        + ("**all passed**" if report["passed"] else f"**FAILED** (mark {report['failure_mark']})"),
        "",
        "| op | dtype | case | max rel. error | tolerance | pass |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["checks"]:
        error = r["error"] or f"{r['max_error']:.2e}"
        lines.append(
            f"| {r['op']} | {r['dtype']} | {r['case']} | {error} | {r['tolerance']:.2e} | "
            f"{'yes' if r['passed'] else 'NO'} |"
        )
    return lines


def bench_ops_table(results: Path) -> list[str]:
    report = _load(results / "bench-ops.json")
    if report is None:
        return ["No bench/ops.py result."]
    lines = [
        f"bench/ops.py on {report['device']}, batch {report['batch']} (fwd+bwd, median):",
        "",
        "| dtype | op | case | path | ms | peak GiB | × best torch (speed) | × (memory) | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.3f}"
        memory = r["memory_ratio_vs_best_torch"]
        target = {None: "", True: "met", False: "**missed**"}[r.get("meets_target")]
        lines.append(
            f"| {r['dtype']} | {r['op']} | {r['case']} | {r['path']} | {r['ms']:.2f} | {peak} | "
            f"{r['speedup_vs_best_torch']:.2f} | {f'{memory:.1f}' if memory else '-'} | {target} |"
        )
    return lines


def train_speed_table(results: Path) -> list[str]:
    report = _load(results / "train-speed.json")
    if report is None:
        return ["No bench/train_speed.py result."]
    args = report["args"]
    lines = [
        f"bench/train_speed.py: {args['resolution']} px, channel base {args['channel_base']}, "
        f"z/w {args['z_dim']}, batch {args['batch_size']}, amp {args['amp']} "
        "(StyleGAN2-ADA's published figure for 128 px on one V100: about 13 s/kimg):",
        "",
        "| ops | variant | s/kimg | × baseline | peak GiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['ops']} | {r['variant']} | {r['sec_per_kimg']:.2f} | {r.get('ratio', 1):.2f} | "
            f"{r['peak_gib']:.3f} |"
        )
    return lines


def amp_lines(results: Path) -> list[str]:
    try:
        log = (results / "gpu-check.log").read_text()
    except OSError:
        return []
    lines = re.findall(r"^(?:bf16|fp16|channels-last): \d+ log lines.*$", log, flags=re.M)
    return [f"- {line}" for line in lines] if lines else ["No mixed-precision run result."]


def main() -> None:
    work, results, device, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    sections = [
        "# make gpu-check",
        "",
        f"Device: {device_line(device)}. Whole check: {seconds} s.",
        "",
        *steps_table(work),
        "",
        "## Kernels against the reference",
        "",
        *ops_check_table(results),
        "",
        "## Ops speed and memory",
        "",
        *bench_ops_table(results),
        "",
        "## Training speed",
        "",
        *train_speed_table(results),
        "",
        "## Mixed precision and channels-last",
        "",
        *amp_lines(results),
        "",
    ]
    (results / "summary.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
