#!/usr/bin/env bash
# One GAN variant on builtin:shapes at the toy scale of docs/results.md (32 px, 64 channels,
# batch 32), trained for KIMG and scored on its last snapshot by fid[shapes-cnn]
# (examples/shapes_fid.py, 1000 vs 1000 images). Resumable. Used by compare_losses.sh and
# compare_attention.sh so every variant runs on the same data and budget. CONFIG (default auto:
# at 5-10 kimg the paper preset's EMA still holds mostly initial weights) picks --config.
#
#   examples/shapes_variant.sh RUN SEED KIMG [gantk train gan options...]
set -euo pipefail
run=$1 seed=$2 kimg=$3
shift 3
if [ -f "$run/latest-state.safetensors" ]; then
  gantk train gan --resume "$run" --kimg "$kimg" --quiet
else
  gantk train gan 'builtin:shapes?n=4000' --resolution 32 --kimg "$kimg" --batch-size 32 \
    --z-dim 64 --w-dim 64 --channel-base 2048 --channel-max 64 --mirror --seed "$seed" \
    --config "${CONFIG:-auto}" --snapshot-kimg "$kimg" --sample-kimg "$kimg" --out "$run" --quiet "$@"
fi
python3 "$(dirname "$0")/shapes_fid.py" "$run" --count 1000 --last --json "$run/fid.json" >/dev/null
