"""Texture Mixer speed: seconds to make a palette (4 corner textures) and a strip, with the
network-only time separated from post-processing, and peak memory, against the naive
alpha-blending baseline in the same run.

    python bench/texture_speed.py                       # builtin:texture-mixer, 1024² palette
    python bench/texture_speed.py --model runs/tex/latest.safetensors --size 2048
    python bench/texture_speed.py --device cuda --size 2048 4096

The paper's testing time (Table 3.1) is 0.5 s per 128x1024 strip on a GPU with its 256-wide
generator; the bundled model is narrower (64), so compare within one table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from gantk.texture.data import load_texture
from gantk.texture.latent import palette_weights
from gantk.texture.mixing import Mixer, palette_placements, restore_placed
from gantk.texture.train import load_texture_mixer

CORNERS = ("builtin:brick", "builtin:grass", "builtin:gravel", "builtin:moon")


def timed(fn, device: str, repeat: int) -> tuple[float, object]:
    result = fn()  # warm-up (allocations, lazy inits)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat, result


def alpha_palette(textures: list[torch.Tensor], size: int) -> torch.Tensor:
    """The baseline: pixel-space tiling and bilinear blending with the same weights."""
    res = textures[0].shape[-1]
    weights = palette_weights(size, size, res)
    reps = -(-size // res)
    canvas = torch.zeros(1, 3, size, size)
    for k, tex in enumerate(textures):
        canvas += tex.repeat(1, 1, reps, reps)[:, :, :size, :size] * weights[k]
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:texture-mixer")
    parser.add_argument("--size", type=int, nargs="+", default=[1024])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    # texture-mix's defaults; the paper's operations are --cover rows --mix blend
    parser.add_argument("--cover", default="patches")
    parser.add_argument("--mix", default="select")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--no-deblock", dest="deblock", action="store_false",
        help="time without the grid removal texture-mix does by default",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_texture_mixer(args.model, args.device)
    mixer = Mixer(
        model, cover=args.cover, mix=args.mix, precision=args.precision, deblock=args.deblock
    )
    res = mixer.resolution
    textures = [load_texture(spec, res)[0] for spec in CORNERS]
    rows = []
    for size in args.size:
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        net_s, canvas = timed(lambda s=size: mixer.palette(textures, s), args.device, args.repeat)
        placed = palette_placements(size, res)
        post_s, _ = timed(
            lambda c=canvas, p=placed: restore_placed(c, textures, p, "graphcut+poisson"),
            args.device,
            1,
        )
        alpha_s, _ = timed(lambda s=size: alpha_palette(textures, s), "cpu", args.repeat)
        strip_s, _ = timed(lambda: mixer.strip(textures[:2], 8 * res), args.device, args.repeat)
        row = {
            "size": size,
            "palette_network_s": round(net_s, 4),
            "palette_postprocess_s": round(post_s, 4),
            "palette_total_s": round(net_s + post_s, 4),
            "alpha_blend_s": round(alpha_s, 4),
            "ratio_vs_alpha": round((net_s + post_s) / alpha_s, 1),
            f"strip_{res}x{8 * res}_s": round(strip_s, 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        if args.device.startswith("cuda"):
            row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        rows.append(row)
        print(json.dumps(row))
    report = {
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "model": args.model,
        "config": model.config.to_dict(),
        "mixer": {
            "cover": args.cover,
            "mix": args.mix,
            "precision": mixer.precision,
            "deblock": args.deblock,
        },
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "texture_speed.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
