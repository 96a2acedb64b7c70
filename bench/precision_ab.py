"""A/B of training precision: float32 against bf16 autocast, same run, same steps, side by side.

For each trainer, two runs with identical settings and seeds differ only in ``--precision``;
they run at the same time with one thread each (so both see the same machine), and the table
gives each arm's wall time (start-up of a few seconds included, the same in both), their ratio,
the quality each reached at equal steps, and whether any logged value was not finite.

    python bench/precision_ab.py stego --steps 400          # data/training: make training-data
    python bench/precision_ab.py texture --steps 300        # idem
    python bench/precision_ab.py attributor --steps 600     # built-in photos (pixel provenance)
    python bench/precision_ab.py gan --kimg 6     # builtin:shapes, small G/D, fid[random-inception]

Quality, per trainer: stego, the held-out figures of scripts/stego_heldout.py (bit accuracy
clean / JPEG 75 / half size, PSNR) and the training curve; texture, ``gantk evaluate texture``
on the held-out textures (CGD, CSWD, grid); attributor, accuracy on pixel_provenance's test set
(photos never trained on); gan, fid[random-inception] of the EMA generator along the run
(feature network with fixed random weights: comparable between the two arms only).
Results go to OUT/precision-ab-TRAINER.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GANTK = [sys.executable, "-m", "gantk"]
ARMS = ("fp32", "bf16")


def run_arms(commands: dict[str, list[str]], logs: Path) -> dict[str, float]:
    """Both arms at once, one thread each; wall seconds per arm."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started, procs = time.perf_counter(), {}
    for arm, cmd in commands.items():
        out = (logs / f"{arm}.stderr").open("w")
        procs[arm] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out), out)
    walls: dict[str, float] = {}
    while len(walls) < len(procs):  # each arm's own end time
        for arm, (proc, out) in procs.items():
            if arm in walls or proc.poll() is None:
                continue
            out.close()
            if proc.returncode != 0:
                sys.exit(f"{arm} run failed: see {logs / (arm + '.stderr')}")
            walls[arm] = time.perf_counter() - started
        time.sleep(0.2)
    return walls


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]


def curve(entries: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{k: e.get(k) for k in keys} for e in entries]


def finite(entries: list[dict]) -> bool:
    return all(math.isfinite(v) for e in entries for v in e.values() if isinstance(v, int | float))


def stego(args: argparse.Namespace, out: Path) -> dict:
    data = Path(args.data)
    wip = ROOT / "models-wip" / "stego-100-v2.safetensors"
    commands = {
        arm: [*GANTK, "train", "stego", str(data / "stego-train-64.h5"), "--out", str(out / arm),
              "--init", str(wip), "--l2-weight", "8.5", "--resolution", "64", "--bits", "100",
              "--batch-size", "16", "--robust", "noise,blur,jpeg,crop,resize,brightness",
              "--chroma-weight", "8", "--luma", "--target-acc", "0.94", "--l2-delay", "200",
              "--l2-ramp", "1000", "--steps", str(args.steps), "--snapshot-every",
              str(args.steps), "--threads", "1", "--precision", arm, "--quiet"]
        for arm in ARMS
    }  # fmt: skip
    walls = run_arms(commands, out)
    sys.path.insert(0, str(ROOT / "scripts"))
    from stego_heldout import evaluate

    result = {}
    for arm in ARMS:
        report, _ = evaluate(str(out / arm / "stego.safetensors"), [data / "heldout-mixed"],
                             design="paper", strength=1.0)  # fmt: skip
        log = read_log(out / arm)
        result[arm] = {"wall_s": walls[arm], "finite": finite(log),
                       "heldout": report["summary"]["all"],
                       "curve": curve(log, ("step", "bit_acc", "psnr"))}  # fmt: skip
    return result


