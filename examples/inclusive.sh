#!/usr/bin/env bash
# Inclusive GAN at small scale (thesis ch.7): a StyleGAN2 baseline vs IMLE-GAN on
# builtin:stacked-digits (Table 7.1: modes covered of 1000, KL to uniform), and baseline vs
# IMLE-GAN vs its minority variant on builtin:shapes with a 2 % triangle minority (Tables
# 7.2-7.3: FID, and precision and recall overall and on the minority as the thesis measures
# them, PRD of Sajjadi et al. 2018 reported as F_1/8 (precision) and F_8 (recall); the k-NN
# precision/recall of Kynkäänniemi et al. 2019 (`evaluate pr`) is shown beside it).
#
#   examples/inclusive.sh [OUT] [KIMG]                 # defaults: out/inclusive 20
#   DEVICE=cuda RES=32 examples/inclusive.sh out/incl 500
#
# Tiny networks at RES (16) px so the five runs fit a CPU. IMLE features default to auto (LPIPS
# when the AlexNet weights are on the machine, else discriminator features); FID and
# precision/recall use FEATURES (random-inception / random-vgg16 unless the real weight files
# are installed: set FEATURES= to use the standard ones), so compare numbers within this table.
# IvOM needs the LPIPS (VGG-16, the authors') weights: set IVOM=1 where they are installed.
# The authors' matching schedule (refresh every 10 epochs, doubling; a pool of 10x the images)
# suits runs of hundreds of epochs; these runs last about 2 epochs, so matching is refreshed
# after STALENESS (0.25) epochs, doubling, from a pool of POOL (2) x the images.
set -euo pipefail
OUT=${1:-out/inclusive}
KIMG=${2:-20}
RES=${RES:-16}
DEVICE=${DEVICE:-auto}
FEATURES=${FEATURES-random}
IVOM=${IVOM:-0}
STALENESS=${STALENESS:-0.25}
POOL=${POOL:-2}
EVAL_N=${EVAL_N:-500}  # images per set for FID and precision/recall (feature nets are slow on CPUs)
GANTK=${GANTK:-gantk}
mkdir -p "$OUT"
NET=(--resolution "$RES" --kimg "$KIMG" --batch-size 32 --z-dim 32 --w-dim 32 --mapping-layers 2
  --channel-base 512 --channel-max 32 --seed 0 --device "$DEVICE" --snapshot-kimg 5
  --sample-kimg 5 --quiet)
SHAPES="builtin:shapes?n=5000&minority=triangle:0.02"

train() {  # RUN DATA EXTRA…
  local run=$1 data=$2
  shift 2
  if [ -f "$run/latest-state.safetensors" ]; then
    $GANTK train gan --resume "$run" --kimg "$KIMG" --device "$DEVICE" --quiet
  else
    $GANTK train gan "$data" --out "$run" "${NET[@]}" "$@"
  fi
}

# 1. Stacked digits: coverage of the 1000 modes.
train "$OUT/digits-stylegan2" builtin:stacked-digits
IMLE=(--imle --imle-interp --imle-staleness "$STALENESS")
train "$OUT/digits-imle" builtin:stacked-digits "${IMLE[@]}" --imle-pool "$((POOL * 10000))"
for run in digits-stylegan2 digits-imle; do
  $GANTK evaluate modes "$OUT/$run/latest.safetensors" -n 10000 --device "$DEVICE" --json \
    --quiet > "$OUT/modes-$run.json"
done

# 2. Shapes with a 2 % minority (triangles).
train "$OUT/shapes-stylegan2" "$SHAPES"
train "$OUT/shapes-imle" "$SHAPES" "${IMLE[@]}" --imle-pool "$((POOL * 5000))"
train "$OUT/shapes-minority" "$SHAPES" "${IMLE[@]}" --imle-pool "$((POOL * 100))" --minority builtin
feat=()
[ -z "$FEATURES" ] || feat=(--features "$FEATURES-inception")
pr_feat=()
[ -z "$FEATURES" ] || pr_feat=(--features "$FEATURES-vgg16")
for run in shapes-stylegan2 shapes-imle shapes-minority; do
  g="$OUT/$run/latest.safetensors"
  $GANTK evaluate fid "$SHAPES&resolution=$RES" "$g" -n "$EVAL_N" "${feat[@]}" --device "$DEVICE" \
    --json --quiet > "$OUT/fid-$run.json"
  $GANTK evaluate pr "$SHAPES&resolution=$RES" "$g" -n "$EVAL_N" "${pr_feat[@]}" --device "$DEVICE" \
    --json --quiet > "$OUT/pr-$run.json"
  $GANTK evaluate pr "$SHAPES&resolution=$RES" "$g" -n "$EVAL_N" --subset triangle "${pr_feat[@]}" \
    --device "$DEVICE" --json --quiet > "$OUT/pr-minority-$run.json"
  # PRD compares sets of equal size: EVAL_N images overall, the 100 real triangles for the
  # minority (k-means with 10 clusters for 2 x 100 points).
  $GANTK evaluate prd "$SHAPES&resolution=$RES" "$g" -n "$EVAL_N" "${feat[@]}" --device "$DEVICE" \
    --plot "$OUT/prd-$run.png" --force --json --quiet > "$OUT/prd-$run.json"
  $GANTK evaluate prd "$SHAPES&resolution=$RES" "$g" -n 100 --subset triangle --clusters 10 \
    "${feat[@]}" --device "$DEVICE" --json --quiet > "$OUT/prd-minority-$run.json"
  if [ "$IVOM" = 1 ]; then
    $GANTK evaluate ivom "$g" "$SHAPES&resolution=$RES" --subset triangle -n 100 \
      --device "$DEVICE" --json --quiet > "$OUT/ivom-minority-$run.json"
  fi
done

# 3. The tables.
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))
print("stacked digits       modes (of 1000)   KL")
for run in ["digits-stylegan2", "digits-imle"]:
    m = load(f"modes-{run}")
    print(f"{run:<20} {m['modes_covered']:>15} {m['kl_to_uniform']:>6.3f}")
def metric(doc, prefix):
    return next(v for k, v in doc["metrics"].items() if k.startswith(prefix))
def prd_f(doc, which):  # "f_1/8" (precision) or "f_8" (recall)
    return next(v for k, v in doc["metrics"].items() if k.endswith(which))
print("shapes, 2 % triangles    FID  | PRD F1/8 F8 | minority F1/8 F8 | k-NN prec. rec. | "
      "minority prec. rec. | IvOM")
for run in ["shapes-stylegan2", "shapes-imle", "shapes-minority"]:
    fid, pr, prm = load(f"fid-{run}"), load(f"pr-{run}"), load(f"pr-minority-{run}")
    prd, prdm = load(f"prd-{run}"), load(f"prd-minority-{run}")
    ivom = "-"
    if os.path.exists(f"{out}/ivom-minority-{run}.json"):
        ivom = f"{load(f'ivom-minority-{run}')['mean']:.4f}"
    print(f"{run:<20} {metric(fid, 'fid'):>8.3f} | {prd_f(prd, 'f_1/8'):.3f} {prd_f(prd, 'f_8'):.3f}"
          f" | {prd_f(prdm, 'f_1/8'):.3f} {prd_f(prdm, 'f_8'):.3f}"
          f" | {metric(pr, 'precision'):.3f} {metric(pr, 'recall'):.3f}"
          f" | {metric(prm, 'precision'):.3f} {metric(prm, 'recall'):.3f} | {ivom}")
PY
