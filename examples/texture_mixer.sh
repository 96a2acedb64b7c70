#!/usr/bin/env bash
# Texture Mixer at small scale (thesis ch.3, Table 3.1): the full method and its three
# ablations (no shuffling, no blending, no global code) trained alike on builtin:textures, then
# scored with the naive alpha-blending baseline on the horizontal interpolation task (two side
# textures from the held-out bottom quarter of every source, a RES x 8*RES strip): SPD, CGD,
# CCD, CSS, CRS, CIS, CSWD and time per strip. CSS and CRS use seam and repetition classifiers
# trained here for RES px on the same training rows (CLASSIFIER_STEPS, default 3000: about two
# minutes at 32 px on one core).
#
#   examples/texture_mixer.sh [OUT] [STEPS]            # defaults: out/texture-mixer 500
#   DEVICE=cuda RES=128 CHANNELS=256 LATENT=128 DCH=64 BATCH=8 GRAM_EVERY=1 \
#     examples/texture_mixer.sh out/tm 100000          # the paper's sizes on a GPU
#
# Small networks at RES (32) px so four runs fit a CPU (about 3 minutes each on one core); runs are resumable (run it again with
# more STEPS to continue). Gram statistics use the ImageNet VGG-19 when its weight file is
# installed, else the fixed random VGG-19 (metric names then say [random-vgg19]); SPD needs
# LPIPS weights or falls back like `gantk evaluate texture` does. Compare numbers within a table.
set -euo pipefail
OUT=${1:-out/texture-mixer}
STEPS=${2:-500}
RES=${RES:-32}
CHANNELS=${CHANNELS:-32}
LATENT=${LATENT:-16}
DCH=${DCH:-8}
BATCH=${BATCH:-4}
GRAM_EVERY=${GRAM_EVERY:-4}
PAIRS=${PAIRS:-20}
CLASSIFIER_STEPS=${CLASSIFIER_STEPS:-3000}
DEVICE=${DEVICE:-auto}
GANTK=${GANTK:-gantk}
mkdir -p "$OUT"

train() {  # NAME EXTRA…
  local run=$OUT/$1
  shift
  if [ -f "$run/state.safetensors" ]; then
    $GANTK train texture --resume --out "$run" --steps "$STEPS" --device "$DEVICE" --quiet
  else
    $GANTK train texture builtin:textures --out "$run" --resolution "$RES" \
      --channels "$CHANNELS" --latent-channels "$LATENT" --global-dim "$LATENT" \
      --d-channels "$DCH" --batch-size "$BATCH" --lr 0.001 --gram-every "$GRAM_EVERY" \
      --steps "$STEPS" --snapshot-every 100 --device "$DEVICE" ${THREADS:+--threads "$THREADS"} \
      --quiet "$@"
  fi
}

train full
train no-shuffle --no-shuffle
train no-blend --no-blend
train no-global --no-global

# The seam and repetition classifiers of CSS and CRS, at the models' resolution.
CLASSIFIERS=$OUT/classifiers-$RES.safetensors
[ -f "$CLASSIFIERS" ] || $GANTK train texture-classifiers builtin:textures --resolution "$RES" \
  --steps "$CLASSIFIER_STEPS" --out "$CLASSIFIERS" --device "$DEVICE" \
  ${THREADS:+--threads "$THREADS"} --quiet

for run in full no-shuffle no-blend no-global; do
  methods=ours
  [ "$run" = full ] && methods=ours,alpha
  # The paper's latent operations (tiles with rows and columns shuffled, blended latents), not
  # texture-mix's defaults, no deblocking: the table is the paper's method and its ablations.
  $GANTK evaluate texture "$OUT/$run/latest.safetensors" "builtin:textures" --cover rows \
    --mix blend --no-deblock --methods "$methods" --pairs "$PAIRS" --classifiers "$CLASSIFIERS" \
    --device "$DEVICE" --json \
    ${SAMPLES:+--samples "$OUT/$run-strips.png"} > "$OUT/$run.json"
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
names = ("spd", "cgd", "ccd", "css", "crs", "cis", "cswd", "seconds")
print("| method | SPD | CGD | CCD | CSS | CRS | CIS | CSWD | s/strip |")
print("|---|---|---|---|---|---|---|---|---|")
for run in ("full", "no-shuffle", "no-blend", "no-global"):
    doc = json.loads((out / f"{run}.json").read_text())
    for method, scores in doc["methods"].items():
        label = "naive alpha-blending" if method == "alpha" else f"ours ({run})"
        # Metric names carry their feature network, e.g. cgd[random-vgg19]; std keys are skipped.
        means = {k.split("[")[0]: v for k, v in scores.items() if not k.endswith("_std")}
        print(f"| {label} | " + " | ".join(f"{means[n]:.4g}" for n in names) + " |")
print("metrics:", ", ".join(doc["metrics"]))
PY
