#!/usr/bin/env bash
# A short CPU GAN run on builtin:shapes that visibly learns (docs/results.md, "GAN core").
# Resumable: run it again to continue. KIMG=40 by default (about 20 minutes on 2 CPU cores).
# CONFIG=paper|auto picks `gantk train gan --config` (default auto), SEED the run's seed,
# N the number of distinct scenes (default 4000), LR the learning rate (default: gantk's 0.002),
# GAMMA the R1 weight (default: --config's).
# Usage: examples/train_shapes.sh [RUN_DIR]
set -euo pipefail
run=${1:-runs/shapes32}
kimg=${KIMG:-40}
config=${CONFIG:-auto}
seed=${SEED:-0}
n=${N:-4000}
extra=()
[ -z "${LR:-}" ] || extra+=(--lr "$LR")
[ -z "${GAMMA:-}" ] || extra+=(--r1-gamma "$GAMMA")
if [ -f "$run/latest-state.safetensors" ]; then
  gantk train gan --resume "$run" --kimg "$kimg"
else
  gantk train gan "builtin:shapes?n=$n" --resolution 32 --kimg "$kimg" --batch-size 32 \
    --z-dim 64 --w-dim 64 --channel-base 2048 --channel-max 64 --mirror \
    --config "$config" --seed "$seed" "${extra[@]}" --snapshot-kimg 5 --sample-kimg 5 --out "$run"
fi
gantk generate "$run/latest.safetensors" --grid "$run/grid.png" --rows 8 --cols 8 --force
python3 "$(dirname "$0")/shapes_fid.py" "$run" --count 2000 --json "$run/fid.json"
