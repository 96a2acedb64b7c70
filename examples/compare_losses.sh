#!/usr/bin/env bash
# Thesis Table 2.1 at toy scale: the five GAN losses on builtin:shapes (32 px, CPU), each with
# SEEDS (default 0 1 2), scored by fid[shapes-cnn]; prints mean ± std per loss.
# The contrastive loss warms up with ns for 5 % of the run, the share the thesis' ~20 epochs were
# of its runs (--contrastive-warmup is in epochs of the 4000 images).
# Usage: KIMG=10 SEEDS="0 1 2" examples/compare_losses.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/losses}
kimg=${KIMG:-10}
here=$(dirname "$0")
warmup=$(python3 -c "print($kimg * 1000 * 0.05 / 4000)")
for seed in ${SEEDS:-0 1 2}; do
  for loss in ns saturating wgan-gp hinge contrastive; do
    "$here/shapes_variant.sh" "$out/$loss/seed$seed" "$seed" "$kimg" --loss "$loss" \
      --contrastive-warmup "$warmup"
  done
done
python3 "$here/variant_table.py" "$out"
