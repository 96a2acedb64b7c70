"""FID on two image folders: gantk vs the pytorch-fid command line, same images, same weights.

Both tools read the FID Inception weights from $TORCH_HOME/hub/checkpoints. With no internet
here, the benchmark writes a weight file of the right architecture (seeded random values, unless
--weights gives the real file) into a temporary TORCH_HOME, so both tools load the very same
tensors; the two FID values must then agree, which also checks gantk's FID against the reference
tool. The two commands run interleaved --repeat times (whole processes, start-up included);
reports the median wall times, their ratio and the relative FID difference. pytorch-fid runs
with its default data-loading workers (as its users run it) unless --peer-workers says otherwise.

    python bench/metrics_speed.py --count 500 --resolution 64 [--weights pt_inception-....pth]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gantk.io.builtin import load_builtin
from gantk.io.export import export_images
from gantk.metrics.features import fid_inception_architecture

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peer-workers", type=int, help="pytorch-fid --num-workers")
    parser.add_argument("--weights", type=Path, help="the real FID weight file, if you have it")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hub = tmp / "torch" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        if args.weights:
            shutil.copy(args.weights, hub / INCEPTION_FILE)
        else:
            torch.save(fid_inception_architecture().state_dict(), hub / INCEPTION_FILE)
        for name, seed in (("a", 1), ("b", 2)):
            data = load_builtin(
                "builtin:shapes", count=args.count, resolution=args.resolution, seed=seed
            )
            export_images(data, tmp / name, flat=True)
        env = {**os.environ, "TORCH_HOME": str(tmp / "torch"), "PYTHONWARNINGS": "ignore"}
        common = [str(tmp / "a"), str(tmp / "b"), "--device", args.device,
                  "--batch-size", str(args.batch_size)]  # fmt: skip
        ours_cmd = [sys.executable, "-m", "gantk", "evaluate", "fid", *common, "--json", "--quiet"]
        ref_cmd = [sys.executable, "-m", "pytorch_fid", *common]
        if args.peer_workers is not None:
            ref_cmd += ["--num-workers", str(args.peer_workers)]
        ours_times, ref_times = [], []
        for _ in range(args.repeat):
            ours_s, ours_out = timed(ours_cmd, env)
            ref_s, ref_out = timed(ref_cmd, env)
            ours_times.append(ours_s)
            ref_times.append(ref_s)
        ours = json.loads(ours_out[ours_out.index("{") :])["metrics"]["fid"]
        ref = float(re.search(r"FID:\s+([-0-9.eE+]+)", ref_out).group(1))
    ours_s, ref_s = statistics.median(ours_times), statistics.median(ref_times)

    images = 2 * args.count
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "device": args.device,
        "weights": "real FID weights" if args.weights else "seeded random FID-architecture weights",
        "images": images,
        "resolution": args.resolution,
        "runs": args.repeat,
        "gantk_seconds": round(ours_s, 2),
        "gantk_runs": [round(t, 2) for t in ours_times],
        "pytorch_fid_runs": [round(t, 2) for t in ref_times],
        "pytorch_fid_seconds": round(ref_s, 2),
        "gantk_images_per_s": round(images / ours_s, 1),
        "pytorch_fid_images_per_s": round(images / ref_s, 1),
        "speedup": round(ref_s / ours_s, 2),
        "time_ratio": round(ours_s / ref_s, 3),
        "gantk_fid": ours,
        "pytorch_fid_fid": ref,
        "relative_difference": abs(ours - ref) / max(abs(ref), 1e-12),
    }
    for key, value in result.items():
        print(f"{key:<26} {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"metrics_speed-{args.resolution}px.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
