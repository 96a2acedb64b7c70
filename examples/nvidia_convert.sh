#!/usr/bin/env bash
# An NVIDIA StyleGAN2-ADA model in gantk: convert the network pickle (read as data, never run),
# draw NVIDIA's seeds 0-7 as a grid, and check the converted generator against the reference
# outputs when the pickle comes with them (the fixtures in ../shared/fixtures/stylegan2-ada do).
#
#   examples/nvidia_convert.sh MODEL.pkl [OUT]        # default OUT: out/nvidia
set -euo pipefail
model=${1:?usage: examples/nvidia_convert.sh MODEL.pkl [OUT]}
out=${2:-out/nvidia}
mkdir -p "$out"
name=$(basename "$model" .pkl)
gantk convert "$model" --out "$out/$name.safetensors" --discriminator "$out/$name-D.safetensors" --force
gantk generate "$out/$name.safetensors" --seeds 0-7 --grid "$out/$name-seeds0-7.png" --rows 1 --cols 8 --force
reference="${model%.pkl}-reference.npz"
if [ -f "$reference" ]; then
  python3 - "$out/$name.safetensors" "$reference" <<'PY'
import sys
import numpy as np
import torch
from gantk.gan.generate import latents_for, load_generator
G = load_generator(sys.argv[1])
ref = np.load(sys.argv[2])
z = latents_for([int(s) for s in ref["seeds"]], G)
with torch.no_grad():
    for psi in (1.0, 0.7):
        err = np.abs(G(z, psi=psi, noise_mode="const").numpy() - ref[f"img_psi{psi}"]).max()
        print(f"psi {psi}: largest difference from NVIDIA's own output {err:.2e}")
print("latents equal NVIDIA's:", bool(np.array_equal(z.numpy(), ref["z"])))
PY
fi