def texture(args: argparse.Namespace, out: Path) -> dict:
    data = Path(args.data)
    wip = ROOT / "models-wip" / "texture-mixer-v2.safetensors"
    commands = {
        arm: [*GANTK, "train", "texture", str(data / "texture-train"), "--out", str(out / arm),
              "--init", str(wip), "--resolution", "64", "--channels", "64",
              "--latent-channels", "32", "--global-dim", "32", "--d-channels", "16",
              "--batch-size", "4", "--lr", "0.001", "--gram-every", "4", "--steps",
              str(args.steps), "--snapshot-every", str(args.steps), "--threads", "1",
              "--precision", arm, "--quiet"]
        for arm in ARMS
    }  # fmt: skip
    walls = run_arms(commands, out)
    result = {}
    for arm in ARMS:
        scores = subprocess.run(
            [*GANTK, "evaluate", "texture", str(out / arm / "latest.safetensors"),
             str(data / "texture-heldout"), "--pairs", str(args.pairs), "--json", "--quiet"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        log = read_log(out / arm)
        result[arm] = {"wall_s": walls[arm], "finite": finite(log), "heldout": json.loads(scores),
                       "curve": curve(log, ("step", "l1", "gram_rec"))}  # fmt: skip
    return result


def attributor(args: argparse.Namespace, out: Path) -> dict:
    sources = out / "provenance"
    if not (sources / "train").is_dir():
        subprocess.run([sys.executable, str(ROOT / "examples" / "pixel_provenance.py"),
                        str(sources)], cwd=ROOT, check=True)  # fmt: skip
    commands = {
        arm: [*GANTK, "train", "attributor", str(sources / "train"), "--out", str(out / arm),
              "--steps", str(args.steps), "--eval-every", str(max(1, args.steps // 6)),
              "--threads", "1", "--precision", arm, "--force", "--quiet"]
        for arm in ARMS
    }  # fmt: skip
    walls = run_arms(commands, out)
    result = {}
    for arm in ARMS:
        report = subprocess.run(
            [*GANTK, "attribute", str(sources / "test"), "--model",
             str(out / arm / "latest.safetensors"), "--eval", "--json", "--quiet"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        log = read_log(out / arm)
        result[arm] = {"wall_s": walls[arm], "finite": finite(log),
                       "test_accuracy": json.loads(report)["results"]["clean"]["accuracy"],
                       "curve": curve(log, ("step", "loss", "val_acc"))}  # fmt: skip
    return result


def gan(args: argparse.Namespace, out: Path) -> dict:
    commands = {
        arm: [*GANTK, "train", "gan", "builtin:shapes?n=2000&resolution=32", "--out",
              str(out / arm), "--kimg", str(args.kimg), "--batch-size", "16", "--z-dim", "64",
              "--w-dim", "64", "--mapping-layers", "4", "--channel-base", "2048",
              "--channel-max", "64", "--seed", "0", "--metrics", "fid",
              "--metrics-features", "random-inception", "--metrics-count", "500",
              "--metrics-kimg", str(args.kimg / 3), "--snapshot-kimg", str(args.kimg),
              "--sample-kimg", str(args.kimg), "--precision", arm, "--quiet"]
        for arm in ARMS
    }  # fmt: skip
    walls = run_arms(commands, out)
    result = {}
    for arm in ARMS:
        log = read_log(out / arm)
        fid = [{"kimg": e["kimg"], "fid": e["fid[random-inception]"]}
               for e in log if "fid[random-inception]" in e]  # fmt: skip
        result[arm] = {"wall_s": walls[arm], "finite": finite(log), "fid": fid}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trainer", choices=["stego", "texture", "attributor", "gan"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--kimg", type=float, default=6.0)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--data", default=str(ROOT / "data" / "training"))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "precision-ab")
    args = parser.parse_args()
    out = args.out / args.trainer
    out.mkdir(parents=True, exist_ok=True)
    result = {"stego": stego, "texture": texture, "attributor": attributor, "gan": gan}[
        args.trainer
    ](args, out)
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads_per_arm": 1,
                         "python": platform.python_version()}  # fmt: skip
    ratio = result["bf16"]["wall_s"] / result["fp32"]["wall_s"]
    result["wall_ratio_bf16_fp32"] = ratio
    (args.out / f"precision-ab-{args.trainer}.json").write_text(json.dumps(result, indent=2))
    print(f"{args.trainer}: wall bf16 / fp32 = {ratio:.2f} "
          f"({result['bf16']['wall_s']:.0f} s / {result['fp32']['wall_s']:.0f} s)")  # fmt: skip
    for arm in ARMS:
        summary = {k: v for k, v in result[arm].items() if k not in ("curve",)}
        print(arm, json.dumps(summary, default=str)[:600])


if __name__ == "__main__":
    main()
