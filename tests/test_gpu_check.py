"""The rehearsal of `make gpu-check` on the CPU (DEVICE=cpu, small shapes), so the one script a
GPU session will run cannot rot: every step runs, the results and the summary are written, a
bundled model continues from its committed weights, and the time budget stops steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gantk.io.checkpoint import read_metadata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(tmp_path: Path, **env: str) -> tuple[Path, str]:
    results = tmp_path / "results"
    full_env = {
        **os.environ,
        "DEVICE": "cpu",
        "OUT": str(results),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "PY": sys.executable,
        "DATA": str(tmp_path / "no-data"),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return results, (results / "summary.md").read_text()


def _steps(summary: str) -> dict[str, str]:
    """The step table of the summary: step name -> outcome."""
    lines = summary.splitlines()
    start = lines.index("| step | seconds | outcome |") + 2
    rows = [line.split(" | ") for line in lines[start:] if line.startswith("| ")]
    end = next((i for i, line in enumerate(lines[start:]) if not line.strip()), len(rows))
    return {row[0][2:]: row[2].removesuffix(" |") for row in rows[:end]}


@pytest.fixture(scope="module")
def stego_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("training-data")
    subprocess.run(
        [sys.executable, "-m", "gantk", "data", "pack", "builtin:photos?n=32",
         str(data / "stego-train-128.h5"), "--resolution", "128", "--quiet"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return data


def test_rehearsal_runs_every_step_and_writes_the_summary(tmp_path: Path, stego_data) -> None:
    wip = tmp_path / "wip"
    wip.mkdir()
    for name in ("stego-100-v3.safetensors", "stego-100-v3.log.jsonl"):
        (wip / name).write_bytes((ROOT / "models-wip" / name).read_bytes())
    before = int(read_metadata(wip / "stego-100-v3.safetensors")["gantk.total_steps"])
    results, summary = _run(tmp_path, DATA=str(stego_data), WIP_DIR=str(wip), MODEL_STEPS="2")

    steps = _steps(summary)
    assert list(steps) == ["setup", "check", "tests", "ops", "train", "amp", "models"]
    assert steps["check"].startswith("skipped: no GPU")  # the kernels need one
    assert all(steps[name] == "ok" for name in ("setup", "tests", "ops", "train", "amp", "models"))
    assert "torch" in summary and "rehearsal: no GPU" in summary
    # The benchmarks' results came back and are in the summary.
    ops = json.loads((results / "bench-ops.json").read_text())
    assert {r["op"] for r in ops["rows"]} == {"modulated_conv2d", "patch_attention"}
    train = json.loads((results / "train-speed.json").read_text())
    assert [r["variant"] for r in train["rows"]] == ["baseline", "san"]
    assert "| ref | san |" in summary and "| bfloat16 | patch_attention |" in summary
    assert "- bf16: " in summary and "- channels-last: " in summary and "non-finite" not in summary
    # The bundled model went on from its committed weights, and the new WIP file came back.
    with tarfile.open(results / "models.tar") as tar:
        names = set(tar.getnames())
    assert "wip/stego-100-v3.safetensors" in names
    after = read_metadata(wip / "stego-100-v3.safetensors")
    assert int(after["gantk.total_steps"]) == before + 2 and after["gantk.steps"] == "2"
    last = json.loads((wip / "stego-100-v3.log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == before + 2
    # At most 8 files, as the device tool brings back.
    assert len(list(results.iterdir())) <= 8


def test_budget_stops_steps_and_the_summary_is_still_written(tmp_path: Path) -> None:
    _, summary = _run(tmp_path, GPU_CHECK_BUDGET="25")
    steps = _steps(summary)
    assert set(steps) == {"setup", "check", "tests", "ops", "train", "amp", "models"}
    cut = [s for s in steps.values() if s.startswith(("stopped at its budget", "not run"))]
    assert cut, steps
    assert "Whole check: " in summary
