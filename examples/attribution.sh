#!/usr/bin/env bash
# Attribution, Tables 4.3 and 4.7 at small scale: several GANs that differ only in their random
# seed, trained on the same data, plus the real images; learn to tell them apart and compare with
# the classic baselines, clean and under attacks, before and after immunization.
#
#   examples/attribution.sh [OUT] [KIMG]                  # defaults: out/attribution 10
#   SEEDS="1 2 3 4" STEPS=4000 DEVICE=cuda examples/attribution.sh out/attr 100
#
# Sources: real = builtin:shapes at 32x32 (the GANs' training set), gan-seedK = a small StyleGAN2
# trained on it with --seed K. NTRAIN images per source to learn from, NTEST new ones to test on
# (new real scenes, new latents). Writes OUT/eval-METHOD.json for every method and prints one table
# of accuracy per attack (Table 4.7's attacks: noise, blur, crop, JPEG, their combination).
set -euo pipefail
OUT=${1:-out/attribution}
KIMG=${2:-10}
SEEDS=${SEEDS:-1 2 3}
NTRAIN=${NTRAIN:-1000}
NTEST=${NTEST:-300}
STEPS=${STEPS:-2000}
DEVICE=${DEVICE:-auto}
CHANNEL_BASE=${CHANNEL_BASE:-512}
# Attributor training recipe: fast (gantk's default) or paper (the authors'; docs/results.md's
# Tables 4.3/4.7 rows were measured with it). visNet keeps its own default (paper).
RECIPE=${RECIPE:-fast}
GANTK=${GANTK:-gantk}
ATTACKS=clean,noise,blur,crop,jpeg,combo
# Component analysis (Tables 4.4-4.5): e.g. VARIANTS="predownsample@8 residual@16 postpool@8"
VARIANTS=${VARIANTS:-predownsample@8 residual@16 postpool@8}
mkdir -p "$OUT"

# 1. The GANs' training data, and real images for the two splits.
[ -d "$OUT/real" ] || $GANTK data export 'builtin:shapes?n=4000' "$OUT/real" --resolution 32 --flat --quiet
rm -rf "$OUT/sources" "$OUT/test"
$GANTK data export builtin:shapes "$OUT/sources/real" -n "$NTRAIN" --resolution 32 --flat --quiet
$GANTK data export builtin:shapes "$OUT/test/real" -n "$NTEST" --resolution 32 --seed 1 --flat --quiet

# 2. GANs identical but for the seed; NTRAIN samples each to learn from, NTEST others to test on.
for seed in $SEEDS; do
  run="$OUT/gan-seed$seed"
  if [ ! -f "$run/latest.safetensors" ]; then
    $GANTK train gan "$OUT/real" --resolution 32 --kimg "$KIMG" --batch-size 16 --z-dim 64 \
      --w-dim 64 --mapping-layers 4 --channel-base 2048 --channel-max 64 --seed "$seed" \
      --device "$DEVICE" --snapshot-kimg 5 --sample-kimg 5 --out "$run" --quiet
  fi
  $GANTK generate "$run/latest.safetensors" -n "$NTRAIN" --out "$OUT/sources/gan-seed$seed" --quiet
  $GANTK generate "$run/latest.safetensors" -n "$NTEST" --seed 1000000 \
    --out "$OUT/test/gan-seed$seed" --quiet
done

# 3. Our attributor, its immunized fine-tune, visNet; then every method on the test sources.
$GANTK train attributor "$OUT/sources" --out "$OUT/attr" --steps "$STEPS" --recipe "$RECIPE" \
  --channel-base "$CHANNEL_BASE" --device "$DEVICE" --force --quiet
$GANTK train attributor "$OUT/sources" --out "$OUT/attr-immunized" --recipe "$RECIPE" \
  --finetune "$OUT/attr/latest.safetensors" --augment all --steps "$((STEPS / 2))" \
  --device "$DEVICE" --force --quiet
$GANTK train attributor "$OUT/sources" --out "$OUT/visnet" --variant visnet --steps "$((STEPS / 2))" \
  --channel-base "$CHANNEL_BASE" --device "$DEVICE" --force --quiet

evaluate() {  # NAME ARGS…
  local name=$1
  shift
  $GANTK attribute "$OUT/test" --eval --attack "$ATTACKS" --json --quiet --force "$@" \
    > "$OUT/eval-$name.json"
}
evaluate ours --model "$OUT/attr/latest.safetensors" --confusion "$OUT/confusion-ours.png"
evaluate ours-tta --model "$OUT/attr/latest.safetensors" --tta
evaluate ours-immunized --model "$OUT/attr-immunized/latest.safetensors"
evaluate visnet --model "$OUT/visnet/latest.safetensors" --visualize "$OUT/visnet-fingerprints.png"
for baseline in knn eigenface eigenface-lr prnu spectral; do
  evaluate "$baseline" --baseline "$baseline" --fit "$OUT/sources"
done

# Component-analysis variants, clean accuracy only.
for variant in $VARIANTS; do
  name=${variant/@/-}
  $GANTK train attributor "$OUT/sources" --out "$OUT/attr-$name" --variant "$variant" \
    --recipe "$RECIPE" --steps "$STEPS" --channel-base "$CHANNEL_BASE" --device "$DEVICE" --force --quiet
  $GANTK attribute "$OUT/test" --eval --json --quiet --model "$OUT/attr-$name/latest.safetensors" \
    > "$OUT/eval-variant-$name.json"
done

# 4. The table.
python3 - "$OUT" "$ATTACKS" <<'PY'
import json, sys
out, attacks = sys.argv[1], sys.argv[2].split(",")
methods = ["knn", "eigenface", "eigenface-lr", "prnu", "spectral", "ours", "ours-tta", "ours-immunized", "visnet"]
first = json.load(open(f"{out}/eval-ours.json"))
print(f"sources: {', '.join(first['classes'])}; {first['images']} test images")
print(f"{'method':<16}" + "".join(f"{a:>8}" for a in attacks) + f"{'FD ratio':>10}{'AP r/f':>8}")
for m in methods:
    doc = json.load(open(f"{out}/eval-{m}.json"))["results"]
    clean = doc["clean"]
    fd, ap = clean.get("fd_ratio"), clean["real_vs_fake"]["average_precision"]
    print(f"{m:<16}" + "".join(f"{doc[a]['accuracy'] * 100:>8.1f}" for a in attacks)
          + f"{fd:>10.2f}" + f"{ap * 100:>8.1f}")
import glob
for path in sorted(glob.glob(f"{out}/eval-variant-*.json")):
    clean = json.load(open(path))["results"]["clean"]
    print(f"variant {path.split('eval-variant-')[1][:-5]:<16} clean accuracy "
          f"{clean['accuracy'] * 100:.1f}")
PY
