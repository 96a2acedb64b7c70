#!/usr/bin/env bash
# The gantk demo on built-in data (run by `make demo`). Every step is a plain gantk command, so
# this file doubles as a tour of the command line. Usage: examples/demo.sh [OUT_DIR]
#
# Each step is timed; the end prints a table of seconds per step against
# examples/demo-budget.tsv (the measured time of each step with some margin, the whole under
# five minutes on two idle cores) and writes it to OUT_DIR/timings.tsv. A step over its budget
# is flagged, never failed: the table is a report, tests/test_demo_budget.py keeps the steps and
# the budget file in step.
#
# DEMO_FULL=1 (`make demo-full`) runs the same steps at the sizes of earlier versions of this
# demo: a GAN of 1 kimg, metrics on 200 images, 300 attributor steps, minority precision/recall
# with VGG-16 features, 20 Texture Mixer steps scored on 4 pairs (499 s measured on the 2-core VM).
set -euo pipefail
out=${1:-out/demo}
if [ "${DEMO_FULL:-0}" = 1 ]; then
  kimg=1 half_kimg=0.5 eval_n=200 kid_subset=100 attr_steps=300 pr_n=200 pr_features=random-vgg16
  tex_steps=20 tex_pairs=4
else
  kimg=0.5 half_kimg=0.25 eval_n=32 kid_subset=16 attr_steps=120 pr_n=64
  pr_features=random-inception tex_steps=10 tex_pairs=3
fi
mkdir -p "$out"
budget_file="$(dirname "$0")/demo-budget.tsv"
timings="$out/timings.tsv"
printf 'step\tseconds\n' >"$timings"
current="" started=0
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }  # bash 5: microseconds since the epoch
finish_step() {
  [ -n "$current" ] || return 0
  local us=$(($(now_us) - started))
  printf '%s\t%d.%d\n' "$current" $((us / 1000000)) $((us % 1000000 / 100000)) >>"$timings"
}
# step KEY "what it shows": KEY names the step in the timing table and the budget file.
step() {
  finish_step
  current=$1 started=$(now_us)
  shift
  printf '\n== [%s] %s\n' "$current" "$*" >&2
}
report() {
  finish_step
  python3 - "$timings" "$budget_file" "${DEMO_FULL:-0}" <<'PYEOF' >&2
import csv, sys
spent = {r["step"]: float(r["seconds"]) for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
budget = {r["step"]: float(r["seconds"]) for r in csv.DictReader(open(sys.argv[2]), delimiter="\t")}
if sys.argv[3] == "1":  # the budget is the short demo's: nothing to compare the full one with
    budget = {key: float("inf") for key in spent}
print(f"\n{'step':<14}{'seconds':>9}{'budget':>9}")
for key, seconds in spent.items():
    flag = "  over budget" if seconds > budget.get(key, 0) else ""
    print(f"{key:<14}{seconds:>9.1f}{budget.get(key, float('nan')):>9.0f}{flag}")
total, allowed = sum(spent.values()), sum(budget.values())
print(f"{'total':<14}{total:>9.1f}{allowed:>9.0f}{'  over budget' if total > allowed else ''}")
PYEOF
}

# together F G ...: run the named shell functions side by side (each gantk command spends most
# of its few seconds starting Python and torch, on one core), then show their outputs in order.
together() {
  local logs=() pids=() name i status=0
  for name in "$@"; do
    logs+=("$(mktemp)")
    "$name" >"${logs[-1]}" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
    cat "${logs[$i]}"
    rm -f "${logs[$i]}"
  done
  return "$status"
}

step info "what this installation can do"
gantk info

step datasets "built-in datasets"
gantk data list

step previews "sample grids of five built-in datasets (gantk data preview builtin:NAME) -> $out/previews/"
# Two at a time: each command spends most of its few seconds starting Python and torch.
for name in digits faces textures photos 'shapes?minority=triangle:0.02'; do
  echo "$name"
done | xargs -P 2 -I{} sh -c 'gantk data preview "builtin:$1" "$2/previews/$(echo "$1" |
  sed "s/?minority=.*/-minority/").png" --rows 6 --cols 10 --force --quiet' _ {} "$out"

step export "export 2000 shape scenes as PNG files (one folder per class, attributes.csv)"
gantk data export builtin:shapes "$out/shapes" -n 2000 --resolution 64 --force

step pack "pack them into one h5 file with labels and attributes, then describe it"
gantk data pack "$out/shapes" "$out/packs/shapes64.h5" --resolution 64 --labels \
  --attributes "$out/shapes/attributes.csv" --force
gantk data info "$out/packs/shapes64.h5"

