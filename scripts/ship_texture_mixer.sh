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
import json
import sys
from pathlib import Path
import torch
from gantk.io.checkpoint import read_metadata
from gantk.texture.train import load_texture_mixer, save_texture_mixer
src = sys.argv[1]
model = load_texture_mixer(src)
keep = ("gantk.steps", "gantk.total_steps", "gantk.data")
meta = {k: v for k, v in read_metadata(src).items() if k in keep}
start = Path(src).parent / "start.json"  # a run continued from earlier sessions' WIP file
if "gantk.total_steps" not in meta and start.is_file():
    before = int(json.loads(start.read_text()).get("total_steps_before", 0))
    meta["gantk.total_steps"] = str(before + int(meta.get("gantk.steps", "0")))
dst = "gantk/models/texture-mixer.safetensors"
save_texture_mixer(dst, model, model.gram_net, meta, dtype=torch.float16)
print("wrote", dst, "from", src, meta)
PYEOF
mkdir -p docs/img
"$GANTK" evaluate texture builtin:texture-mixer "$DATA/texture-heldout" --pairs "$PAIRS" \
  --samples docs/img/texture-mixer-strips.png --force --json > docs/img/texture-mixer-scores.json
"$GANTK" texture-mix builtin:brick builtin:gravel --out docs/img/texture-mixer-strip.png \
  --length 512 --force --quiet
"$GANTK" texture-mix builtin:brick builtin:grass builtin:moon builtin:ihc --palette --size 512 \
  --out docs/img/texture-mixer-palette.png --force --quiet
# A 1024 px palette of four held-out textures (grass, rock, sand, wood of texture folders the
# model never saw).
H=$DATA/texture-heldout/nexuiz-textures
CORNERS=("$H-terraintex__grass2_e7c784.png" "$H-terraintex__rock02b_85e571.png"
  "$H-terraintex__sand01_5fd90b.png" "$H-evil1_woods__wood_98d5e2.png")
"$GANTK" texture-mix "${CORNERS[@]}" --palette --size 1024 \
  --out docs/img/texture-mixer-palette-heldout.jpg --force --quiet
# The same four corners alpha-blended (pixels tiled, bilinear weights), for comparison.
"$PY" - "${CORNERS[@]}" <<'PYEOF'
import sys
sys.path.insert(0, "bench")
from texture_speed import alpha_palette
from gantk.io.images import save_image
from gantk.texture.data import load_texture
from gantk.texture.mixing import to_uint8
from gantk.texture.train import load_texture_mixer
res = load_texture_mixer("builtin:texture-mixer").config.resolution
corners = [load_texture(path, res)[0] for path in sys.argv[1:]]
save_image(to_uint8(alpha_palette(corners, 1024)), "docs/img/texture-mixer-palette-heldout-alpha.jpg")
PYEOF
cat docs/img/texture-mixer-scores.json
