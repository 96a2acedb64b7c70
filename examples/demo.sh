#!/usr/bin/env bash
# The gantk demo on built-in data (run by `make demo`). Every step is a plain gantk command, so
# this file doubles as a tour of the command line. Usage: examples/demo.sh [OUT_DIR]
set -euo pipefail
out=${1:-out/demo}
mkdir -p "$out"
step() { printf '\n== %s\n' "$*" >&2; }

step "what this installation can do"
gantk info

step "built-in datasets"
gantk data list

step "a sample grid of each built-in dataset -> $out/previews/"
for name in digits stacked-digits faces textures photos shapes; do
  gantk data preview "builtin:$name" "$out/previews/$name.png" --rows 6 --cols 10 --force --quiet
done
gantk data preview 'builtin:shapes?minority=triangle:0.02' "$out/previews/shapes-minority.png" \
  --rows 6 --cols 10 --force --quiet

step "export 2000 shape scenes as PNG files (one folder per class, attributes.csv)"
gantk data export builtin:shapes "$out/shapes" -n 2000 --resolution 64 --force

step "pack them into one h5 file with labels and attributes, then describe it"
gantk data pack "$out/shapes" "$out/packs/shapes64.h5" --resolution 64 --labels \
  --attributes "$out/shapes/attributes.csv" --force
gantk data info "$out/packs/shapes64.h5"

step "a 2 % minority: how many triangles in builtin:shapes?minority=triangle:0.02 (JSON for pipelines)"
gantk data info 'builtin:shapes?minority=triangle:0.02' --json |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print("triangles:", d["classes"]["triangle"], "of", d["count"])'

step "train a small GAN on shapes for 1 kimg (under a minute on a CPU), then sample from it"
gantk train gan 'builtin:shapes?n=2000' --resolution 32 --kimg 1 --batch-size 16 --z-dim 64 \
  --w-dim 64 --mapping-layers 4 --channel-base 1024 --channel-max 32 --mirror \
  --sample-kimg 0.5 --snapshot-kimg 0.5 --out "$out/gan" --force
gantk generate "$out/gan/latest.safetensors" --grid "$out/gan-grid.png" --rows 4 --cols 8 --force
gantk generate "$out/gan/latest.safetensors" --interpolate 3 --steps 8 --out "$out/gan-walk.gif" --force

step "evaluate it against the data: KID and precision/recall with random features (no weight files
needed; the metric names say so), and SWD, which needs no network"
gantk evaluate all "$out/gan/latest.safetensors" 'builtin:shapes?n=200&resolution=32' -n 200 \
  --metrics kid,pr --features random-inception --kid-subset-size 100 --kid-subsets 20
gantk evaluate swd "$out/gan/latest.safetensors" 'builtin:shapes?n=256&resolution=32' -n 256

step "artificial fingerprints: embed a 100-bit fingerprint into 64 photos (bundled builtin:stego-100),
then decode it from the fingerprinted copies and from the originals"
gantk data export 'builtin:photos?sources=china,flower' "$out/photos" -n 64 --resolution 64 --force --quiet
gantk fingerprint-embed "$out/photos" --bits 100 --seed 42 --out "$out/photos-fp" --force
gantk fingerprint-decode "$out/photos-fp" --expect "$out/photos-fp/fingerprint.json"
gantk fingerprint-decode "$out/photos" --expect "$out/photos-fp/fingerprint.json"

step "how the fingerprint survives JPEG and resizing (plot: $out/fingerprint-robustness.png)"
gantk evaluate robustness "$out/photos-fp" --expect "$out/photos-fp" --perturb jpeg,resize \
  --plot "$out/fingerprint-robustness.png" --force

step "attribution: tell real shapes from the demo GAN at two snapshots (0.5 and 1 kimg); a small
attributor vs the spectral baseline, clean and after JPEG (confusion: $out/attribution/confusion.png)"
a="$out/attribution"
rm -rf "$a/sources" "$a/test"
gantk data export builtin:shapes "$a/sources/real" -n 300 --resolution 32 --flat --quiet
gantk data export builtin:shapes "$a/test/real" -n 100 --resolution 32 --seed 1 --flat --quiet
# The half-way snapshot (the second one written: 0, ~0.5, 1 kimg) and the final generator.
half=$(ls "$out/gan"/snapshot-*.safetensors | sort | sed -n 2p)
for snap in half final; do
  ckpt=$([ "$snap" = half ] && echo "$half" || echo "$out/gan/latest.safetensors")
  gantk generate "$ckpt" -n 300 --out "$a/sources/gan-$snap" --quiet
  gantk generate "$ckpt" -n 100 --seed 5000 --out "$a/test/gan-$snap" --quiet
done
gantk train attributor "$a/sources" --steps 300 --channel-base 256 --out "$a/run" --force
gantk attribute "$a/test" --model "$a/run/latest.safetensors" --eval --attack clean,jpeg \
  --confusion "$a/confusion.png" --out "$a/predictions.csv" --force
gantk attribute "$a/test" --baseline spectral --fit "$a/sources" --eval --attack clean,jpeg

step "scalable fingerprints: a tiny fingerprint-modulated GAN (0.25 kimg), generators for two users
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

step "Inclusive GAN: IMLE reconstruction of a 5 % triangle minority (0.25 kimg), then precision and
recall on the minority alone (random VGG features: no weight files needed)"
gantk train gan 'builtin:shapes?n=500&minority=triangle:0.05' --resolution 16 --kimg 0.25 \
  --batch-size 16 --z-dim 16 --w-dim 32 --mapping-layers 2 --channel-base 512 --channel-max 32 \
  --imle --imle-features pixel --minority builtin --snapshot-kimg 0.25 --sample-kimg 0.25 \
  --out "$out/imle" --force
gantk evaluate pr 'builtin:shapes?n=500&minority=triangle:0.05&resolution=16' \
  "$out/imle/latest.safetensors" --subset triangle -n 200 --features random-vgg16

step "Texture Mixer: with the bundled builtin:texture-mixer, a brick-to-gravel strip, a 4-corner
palette and a dissolve; then a few training steps of a tiny model and the interpolation metrics
against naive alpha-blending (examples/texture_mixer.sh trains for real)"
rm -rf "$out/texture/run"
gantk texture-mix builtin:brick builtin:gravel --length 512 --out "$out/texture/strip.png" --force
gantk texture-mix builtin:brick builtin:grass builtin:moon builtin:ihc --palette --size 384 \
  --out "$out/texture/palette.png" --force
gantk texture-mix builtin:grass builtin:gravel --dissolve --frames 8 --out "$out/texture/dissolve.gif" --force
gantk train texture builtin:textures --resolution 32 --channels 16 --latent-channels 8 \
  --global-dim 8 --d-channels 8 --batch-size 2 --steps 20 --snapshot-every 20 --gram-every 4 \
  --out "$out/texture/run" --quiet
gantk evaluate texture "$out/texture/run/latest.safetensors" builtin:textures --pairs 4

step "done: see $out/previews/*.png, $out/packs/shapes64.h5, $out/gan/samples-*.png, $out/gan-grid.png, $out/photos-fp/, $out/attribution/, $out/scalable-users/, $out/imle/, $out/texture/"
