#!/usr/bin/env bash
# Trains builtin:stego-100, the default fingerprint encoder/decoder shipped in
# gantk/models/stego-100.safetensors (fp16), and checks it on photos it never saw.
#
#   scripts/train_stego_100.sh [RUN_FOLDER]     # resumable: run it again to continue
#
# Training data: random 32x32 crops of four of builtin:photos' six sources (astronaut, coffee,
# chelsea, rocket); held out: china and flower. 100 bits, batch 32, robustness stage with
# noise, blur, JPEG, crop, resize and brightness; 30000 steps (the shipped file may come from an
# earlier snapshot of the same run; its step count is in the file's gantk.steps metadata).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/stego-100}
GANTK=${GANTK:-.venv/bin/gantk}
PY=${PY:-.venv/bin/python}

if [ -f "$RUN/state.safetensors" ]; then
  "$GANTK" train stego --resume --out "$RUN" --steps 30000 --threads 1 --device cpu
else
  # FROM=gantk/models/stego-100.safetensors continues from the shipped weights (new run folder;
  # optimizer state starts afresh) when the original run folder is gone.
  "$GANTK" train stego "builtin:photos?sources=astronaut,coffee,chelsea,rocket&n=20000" \
    ${FROM:+--init "$FROM"} \
    --resolution 32 --bits 100 --batch-size 32 --steps 30000 \
    --robust noise,blur,jpeg,crop,resize,brightness --snapshot-every 250 \
    --threads 1 --device cpu --out "$RUN"
fi
exec scripts/ship_stego.sh "$RUN/stego.safetensors"
