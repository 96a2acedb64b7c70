"""gantk fingerprint-embed / fingerprint-decode against the authors' scripts, whole processes.

The peer is ArtificialGANFingerprints (Yu et al. 2021): embed_fingerprints.py and
detect_fingerprints.py, run unmodified on the CPU (`--cuda -1`) from a checkout given by
--authors, with seeded random weights of their StegaStamp architecture at --resolution (their
trained weights are not public at this size; speed does not depend on the values). gantk runs
its default model (builtin:stego-100), as its users do. Both get the same PNG folder (built-in
photos at --resolution) and write PNGs; their decode reads their embedded images, ours reads
ours. Runs are interleaved --repeat times; medians, ratios and peak memory are printed and
written to OUT/fingerprint_vs_authors.json.

    git clone https://github.com/ningyu1991/ArtificialGANFingerprints /tmp/agf
    python bench/fingerprint_vs_authors.py --authors /tmp/agf --count 200 --resolution 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def run(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{output.decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def authors_weights(authors: Path, resolution: int, bits: int, out: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(authors))
    from models import StegaStampDecoder, StegaStampEncoder  # the authors' models.py

    torch.manual_seed(0)
    encoder = StegaStampEncoder(resolution, 3, fingerprint_size=bits, return_residual=False)
    decoder = StegaStampDecoder(resolution, 3, fingerprint_size=bits)
    paths = out / "authors-encoder.pth", out / "authors-decoder.pth"
    torch.save(encoder.state_dict(), paths[0])
    torch.save(decoder.state_dict(), paths[1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--authors", type=Path, required=True, help="their repository checkout")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--bits", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="builtin:stego-100", help="gantk's encoder")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    if not (args.authors / "embed_fingerprints.py").is_file():
        sys.exit(f"{args.authors} is not a checkout of ArtificialGANFingerprints")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        data = load_builtin("builtin:photos", count=args.count, resolution=args.resolution)
        export_images(data, images, flat=True)
        encoder, decoder = authors_weights(args.authors, args.resolution, args.bits, tmp)
        res = str(args.resolution)
        gantk = [sys.executable, "-m", "gantk"]
        jobs = {
            "gantk embed": [*gantk, "fingerprint-embed", str(images), "--out", str(tmp / "ours"),
                            "--bits", str(args.bits), "--encoder", args.model, "--seed", "1",
                            "--device", "cpu", "--quiet"],
            "authors embed": [sys.executable, "embed_fingerprints.py", "--encoder_path",
                              str(encoder), "--data_dir", str(images), "--output_dir",
                              str(tmp / "theirs"), "--image_resolution", res,
                              "--identical_fingerprints", "--cuda", "-1"],
            "gantk decode": [*gantk, "fingerprint-decode", str(tmp / "ours"), "--decoder",
                             args.model, "--device", "cpu", "--json", "--quiet"],
            "authors decode": [sys.executable, "detect_fingerprints.py", "--decoder_path",
                               str(decoder), "--data_dir", str(tmp / "theirs" /
                               "fingerprinted_images"), "--output_dir", str(tmp / "detected"),
                               "--image_resolution", res, "--cuda", "-1"],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in jobs}
        memory: dict[str, float] = {}
        for _ in range(args.repeat):
            for out in ("ours", "theirs", "detected"):
                shutil.rmtree(tmp / out, ignore_errors=True)
            for name, cmd in jobs.items():
                seconds, mib = run(cmd, cwd=args.authors if "authors" in name else None)
                times[name].append(seconds)
                memory[name] = max(memory.get(name, 0.0), mib)

    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "images": args.count,
        "resolution": args.resolution,
        "bits": args.bits,
        "gantk_model": args.model,
        "runs": {name: [round(t, 2) for t in ts] for name, ts in times.items()},
        "median_s": {name: round(t, 2) for name, t in median.items()},
        "peak_mib": {name: round(m) for name, m in memory.items()},
        "embed_time_ratio": round(median["gantk embed"] / median["authors embed"], 3),
        "decode_time_ratio": round(median["gantk decode"] / median["authors decode"], 3),
    }
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fingerprint_vs_authors.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
