"""Forward+backward time and peak memory of gantk's ops: CUDA kernels vs the PyTorch paths.

The cases, ratios and targets are :mod:`gantk.ops.benchmark`'s (also behind `gantk ops check
--bench`). Without a GPU only the PyTorch paths run (``--device cpu`` with ``--small`` shapes: a
smoke test of the script, not a benchmark).

    python bench/ops.py                           # GPU: fp32 and bf16, all shapes, batch 32
    python bench/ops.py --device cpu --small      # CPU: reference paths only
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from gantk.ops import benchmark


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
    rows = benchmark.run(
        device, args.dtypes.split(","), kernels, args.batch, args.repeat, args.small
    )
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "batch": args.batch,
        "targets": benchmark.TARGETS,
        "rows": rows,
    }
    print(f"device: {report['device']}, torch {report['torch']}, batch {args.batch}")
    print("\n".join(benchmark.table_lines(rows)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ops_{device.type}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
