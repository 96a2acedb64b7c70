"""Saves the latest weights of a long bundled-model run as a small fp16 file in models-wip/, so
the run can continue in a later session (processes end when a session does; runs/ is not in
git). The scripts that train the bundled models start from these files when their run folder is
gone.

    python scripts/save_wip.py stego runs/stego-100-v3
    python scripts/save_wip.py texture runs/texture-mixer-v2 [NAME]   # NAME: another WIP file
    python scripts/save_wip.py start models-wip/NAME.safetensors RUN   # before continuing one

Writes models-wip/NAME.safetensors (fp16, with gantk.total_steps: the steps of every session so
far) and appends the run's new log lines to models-wip/NAME.log.jsonl with cumulative step
numbers, so one file holds the whole training curve.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from gantk.io.checkpoint import read_metadata

WIP = Path(os.environ.get("WIP_DIR", "models-wip"))  # WIP_DIR: elsewhere, e.g. for a rehearsal
NAMES = {"stego": ("stego-100-v3", "stego.safetensors"),
         "texture": ("texture-mixer-v2", "latest.safetensors")}  # fmt: skip


def record_start(wip: Path, run: Path) -> None:
    """Note in RUN/start.json that the run starts from ``wip`` and how many steps came before,
    so the next save counts on from there."""
    before = int(read_metadata(wip).get("gantk.total_steps", "0"))
    run.mkdir(parents=True, exist_ok=True)
    (run / "start.json").write_text(json.dumps({"from": str(wip), "total_steps_before": before}))


def main() -> None:
    if sys.argv[1] == "start":  # save_wip.py start WIP_FILE RUN: before a run continues a WIP
        record_start(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    kind, run = sys.argv[1], Path(sys.argv[2])
    name, model_file = NAMES[kind]
    name = sys.argv[3] if len(sys.argv) > 3 else name  # a branch of the run, kept beside it
    WIP.mkdir(exist_ok=True)
    target, log = WIP / f"{name}.safetensors", WIP / f"{name}.log.jsonl"
    source = run / model_file
    meta = read_metadata(source)
    # Steps of earlier sessions: the run started from the previous WIP file when it exists
    # and its config names it as --init (recorded in run/start.json by the training script).
    start = json.loads((run / "start.json").read_text()) if (run / "start.json").exists() else {}
    offset = int(start.get("total_steps_before", 0))
    steps = int(meta.get("gantk.steps", "0"))
    extra = {"gantk.steps": str(steps), "gantk.total_steps": str(offset + steps),
             "gantk.data": meta.get("gantk.data", "")}  # fmt: skip
    if kind == "stego":
        from gantk.fingerprint.train_stego import load_stego, save_stego

        encoder, decoder = load_stego(source)
        save_stego(target, encoder, decoder, extra, dtype=torch.float16)
    else:
        from gantk.texture.train import load_texture_mixer, save_texture_mixer

        model = load_texture_mixer(source)
        save_texture_mixer(target, model, model.gram_net, extra, dtype=torch.float16)
    logged = (
        {json.loads(line)["step"] for line in log.read_text().splitlines()}
        if log.exists()
        else set()
    )
    with log.open("a") as out:
        for line in (run / "log.jsonl").read_text().splitlines():
            entry = json.loads(line)
            entry["step"] += offset
            if entry["step"] not in logged:
                out.write(json.dumps(entry) + "\n")
    print(f"{target}: {offset + steps} steps in all ({steps} in this run)")


if __name__ == "__main__":
    main()
