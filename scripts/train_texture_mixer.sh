#!/usr/bin/env bash
# Trains builtin:texture-mixer (v2), the default model of `gantk texture-mix`, shipped as
# gantk/models/texture-mixer.safetensors (fp16), and scores it on held-out textures.
#
#   scripts/train_texture_mixer.sh [RUN_FOLDER]     # resumable: run it again to continue
#
# Data (scripts/training_data.sh, run here when missing): data/training/texture-train, about
# 3100 photographed-material textures of three game texture packs (Debian packages); whole
# texture folders are held out (data/training/texture-heldout). Starts from the v1 model
# (2500 steps on builtin:textures, taken from git history) with the same CPU-sized network:
# 64 px crops (16x16x32 local latent, 32-d global code), generator width 64 with 5 residual
# blocks, critics of width 16 (fresh); batch 4 pairs, Adam lr 0.001 (0, 0.99), Gram terms every
# 4th step at 4x weight. STEPS (default 20000), THREADS (default 1), DEVICE (default cpu) and
# SHIP=0 (stop after saving the WIP file, without the held-out scoring) may be set; the shipped
# file may come from a snapshot of the run, its step count is in the gantk.steps metadata.
# Between sessions the run lives on as models-wip/texture-mixer-v2.safetensors (fp16, written by
# scripts/save_wip.py): with no run folder, this script continues from it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/texture-mixer-v2}
GANTK=${GANTK:-.venv/bin/gantk}
DATA=${DATA:-data/training}
STEPS=${STEPS:-20000}
THREADS=${THREADS:-1}
DEVICE=${DEVICE:-cpu}  # cuda on a GPU machine (make gpu-check continues these runs there)

PY=${PY:-.venv/bin/python}
WIP=${WIP_DIR:-models-wip}/texture-mixer-v2.safetensors  # WIP_DIR: elsewhere (scripts/save_wip.py)

if [ -f "$RUN/state.safetensors" ]; then
  "$GANTK" train texture --resume --out "$RUN" --steps "$STEPS" --threads "$THREADS" --device "$DEVICE"
else
  [ -d "$DATA/texture-train" ] || scripts/training_data.sh "$DATA"
  mkdir -p "$RUN"
  if [ -f "$WIP" ]; then
    # Continue the run of an earlier session from its committed fp16 (EMA) weights.
    START=$WIP
    "$PY" scripts/save_wip.py start "$WIP" "$RUN"
  elif [ -n "${V1:-}" ]; then
    START=$V1
  else  # v1, from the last commit that shipped it
    START="$RUN/start-v1.safetensors"
    git show 5af5d6b:gantk/models/texture-mixer.safetensors > "$START"
  fi
  "$GANTK" train texture "$DATA/texture-train" --init "$START" --out "$RUN" --resolution 64 \
    --channels 64 --latent-channels 32 --global-dim 32 --d-channels 16 --batch-size 4 \
    --lr 0.001 --gram-every 4 --steps "$STEPS" --snapshot-every 250 --threads "$THREADS" \
    --device "$DEVICE"
fi
"$PY" scripts/save_wip.py texture "$RUN"
[ "${SHIP:-1}" = 0 ] || exec scripts/ship_texture_mixer.sh "$RUN/latest.safetensors"
