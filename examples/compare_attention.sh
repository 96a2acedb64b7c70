#!/usr/bin/env bash
# Thesis Tables 2.3/2.5 at toy scale: StyleGAN2 (ns loss) without attention, with SAN
# self-attention replacing the generator's conv at 16x16, and with reference attention in the
# discriminator at 16x16, on builtin:shapes (32 px, CPU); SEEDS (default 0 1 2) each, scored by
# fid[shapes-cnn]; prints mean ± std and the parameter counts (Table 2.4's other column).
# Usage: KIMG=10 SEEDS="0 1 2" examples/compare_attention.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/attention}
kimg=${KIMG:-10}
here=$(dirname "$0")
for seed in ${SEEDS:-0 1 2}; do
  "$here/shapes_variant.sh" "$out/none/seed$seed" "$seed" "$kimg"
  "$here/shapes_variant.sh" "$out/g-san16/seed$seed" "$seed" "$kimg" --g-attn san@16
  "$here/shapes_variant.sh" "$out/d-reference16/seed$seed" "$seed" "$kimg" --d-attn reference@16
done
python3 "$here/variant_table.py" "$out" --params
