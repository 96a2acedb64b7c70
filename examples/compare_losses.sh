#!/usr/bin/env bash
# Thesis Table 2.1 at toy scale: the five GAN losses on builtin:shapes (32 px, CPU), scored by
# fid[shapes-cnn] (examples/shapes_fid.py). KIMG=10 per loss by default.
# Usage: examples/compare_losses.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/losses}
kimg=${KIMG:-10}
for loss in ns saturating wgan-gp hinge contrastive; do
  run="$out/$loss"
  warmup=$([ "$loss" = contrastive ] && echo 30 || echo 0)
  if [ -f "$run/latest-state.safetensors" ]; then
    gantk train gan --resume "$run" --kimg "$kimg" --quiet
  else
    gantk train gan 'builtin:shapes?n=4000' --resolution 32 --kimg "$kimg" --batch-size 32 \
      --z-dim 64 --w-dim 64 --channel-base 2048 --channel-max 64 --mirror --loss "$loss" \
      --contrastive-warmup "$warmup" --snapshot-kimg "$kimg" --sample-kimg "$kimg" --out "$run" --quiet
  fi
  python3 "$(dirname "$0")/shapes_fid.py" "$run" --count 1000 --json "$run/fid.json" | tail -1 |
    sed "s/^/$loss: /"
done
