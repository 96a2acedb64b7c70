#!/usr/bin/env bash
# Everything a GPU can tell us, in one call (`make gpu-check`; docs/performance.md, issue 18):
#
#   1 setup     wheels the machine lacks (.whl/, `make gpu-wheels`), gantk info, kernel build
#   2 check     gantk ops check (every op and dtype against the reference)
#   3 tests     the GPU-marked tests (pytest -m gpu)
#   4 ops       bench/ops.py: fp32 and bf16, StyleGAN2 128/256 px layers, SAN 7x7 C256 32 px
#   5 train     bench/train_speed.py at 128 px (channel base 16384, z/w 512, batch 32, bf16),
#               baseline and SAN, reference ops and CUDA kernels
#   6 amp       short `gantk train gan` runs with --amp bf16, --amp fp16, --channels-last:
#               every logged loss finite
#   7 models    with the time left, the bundled models' training continues from their
#               committed weights (needs their training data carried, see docs/performance.md)
#   8 summary   summary.md, ready to paste into docs/performance.md
#
# Each step has a budget in seconds and is stopped at it; the summary is written whatever
# happened. Results go to $OUT when that is set (the device tool's folder), else
# out/gpu-check: summary.md, gpu-check.log, ops-check.json, bench-ops.json, train-speed.json,
# models.tar (at most 8 files, as the device tool brings back). Scratch: $GPU_CHECK_WORK.
#
#   make gpu-check                     # on the GPU machine, within a 540 s budget
#   make gpu-check DEVICE=cpu          # the rehearsal: same steps, small shapes (51 s here)
#
# Environment: DEVICE (cuda or cpu), GPU_CHECK_BUDGET (seconds in all; 540 on cuda, 240 on cpu),
# PY (python3), DATA (the bundled models' training data: data/training, else the subset in
# gpu-data/ that `make gpu-data` makes for the device tool to carry), WIP_DIR (their
# committed weights, default models-wip; models.tar brings the continued ones back), MODEL_STEPS
# (a cap on their steps, for the rehearsal).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
RESULTS=${OUT:-$ROOT/out/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/gantk-gpu-check}
DATA=${DATA:-data/training}
[ -e "$DATA" ] || [ ! -d gpu-data ] || DATA=gpu-data  # the carried subset (make gpu-data)
WIP_DIR=${WIP_DIR:-$ROOT/models-wip}  # the bundled models' committed weights, continued in step 7
START=$(date +%s)
if [ "$DEVICE" = cpu ]; then TOTAL=${GPU_CHECK_BUDGET:-240}; else TOTAL=${GPU_CHECK_BUDGET:-540}; fi

mkdir -p "$RESULTS" "$WORK/bin"
rm -rf "${WORK:?}/steps.tsv" "$WORK/bench" "$WORK/amp"
LOG=$RESULTS/gpu-check.log
: >"$LOG"
export PYTHONUNBUFFERED=1 GANTK_OPS_CACHE=$WORK/ops-cache
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# `gantk` for the scripts below, whatever is installed: this checkout's code.
printf '#!/bin/sh\nexec %s -m gantk "$@"\n' "$PY" >"$WORK/bin/gantk"
chmod +x "$WORK/bin/gantk"
export PATH=$WORK/bin:$PATH

# step NAME BUDGET COMMAND...: run COMMAND with at most BUDGET seconds (less when the whole
# check's budget is nearly spent), its output appended to the log; one line in steps.tsv.
step() {
  local name=$1 budget=$2
  shift 2
  local left=$((TOTAL - ($(date +%s) - START) - 10))  # 10 s kept for the summary
  [ "$budget" -gt "$left" ] && budget=$left
  local t0 rc status
  t0=$(date +%s)
  if [ "$budget" -le 0 ]; then
    status="not run: the check's time was spent"
  else
    echo "=== $name (budget ${budget}s): $*" >>"$LOG"
    # timeout signals the step's whole process group: training saves and stops on SIGINT.
    timeout --signal=INT --kill-after=10 "$budget" bash -c '"$@"' "$name" "$@" >>"$LOG" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      3) status="skipped: $(tail -n 1 "$LOG")" ;;
      124 | 137) status="stopped at its budget of ${budget}s" ;;
      *) status="failed (exit $rc)" ;;
    esac
  fi
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" "$status" >>"$WORK/steps.tsv"
  echo "=== $name: $status" >>"$LOG"
}

