#!/usr/bin/env bash
# Converts a trained stego model to fp16 as gantk/models/stego-100.safetensors and measures it on
# held-out photos (clean and after JPEG 75): the figures docs/results.md reports.
#
#   scripts/ship_stego.sh runs/stego-100/stego.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1
PY=${PY:-.venv/bin/python}
GANTK=${GANTK:-.venv/bin/gantk}
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
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$GANTK" data export "builtin:photos?sources=china,flower&seed=7" "$TMP/clean" -n 200 --resolution 64 --quiet
"$GANTK" fingerprint-embed "$TMP/clean" --out "$TMP/marked" --seed 1 --quiet --json > "$TMP/embed.json"
"$GANTK" evaluate robustness "$TMP/marked" --expect "$TMP/marked" --perturb jpeg,noise,blur,crop,resize \
  --plot docs/img/stego-100-robustness.png --force --json > "$TMP/robustness.json"
"$PY" - "$TMP" <<'PYEOF'
import json, sys
tmp = sys.argv[1]
embed = json.load(open(f"{tmp}/embed.json"))
rows = json.load(open(f"{tmp}/robustness.json"))["rows"]
clean = next(r for r in rows if r["perturbation"] == "noise" and r["strength"] == 0)
jpeg75 = [r for r in rows if r["perturbation"] == "jpeg" and r["strength"] == 75]
print(f"held-out photos (200, 64x64): PSNR {embed['psnr_db']['mean']:.2f} dB, "
      f"SSIM {embed['ssim']['mean']:.4f}, clean bit accuracy {clean['bit_accuracy']:.4f}, "
      "JPEG 75 bit accuracy " + ", ".join(f"{r['bit_accuracy']:.4f}" for r in jpeg75))
PYEOF