step minority "a 2 % minority: how many triangles in builtin:shapes?minority=triangle:0.02 (JSON for pipelines)"
gantk data info 'builtin:shapes?minority=triangle:0.02' --json |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print("triangles:", d["classes"]["triangle"], "of", d["count"])'

step gan "train a small GAN on shapes for $kimg kimg, then sample from it"
gantk train gan 'builtin:shapes?n=2000' --resolution 32 --kimg "$kimg" --batch-size 16 --z-dim 64 \
  --w-dim 64 --mapping-layers 4 --channel-base 1024 --channel-max 32 --mirror \
  --sample-kimg "$half_kimg" --snapshot-kimg "$half_kimg" --out "$out/gan" --force
gan_grid() {
  gantk generate "$out/gan/latest.safetensors" --grid "$out/gan-grid.png" --rows 4 --cols 8 --force
}
gan_walk() {
  gantk generate "$out/gan/latest.safetensors" --interpolate 3 --steps 8 --out "$out/gan-walk.gif" \
    --force
}
together gan_grid gan_walk

step evaluate "evaluate it against the data: KID and precision/recall with random features (no weight files
needed; the metric names say so), and SWD, which needs no network"
evaluate_kid_pr() {
  gantk evaluate all "$out/gan/latest.safetensors" "builtin:shapes?n=$eval_n&resolution=32" \
    -n "$eval_n" --metrics kid,pr --features random-inception --kid-subset-size "$kid_subset" \
    --kid-subsets 20
}
evaluate_swd() {
  gantk evaluate swd "$out/gan/latest.safetensors" 'builtin:shapes?n=256&resolution=32' -n 256
}
together evaluate_kid_pr evaluate_swd

step workflow "training workflow: a class-conditional GAN on digits with adaptive augmentation (ADA) and
micro-batches, its report picture (losses, ADA p, samples; $out/workflow-report.png) and a grid of sevens"
gantk train gan 'builtin:digits?n=200' --resolution 16 --kimg 0.064 --batch-size 16 --batch-gpu 8 \
  --cond --aug ada --aug-p 0.2 --ada-kimg 1 --z-dim 32 --w-dim 32 --mapping-layers 2 \
  --channel-base 256 --channel-max 32 --tick-kimg 0.016 --sample-kimg 0.032 --snapshot-kimg 0.032 \
  --out "$out/workflow" --force --quiet
workflow_report() { gantk train report "$out/workflow" --out "$out/workflow-report.png" --force; }
workflow_sevens() {
  gantk generate "$out/workflow/latest.safetensors" --class 7 --grid "$out/workflow-sevens.png" \
    --rows 2 --cols 4 --force
}
together workflow_report workflow_sevens

step nvidia "NVIDIA StyleGAN2-ADA models: convert a network pickle made with NVIDIA's code (read as data,
never run) and draw its seeds 0-7 as NVIDIA's generate.py would (examples/nvidia_convert.sh also
compares with NVIDIA's own outputs)"
nvidia_fixture=$(dirname "$0")/../../shared/fixtures/stylegan2-ada/sg2ada-tiny-32.pkl
if [ -f "$nvidia_fixture" ]; then
  gantk convert "$nvidia_fixture" --out "$out/nvidia/tiny.safetensors" --force
  gantk generate "$out/nvidia/tiny.safetensors" --seeds 0-7 --grid "$out/nvidia/seeds0-7.png" \
    --rows 1 --cols 8 --force
else
  echo "(no NVIDIA fixture beside this checkout: examples/nvidia_convert.sh MODEL.pkl converts yours)"
fi

step fingerprints "artificial fingerprints: embed a 100-bit fingerprint into 64 photos (bundled builtin:stego-100),
then decode it from the fingerprinted copies and from the originals"
gantk data export 'builtin:photos?sources=china,flower' "$out/photos" -n 64 --resolution 64 --force --quiet
gantk fingerprint-embed "$out/photos" --bits 100 --seed 42 --out "$out/photos-fp" --force
gantk fingerprint-decode "$out/photos-fp" --expect "$out/photos-fp/fingerprint.json"
gantk fingerprint-decode "$out/photos" --expect "$out/photos-fp/fingerprint.json"

step robustness "how the fingerprint survives JPEG and resizing (plot: $out/fingerprint-robustness.png)"
gantk evaluate robustness "$out/photos-fp" --expect "$out/photos-fp" --perturb jpeg,resize \
  --plot "$out/fingerprint-robustness.png" --force

