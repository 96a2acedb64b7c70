#!/usr/bin/env bash
# Artificial fingerprints, Table 5.1 at small scale: fingerprint a dataset, train a GAN on it and
# an identical GAN on the clean data, generate from both and decode.
#
#   examples/artificial_fingerprints.sh [OUT] [KIMG]          # defaults: out/artificial 20
#   ENCODER=runs/stego/stego.safetensors DEVICE=cuda examples/artificial_fingerprints.sh out/a 500
#   DATA='builtin:photos?n=4000' RES=64 STRENGTH=auto examples/artificial_fingerprints.sh out/t 20
#
# DATA (builtin:shapes?n=4000), RES (32), DESIGN (the encoder's own) and STRENGTH (the
# design's default: auto for native, 1 for paper) choose what is fingerprinted and how; the
# transfer experiment of the native design (docs/results.md) runs 64 px photos with the
# bundled builtin:stego-100 at several strengths.
#
# Reports, for each GAN: mean bit accuracy of $SAMPLES (500) samples against the fingerprint, how many are
# detected at FPR 1e-6, the folder-level p-value (majority vote); and the FID of each GAN against the clean data
# (random-inception features unless INCEPTION names the real weight file, so the FID change
# is what the table's "FID cost of fingerprinting" measures, in those features).
set -euo pipefail
OUT=${1:-out/artificial}
KIMG=${2:-20}
ENCODER=${ENCODER:-builtin:stego-100}
DATA=${DATA:-builtin:shapes?n=4000}
RES=${RES:-32}
EMBED_OPTS=()
[ -z "${DESIGN:-}" ] || EMBED_OPTS+=(--design "$DESIGN")
[ -z "${STRENGTH:-}" ] || EMBED_OPTS+=(--strength "$STRENGTH")
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-}
FEATURES=${FEATURES:-random-inception}
GANTK=${GANTK:-gantk}
FID_COUNT=${FID_COUNT:-1000}
SAMPLES=${SAMPLES:-500}
mkdir -p "$OUT"

# 1. Data: RES x RES images (default: 32x32 scenes of shapes), and their fingerprinted copies
# (one 100-bit fingerprint).
$GANTK data export "$DATA" "$OUT/clean" --resolution "$RES" --flat --force --quiet
$GANTK fingerprint-embed "$OUT/clean" --encoder "$ENCODER" --seed 7 --out "$OUT/fingerprinted" \
  "${EMBED_OPTS[@]}" --force --quiet
# The fingerprinted data itself: what the GANs should reproduce.
$GANTK fingerprint-decode "$OUT/fingerprinted" --decoder "$ENCODER" \
  --expect "$OUT/fingerprinted" --json --quiet > "$OUT/decode-data.json"

# Feature statistics of the clean data, computed once for both FIDs.
$GANTK evaluate fid "$OUT/clean" --save-stats "$OUT/clean-stats.npz" -n "$FID_COUNT" \
  --features "$FEATURES" --force --quiet

# 2. Two identical GANs, one per dataset (same seed, same settings).
for data in clean fingerprinted; do
  if [ ! -f "$OUT/gan-$data/latest.safetensors" ]; then
    ${THREADS:+env OMP_NUM_THREADS=$THREADS} $GANTK train gan "$OUT/$data" --resolution "$RES" \
      --kimg "$KIMG" --batch-size 16 --z-dim 64 --w-dim 64 --mapping-layers 4 \
      --channel-base 2048 --channel-max 64 --seed 0 --device "$DEVICE" \
      --snapshot-kimg 5 --sample-kimg 5 --out "$OUT/gan-$data" --quiet
  fi
  $GANTK generate "$OUT/gan-$data/latest.safetensors" -n "$SAMPLES" --out "$OUT/samples-$data" \
    --force --quiet
  $GANTK fingerprint-decode "$OUT/samples-$data" --decoder "$ENCODER" \
    --expect "$OUT/fingerprinted" --json --quiet > "$OUT/decode-$data.json"
  $GANTK evaluate fid "$OUT/clean-stats.npz" "$OUT/gan-$data/latest.safetensors" \
    -n "$FID_COUNT" --features "$FEATURES" --json --quiet > "$OUT/fid-$data.json"
done

# 3. The table.
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(name):
    return json.load(open(f"{out}/{name}.json"))
data = load("decode-data")["summary"]
metric = next(k for k in load("fid-clean")["metrics"] if k.startswith("fid"))
print(f"{'':<22} {'bit acc':>8} {'detected':>9} {'folder p':>11} {metric:>9}")
print(f"{'fingerprinted data':<22} {data['mean_bit_accuracy']:>8.4f} "
      f"{data['detected']:>4}/{data['images']:<4} {data['folder_p_value']:>11.2g} {'-':>9}")
for name in ("clean", "fingerprinted"):
    s = load(f"decode-{name}")["summary"]
    metric, value = next((k, v) for k, v in load(f"fid-{name}")["metrics"].items() if k.startswith("fid"))
    print(f"{'GAN on ' + name + ' data':<22} {s['mean_bit_accuracy']:>8.4f} "
          f"{s['detected']:>4}/{s['images']:<4} {s['folder_p_value']:>11.2g} {value:>9.2f}")
record = json.load(open(f"{out}/fingerprinted/fingerprint.json"))
psnr, strength = record["psnr_db"], record.get("strength", {})
print(f"embedding: design {record.get('design', 'paper')}, strength {strength.get('mode', 'fixed')} "
      f"(mean {strength.get('mean', 1.0):.3g}), PSNR mean {psnr['mean']:.2f} / min {psnr['min']:.2f} dB")
PY
