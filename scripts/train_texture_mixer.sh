#!/usr/bin/env bash
# Trains builtin:texture-mixer, the default model of `gantk texture-mix`, shipped as
# gantk/models/texture-mixer.safetensors (fp16), and scores it on the held-out rows of
# builtin:textures (SPD, CGD, CCD, CSWD vs naive alpha-blending).
#
#   scripts/train_texture_mixer.sh [RUN_FOLDER]     # resumable: run it again to continue
#
# Data: builtin:textures (brick, grass, gravel, moon, hubble, ihc from scikit-image), the top
# 75% of every image's rows; the bottom quarter is held out for evaluation. CPU-sized network:
# 64 px crops (16x16x32 local latent, 32-d global code), generator width 64 with 5 residual
# blocks, critics of width 16; batch 4 pairs, Adam lr 0.001 (0, 0.99), Gram terms every 4th
# step at 4x weight; 2500 steps (STEPS=N continues further; the shipped file may come from a
# snapshot of the run; its step count is in the gantk.steps metadata). Gram features: VGG-19 ImageNet
# weights when installed, else the fixed random VGG-19 (recorded in the model's config).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/texture-mixer}
GANTK=${GANTK:-.venv/bin/gantk}
STEPS=${STEPS:-2500}

if [ -f "$RUN/state.safetensors" ]; then
  "$GANTK" train texture --resume --out "$RUN" --steps "$STEPS" --threads 1 --device cpu
else
  "$GANTK" train texture builtin:textures --out "$RUN" --resolution 64 --channels 64 \
    --latent-channels 32 --global-dim 32 --d-channels 16 --batch-size 4 --lr 0.001 \
    --gram-every 4 --steps "$STEPS" --snapshot-every 250 --threads 1 --device cpu
fi
exec scripts/ship_texture_mixer.sh "$RUN/latest.safetensors"