step attribution "attribution: tell real shapes from the demo GAN at two snapshots (half-way and final); a small
attributor vs the spectral baseline, clean and after JPEG (confusion: $out/attribution/confusion.png)"
a="$out/attribution"
rm -rf "$a/sources" "$a/test"
# 400 images per source in one command each, the three side by side (each spends most of its
# time starting Python and torch); images 300-399 become the test set.
split_off_test() { mkdir -p "$a/test/$1" && mv "$a/sources/$1"/*0003[0-9][0-9].png "$a/test/$1/"; }
gantk data export builtin:shapes "$a/sources/real" -n 400 --resolution 32 --flat --quiet &
makers=($!)
# The half-way snapshot (the second one written: 0, half, all kimg) and the final generator.
half=$(ls "$out/gan"/snapshot-*.safetensors | sort | sed -n 2p)
for snap in half final; do
  ckpt=$([ "$snap" = half ] && echo "$half" || echo "$out/gan/latest.safetensors")
  gantk generate "$ckpt" -n 400 --out "$a/sources/gan-$snap" --quiet &
  makers+=($!)
done
for pid in "${makers[@]}"; do wait "$pid"; done  # each wait fails (set -e) if its command did
for source in real gan-half gan-final; do split_off_test "$source"; done
gantk train attributor "$a/sources" --steps "$attr_steps" --channel-base 256 --out "$a/run" --force
gantk attribute "$a/test" --model "$a/run/latest.safetensors" --eval --attack clean,jpeg \
  --confusion "$a/confusion.png" --out "$a/predictions.csv" --force
gantk attribute "$a/test" --baseline spectral --fit "$a/sources" --eval --attack clean,jpeg

step scalable "scalable fingerprints: a tiny fingerprint-modulated GAN (0.25 kimg), generators for two users
and the secret registry; a 0.25-kimg decoder still reads random bits, so it rightly names nobody
(examples/scalable_fingerprints.sh trains one that does)"
rm -rf "$out/scalable-users" "$out/registry.h5"
gantk train gan 'builtin:shapes?n=500' --resolution 16 --kimg 0.25 --batch-size 16 --z-dim 8 \
  --w-dim 32 --mapping-layers 2 --channel-base 512 --channel-max 32 --fingerprint-bits 16 \
  --snapshot-kimg 0.25 --sample-kimg 0.25 --out "$out/scalable" --force --quiet
gantk fingerprint-embed "$out/scalable/latest.safetensors" --users alice,bob \
  --registry "$out/registry.h5" --out "$out/scalable-users"
gantk generate "$out/scalable-users/alice.safetensors" -n 16 --out "$out/alice-fakes" --force --quiet
gantk fingerprint-decode "$out/alice-fakes" --decoder "$out/scalable/latest.safetensors" \
  --registry "$out/registry.h5" --fpr 1e-2

step inclusive "Inclusive GAN: IMLE reconstruction of a 5 % triangle minority (0.25 kimg), then precision and
recall on the minority alone (random-weight features: no weight files needed)"
gantk train gan 'builtin:shapes?n=500&minority=triangle:0.05' --resolution 16 --kimg 0.25 \
  --batch-size 16 --z-dim 16 --w-dim 32 --mapping-layers 2 --channel-base 512 --channel-max 32 \
  --imle --imle-features pixel --minority builtin --snapshot-kimg 0.25 --sample-kimg 0.25 \
  --out "$out/imle" --force
gantk evaluate pr 'builtin:shapes?n=500&minority=triangle:0.05&resolution=16' \
  "$out/imle/latest.safetensors" --subset triangle -n "$pr_n" --features "$pr_features"

step texture "Texture Mixer: with the bundled builtin:texture-mixer, a brick-to-gravel strip, a 4-corner
palette and a dissolve; then a few training steps of a tiny model and the interpolation metrics
against naive alpha-blending (examples/texture_mixer.sh trains for real)"
rm -rf "$out/texture/run"
gantk texture-mix builtin:brick builtin:gravel --length 512 --out "$out/texture/strip.png" --force
gantk texture-mix builtin:brick builtin:grass builtin:moon builtin:ihc --palette --size 384 \
  --out "$out/texture/palette.png" --force
gantk texture-mix builtin:grass builtin:gravel --dissolve --frames 8 --out "$out/texture/dissolve.gif" --force
gantk train texture builtin:textures --resolution 32 --channels 16 --latent-channels 8 \
  --global-dim 8 --d-channels 8 --batch-size 2 --steps "$tex_steps" --snapshot-every "$tex_steps" --gram-every 4 \
  --out "$out/texture/run" --quiet
gantk evaluate texture "$out/texture/run/latest.safetensors" builtin:textures --pairs "$tex_pairs"

report
printf '\n== done: see %s\n' "$out/previews/*.png, $out/packs/shapes64.h5, $out/gan/samples-*.png, \
$out/gan-grid.png, $out/photos-fp/, $out/attribution/, $out/scalable-users/, $out/imle/, \
$out/texture/; step times in $timings" >&2
