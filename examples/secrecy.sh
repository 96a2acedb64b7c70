#!/usr/bin/env bash
# Secrecy of artificial fingerprints (thesis §5.5.5, "0.502"): the ATS attack at small scale.
#
#   examples/secrecy.sh [OUT]        # default out/secrecy; STEPS=4000 BITS=32 THREADS=1
#
# The owner: builtin:stego-100 fingerprints 200 crops of two photos (china, flower); 200 other
# crops of the same photos stay clean. The attacker: a stego encoder trained independently
# (other data, builtin:textures; other seed; the image loss ramps in sooner than the authors'
# schedule so that a CPU run gives an inconspicuous encoder), cached in OUT/attacker. Both attack
# protocols (`gantk evaluate secrecy --protocol paper|transfer`) are run; accuracy near 0.5 means
# the fingerprint is secret.
set -euo pipefail
OUT=${1:-out/secrecy}
STEPS=${STEPS:-4000}
BITS=${BITS:-32}  # the attacker's own fingerprint length (fewer bits: learns sooner on a CPU)
THREADS=${THREADS:-1}
GANTK=${GANTK:-gantk}
mkdir -p "$OUT"
photos='builtin:photos?sources=china,flower&n=200&resolution=64'

if [ ! -f "$OUT/attacker/stego.safetensors" ] || [ -f "$OUT/attacker/state.safetensors" ]; then
  if [ -f "$OUT/attacker/state.safetensors" ]; then
    $GANTK train stego --resume --out "$OUT/attacker" --steps "$STEPS" --threads "$THREADS" \
      --device cpu --quiet
  else
    $GANTK train stego 'builtin:textures?n=8000' --resolution 32 --bits "$BITS" --seed 1 \
      --l2-delay 200 --l2-ramp 1000 --steps "$STEPS" --threads "$THREADS" --device cpu \
      --out "$OUT/attacker" --quiet
  fi
fi

$GANTK data export "$photos&seed=1" "$OUT/owner-source" --flat --force --quiet
$GANTK data export "$photos&seed=2" "$OUT/clean" --flat --force --quiet
$GANTK fingerprint-embed "$OUT/owner-source" --encoder builtin:stego-100 --seed 7 \
  --out "$OUT/owner" --force --quiet

for protocol in paper transfer; do
  $GANTK evaluate secrecy "$OUT/owner" "$OUT/clean" --attack-encoder "$OUT/attacker/stego.safetensors" \
    --protocol "$protocol" --json --quiet > "$OUT/secrecy-$protocol.json"
  python3 - "$OUT/secrecy-$protocol.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['protocol']:>8}: attack accuracy {r['attack_accuracy']:.4f} on {r['test_images']} "
      f"test images (train accuracy {r['train_accuracy']:.3f}; paper 0.502)")
PY
done
