"""Two processes under torchrun (gloo on CPU) follow the single-process loss trajectory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = [
    "builtin:shapes?n=64",
    "--resolution",
    "16",
    "--kimg",
    "0.064",
    "--batch-size",
    "16",
    "--z-dim",
    "32",
    "--w-dim",
    "32",
    "--mapping-layers",
    "2",
    "--channel-base",
    "128",
    "--channel-max",
    "16",
    "--tick-kimg",
    "0.016",
    "--snapshot-kimg",
    "1",
    "--sample-kimg",
    "1",
    "--pl-weight",
    "0",
    "--mirror",
    "--device",
    "cpu",
    "--quiet",
]


def losses(run: Path) -> list[tuple[float, float]]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(e["loss_d"], e["loss_g"]) for e in entries]


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "gantk", "train", "gan", *TINY, "--out", str(single)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    ddp = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            "29517",
            "-m",
            "gantk",
            "train",
            "gan",
            *TINY,
            "--out",
            str(ddp),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = losses(single), losses(ddp)
    assert len(a) == len(b) == 4
    # Same data, latents and flips; only the per-pixel noise draws differ between the two
    # (their strengths start at 0), so the trajectories agree closely but not bit for bit.
    for (da, ga), (db, gb) in zip(a, b, strict=True):
        assert db == pytest.approx(da, rel=0.005, abs=0.005)
        assert gb == pytest.approx(ga, rel=0.005, abs=0.005)
    # Only rank 0 writes: one log line per tick, one checkpoint set.
    assert sorted(p.name for p in ddp.glob("*.safetensors")) == sorted(
        p.name for p in single.glob("*.safetensors")
    )