setup() {
  # The wheels are for the GPU machine's Python 3.12; the CPU rehearsal installs the pure ones.
  local wheels=(.whl/*.whl)
  [ "$DEVICE" = cpu ] && wheels=(.whl/*-py3-none-any.whl)
  if [ -e "${wheels[0]}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "${wheels[@]}" || return 1
  else
    echo "no wheels in .whl/ (make gpu-wheels): tests needing lpips or pytorch-fid will skip"
  fi
  "$PY" -m gantk info || return 1
  if [ "$DEVICE" != cpu ]; then
    "$PY" -m gantk ops build || return 1
  fi
}

ops_check() {
  if [ "$DEVICE" = cpu ]; then
    echo "no GPU: the kernels run on NVIDIA GPUs only (DEVICE=cpu rehearsal)"
    return 3
  fi
  "$PY" -m gantk ops check --device "$DEVICE" --json >"$RESULTS/ops-check.json"
}

gpu_tests() {
  # On the CPU every GPU test skips: the rehearsal checks that they are found and collected.
  "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider tests
}

bench_ops() {
  local small=()
  [ "$DEVICE" = cpu ] && small=(--small --repeat 2)
  "$PY" bench/ops.py --device "$DEVICE" --dtypes float32,bfloat16 "${small[@]}" \
    --out "$WORK/bench" && cp "$WORK/bench/ops_${DEVICE%%:*}.json" "$RESULTS/bench-ops.json"
}

train_speed() {
  local shape=(--resolution 128 --channel-base 16384 --channel-max 512 --z-dim 512 --w-dim 512
    --batch-size 32 --amp bf16 --steps 12 --warmup 3 --ops ref,cuda)
  [ "$DEVICE" = cpu ] && shape=(--resolution 16 --channel-base 256 --channel-max 16 --z-dim 16
    --w-dim 16 --batch-size 4 --steps 2 --warmup 1 --ops ref)
  "$PY" bench/train_speed.py --device "$DEVICE" "${shape[@]}" --variants baseline,san \
    --out "$WORK/bench" && cp "$WORK/bench"/train_speed_*.json "$RESULTS/train-speed.json"
}

amp_runs() {
  local variants=("bf16:--amp bf16" "fp16:--amp fp16" "channels-last:--channels-last")
  local res=32 n=512 kimg=0.512
  [ "$DEVICE" = cpu ] && { variants=("bf16:--amp bf16" "channels-last:--channels-last"); res=16; n=32; kimg=0.032; }
  local failed=0 v name
  for v in "${variants[@]}"; do
    name=${v%%:*}
    # shellcheck disable=SC2086  # the options are words on purpose
    "$PY" -m gantk train gan "builtin:shapes?n=$n" --resolution "$res" --kimg "$kimg" \
      --batch-size 16 --channel-base 512 --channel-max 32 --z-dim 32 --w-dim 32 \
      --g-attn "san@$((res / 2))" --tick-kimg "$kimg" --snapshot-kimg 100 --sample-kimg 100 \
      --device "$DEVICE" --seed 1 ${v#*:} --out "$WORK/amp/$name" --quiet || { failed=1; continue; }
    "$PY" - "$WORK/amp/$name/log.jsonl" "$name" <<'PY' || failed=1
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
bad = [(r["kimg"], k) for r in rows for k, v in r.items()
       if k.startswith("loss") and not math.isfinite(v)]
print(f"{sys.argv[2]}: {len(rows)} log lines, last loss_d {rows[-1]['loss_d']:.4f} "
      f"loss_g {rows[-1]['loss_g']:.4f}: " + ("non-finite " + str(bad) if bad else "all finite"))
sys.exit(1 if bad or not rows else 0)
PY
  done
  return $failed
}

models() {
  # Each bundled model whose training data is here gets an equal share of the time left.
  local kinds=() kind each
  [ -f "$DATA/stego-train-128.h5" ] && kinds+=(stego)
  [ -d "$DATA/texture-train" ] && kinds+=(texture)
  if [ ${#kinds[@]} = 0 ]; then
    echo "no training data in $DATA (stego-train-128.h5, texture-train/): make gpu-data, and carry gpu-data"
    return 3
  fi
  each=$(( ($1 - 30) / ${#kinds[@]} ))
  for kind in "${kinds[@]}"; do
    local script=scripts/train_stego_100.sh
    [ "$kind" = texture ] && script=scripts/train_texture_mixer.sh
    # SIGINT at the share's end: the trainer saves after its current step and exits 0, and
    # the script saves the fp16 WIP file (SHIP=0: no held-out scoring here).
    DEVICE=$DEVICE SHIP=0 STEPS=${MODEL_STEPS:-1000000} GANTK=gantk PY=$PY DATA=$DATA WIP_DIR=$WIP_DIR \
      timeout --signal=INT --kill-after=20 "$each" "$script" "$WORK/runs/$kind"
    "$PY" scripts/save_wip.py "$kind" "$WORK/runs/$kind" || return 1
  done
  tar -cf "$RESULTS/models.tar" -C "$(dirname "$WIP_DIR")" "$(basename "$WIP_DIR")"
}

export DEVICE PY RESULTS WORK DATA WIP_DIR
export -f setup ops_check gpu_tests bench_ops train_speed amp_runs models
if [ "$DEVICE" = cpu ]; then
  budgets=(60 10 60 60 90 90)
else
  budgets=(150 40 90 75 120 60)
fi
step setup "${budgets[0]}" setup
# The wheels installed by setup (lpips, pytorch-fid, PyMaxflow) for every later step.
[ -d "$WORK/site" ] && export PYTHONPATH=$PYTHONPATH:$WORK/site
step check "${budgets[1]}" ops_check
step tests "${budgets[2]}" gpu_tests
step ops "${budgets[3]}" bench_ops
step train "${budgets[4]}" train_speed
step amp "${budgets[5]}" amp_runs
left=$((TOTAL - ($(date +%s) - START) - 20))
step models "$left" models "$left"
"$PY" scripts/gpu_check_summary.py "$WORK" "$RESULTS" "$DEVICE" "$(($(date +%s) - START))"
echo "wrote $RESULTS/summary.md"
