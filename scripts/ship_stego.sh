#!/usr/bin/env bash
# Converts a trained stego model to fp16 as gantk/models/stego-100.safetensors and measures it on
# the held-out images of scripts/training_data.sh (data/training/heldout-mixed: photos and
# textures from wallpapers and texture folders never trained on, 64 to 1536 px, each embedded at
# its own size; data/training/heldout-768: the held-out photos at 768 px): the figures
# docs/models.md reports, docs/img/stego-100-heldout.png and the full-size
# docs/img/stego-100-heldout-full.png.
#
#   scripts/ship_stego.sh runs/stego-100-v3/stego.safetensors [TOTAL_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/training}
"$PY" - "$SRC" "${2:-}" <<'PYEOF'
import sys
import torch
from gantk.fingerprint.train_stego import load_stego, save_stego
from gantk.io.checkpoint import read_metadata
src, total = sys.argv[1], sys.argv[2]
encoder, decoder = load_stego(src)
meta = {k: v for k, v in read_metadata(src).items() if k in ("gantk.steps", "gantk.data")}
if total:
    meta["gantk.total_steps"] = total
save_stego("gantk/models/stego-100.safetensors", encoder, decoder, meta, dtype=torch.float16)
print("wrote gantk/models/stego-100.safetensors from", src, meta)
PYEOF
"$PY" scripts/stego_heldout.py builtin:stego-100 "$DATA/heldout-mixed" "$DATA/heldout-768" \
  --clean 100 --json "$(dirname "$SRC")/heldout.json" --figure docs/img/stego-100-heldout.png
"$PY" scripts/stego_heldout.py builtin:stego-100 "$DATA/heldout-768" \
  --figure-full docs/img/stego-100-heldout-full.png > /dev/null
