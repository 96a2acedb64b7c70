#!/usr/bin/env bash
# Augmentation for small data (issue 20, after StyleGAN2-ADA's Fig. 1/Table 2 at toy scale): the
# 32 px shapes GAN of examples/train_shapes.sh trained on only N scenes (default 500), without
# augmentation, with --aug ada and with --aug diffaug (AUGS picks; default all three), same seed and
# kimg; every snapshot is scored against the full distribution of builtin:shapes (fid[shapes-cnn],
# examples/shapes_fid.py, 2000 vs 2000 images), and ADA's p curve is drawn from log.jsonl.
#
#   examples/small_data.sh [OUT]       # default out/small-data; KIMG=20 N=500 ADA_KIMG=10
#
# ADA_KIMG is --ada-kimg: how many kimg p needs to go from 0 to 1. StyleGAN2-ADA's 500 suits its
# runs of thousands of kimg; in a 20 kimg run p could not pass 0.04, so the default here is 10.
set -euo pipefail
OUT=${1:-out/small-data}
KIMG=${KIMG:-20}
N=${N:-500}
ADA_KIMG=${ADA_KIMG:-10}
AUGS=${AUGS:-none ada diffaug}
GANTK=${GANTK:-gantk}
PY=${PY:-python3}
mkdir -p "$OUT"
for aug in $AUGS; do
  run="$OUT/$aug"
  if [ -f "$run/latest-state.safetensors" ]; then
    $GANTK train gan --resume "$run" --kimg "$KIMG" --quiet
  else
    $GANTK train gan "builtin:shapes?n=$N" --resolution 32 --kimg "$KIMG" --batch-size 32 \
      --z-dim 64 --w-dim 64 --channel-base 2048 --channel-max 64 --mirror --aug "$aug" \
      --ada-kimg "$ADA_KIMG" --snapshot-kimg 5 --sample-kimg 5 --out "$run" --quiet
  fi
  $PY "$(dirname "$0")/shapes_fid.py" "$run" --count 2000 --json "$run/fid.json"
done
$PY - "$OUT" $AUGS <<'PY'
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, augs = Path(sys.argv[1]), sys.argv[2:]
scores = {a: json.loads((out / a / "fid.json").read_text())["fid_shapes_cnn"] for a in augs}
print("fid[shapes-cnn] against the full set:")
for a, rows in scores.items():
    print(f"  {a:<8}", "  ".join(f"{k.removeprefix('generator at ')}: {v:.0f}"
                                  for k, v in rows.items()))
# D's mean logit on real images is the overfitting signal ADA steers (through its sign).
logs = {a: [json.loads(line) for line in (out / a / "log.jsonl").read_text().splitlines()]
        for a in augs}
panels = 2 if "ada" in augs else 1
fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3), squeeze=False)
for a, log in logs.items():
    axes[0, 0].plot([e["kimg"] for e in log], [e["real_logit"] for e in log], label=a)
axes[0, 0].set_ylabel("D logit on real images")
axes[0, 0].legend()
if "ada" in augs:
    axes[0, 1].plot([e["kimg"] for e in logs["ada"]], [e["aug_p"] for e in logs["ada"]])
    axes[0, 1].set_ylabel("ADA p")
for ax in axes[0]:
    ax.set_xlabel("kimg")
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "ada-p.png", dpi=100)
print(f"wrote {out / 'ada-p.png'}")
PY
