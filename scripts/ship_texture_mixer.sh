#!/usr/bin/env bash
# Converts a trained Texture Mixer to fp16 as gantk/models/texture-mixer.safetensors and scores
# it on the held-out textures of scripts/training_data.sh (texture folders never trained on;
# the figures docs/models.md reports, with the grid measure), with sample strips in docs/img/.
#
#   scripts/ship_texture_mixer.sh runs/texture-mixer/latest.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1
PY=${PY:-.venv/bin/python}
GANTK=${GANTK:-.venv/bin/gantk}
PAIRS=${PAIRS:-768}  # CSWD's noise floor needs hundreds of strips (docs/models.md)
DATA=${DATA:-data/training}
"$PY" - "$SRC" <<'PYEOF'
import sys
import torch
from gantk.io.checkpoint import read_metadata
from gantk.texture.train import load_texture_mixer, save_texture_mixer
src = sys.argv[1]
model = load_texture_mixer(src)
meta = {k: v for k, v in read_metadata(src).items() if k in ("gantk.steps", "gantk.data")}
dst = "gantk/models/texture-mixer.safetensors"
save_texture_mixer(dst, model, model.gram_net, meta, dtype=torch.float16)
print("wrote", dst, "from", src, meta)
PYEOF
mkdir -p docs/img
"$GANTK" evaluate texture builtin:texture-mixer "$DATA/texture-heldout" --pairs "$PAIRS" \
  --samples docs/img/texture-mixer-strips.png --json > docs/img/texture-mixer-scores.json
"$GANTK" texture-mix builtin:brick builtin:gravel --out docs/img/texture-mixer-strip.png \
  --length 512 --force --quiet
"$GANTK" texture-mix builtin:brick builtin:grass builtin:moon builtin:ihc --palette --size 512 \
  --out docs/img/texture-mixer-palette.png --force --quiet
# A 1024 px palette of four held-out textures (grass, rock, sand, wood of texture folders the
# model never saw).
H=$DATA/texture-heldout/nexuiz-textures
"$GANTK" texture-mix "$H-terraintex__grass2_e7c784.png" "$H-terraintex__rock02b_85e571.png" \
  "$H-terraintex__sand01_5fd90b.png" "$H-evil1_woods__wood_98d5e2.png" --palette --size 1024 \
  --out docs/img/texture-mixer-palette-heldout.png --force --quiet
cat docs/img/texture-mixer-scores.json
