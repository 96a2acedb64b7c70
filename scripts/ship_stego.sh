#!/usr/bin/env bash
# Converts a trained stego model to fp16 as gantk/models/stego-100.safetensors and measures it on
# the held-out images of scripts/training_data.sh (data/training/heldout-mixed: photos and
# textures from wallpapers and texture folders never trained on, 64 to 1536 px, each embedded at
# its own size): the figures docs/models.md reports, and docs/img/stego-100-heldout.png.
#
#   scripts/ship_stego.sh runs/stego-100-v2/stego.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/training}
"$PY" - "$SRC" <<'PYEOF'
import sys
import torch
from gantk.fingerprint.train_stego import load_stego, save_stego
from gantk.io.checkpoint import read_metadata
src = sys.argv[1]
encoder, decoder = load_stego(src)
meta = {k: v for k, v in read_metadata(src).items() if k in ("gantk.steps", "gantk.data")}
save_stego("gantk/models/stego-100.safetensors", encoder, decoder, meta, dtype=torch.float16)
print("wrote gantk/models/stego-100.safetensors from", src, meta)
PYEOF
"$PY" scripts/stego_heldout.py builtin:stego-100 "$DATA/heldout-mixed" \
  --json "$(dirname "$SRC")/heldout.json" --figure docs/img/stego-100-heldout.png
