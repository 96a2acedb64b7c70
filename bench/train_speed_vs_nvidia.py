"""GAN training speed: gantk's train step against NVIDIA's stylegan2-ada-pytorch, same shapes.

NVIDIA's side is its own code from a checkout given by --nvidia: training/networks.py's
Generator and Discriminator, training/loss.py's StyleGAN2Loss and the phase loop of
training/training_loop.py (G main every step, path length every 4, D main, R1 every 16, lazy
regularisation's Adam settings, EMA with ramp-up), without augmentation. On a CPU its custom ops
fall back to their reference implementations, so gantk runs with GANTK_OPS=ref too. gantk's
side is bench/train_speed.py's baseline (config E: skip G, resnet D). Both train the same
network sizes on the same built-in images; each measurement is its own process (peak memory is
its own); the two alternate --repeat times and the medians are compared.

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada
    python bench/train_speed_vs_nvidia.py --nvidia /tmp/sg2ada --resolution 32 --steps 16
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_speed import SHAPE_ARGUMENTS, add_shape_arguments  # noqa: E402  (the sibling script)


def measure_nvidia(args: argparse.Namespace) -> dict:
    """sec/kimg of NVIDIA's phase loop (one process)."""
    sys.path.insert(0, str(args.nvidia))
    # dnnlib imports requests for downloads only; an empty module stands in where it is absent.
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    import numpy as np
    import torch
    from torch_utils import misc
    from training.loss import StyleGAN2Loss
    from training.networks import Discriminator, Generator

    from gantk.io.builtin import load_builtin

    torch.manual_seed(0)
    device = torch.device("cpu")
    synthesis = {"channel_base": args.channel_base, "channel_max": args.channel_max,
                 "num_fp16_res": 0, "conv_clamp": None}  # fmt: skip
    G = Generator(z_dim=args.z_dim, c_dim=0, w_dim=args.w_dim, img_resolution=args.resolution,
                  img_channels=3, mapping_kwargs={"num_layers": 8},
                  synthesis_kwargs=synthesis).train().requires_grad_(False)  # fmt: skip
    D = Discriminator(c_dim=0, img_resolution=args.resolution, img_channels=3,
                      architecture="resnet", channel_base=args.channel_base,
                      channel_max=args.channel_max, num_fp16_res=0, conv_clamp=None,
                      epilogue_kwargs={"mbstd_group_size": 4})  # fmt: skip
    D = D.train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    loss = StyleGAN2Loss(device, G.mapping, G.synthesis, D, r1_gamma=args.r1_gamma)
    phases = []
    for name, module, interval in (("G", G, 4), ("D", D, 16)):
        ratio = interval / (interval + 1)  # lazy regularisation, as training_loop.py
        opt = torch.optim.Adam(module.parameters(), lr=0.002 * ratio,
                               betas=(0.0, 0.99**ratio), eps=1e-8)  # fmt: skip
        phases += [(f"{name}main", module, opt, 1), (f"{name}reg", module, opt, interval)]
    data = load_builtin("builtin:shapes", count=max(256, args.batch_size),
                        resolution=args.resolution)  # fmt: skip
    images = torch.stack([data[i][0] for i in range(len(data))]).float() / 127.5 - 1
    rng = np.random.default_rng(0)

    def step(batch_idx: int) -> None:
        real = images[rng.integers(0, len(images), args.batch_size)]
        c = torch.zeros(args.batch_size, 0)
        for name, module, opt, interval in phases:
            if batch_idx % interval != 0:
                continue
            z = torch.randn(args.batch_size, G.z_dim)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c,
                                      sync=True, gain=interval)  # fmt: skip
            module.requires_grad_(False)
            for param in module.parameters():
                if param.grad is not None:
                    misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            opt.step()
        ema_nimg = min(10 * 1000, (batch_idx + 1) * args.batch_size * 0.05)
        beta = 0.5 ** (args.batch_size / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                b_ema.copy_(b)

    for i in range(args.warmup):
        step(i)
    start = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    seconds = time.perf_counter() - start
    return {
        "tool": "stylegan2-ada-pytorch",
        "sec_per_kimg": seconds / (args.steps * args.batch_size) * 1000,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "g_params": sum(p.numel() for p in G.parameters()),
        "d_params": sum(p.numel() for p in D.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nvidia", type=Path, required=True, help="stylegan2-ada-pytorch checkout")
    add_shape_arguments(parser)
    parser.add_argument("--r1-gamma", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-nvidia", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    if args.only_nvidia:
        print(json.dumps(measure_nvidia(args)))
        return
    if not (args.nvidia / "training" / "loss.py").is_file():
        sys.exit(f"{args.nvidia} is not a checkout of stylegan2-ada-pytorch")
    shapes = [part for name in SHAPE_ARGUMENTS
              for part in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]  # fmt: skip
    commands = {
        "gantk": [sys.executable, str(HERE / "train_speed.py"), *shapes, "--only", "baseline"],
        "stylegan2-ada-pytorch": [
            sys.executable,
            __file__,
            *shapes,
            "--nvidia",
            str(args.nvidia),
            "--r1-gamma",
            str(args.r1_gamma),
            "--only-nvidia",
        ],
    }
    env = {**os.environ, "GANTK_OPS": "ref"}
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "shapes": vars(args) | {"nvidia": str(args.nvidia), "out": str(args.out)},
    }
    for name, rows in runs.items():
        result[name] = {
            "sec_per_kimg": round(statistics.median(r["sec_per_kimg"] for r in rows), 2),
            "runs": [round(r["sec_per_kimg"], 2) for r in rows],
            "peak_gib": round(max(r["peak_gib"] for r in rows), 3),
            "g_params": rows[0]["g_params"],
            "d_params": rows[0]["d_params"],
        }
    result["time_ratio"] = round(
        result["gantk"]["sec_per_kimg"] / result["stylegan2-ada-pytorch"]["sec_per_kimg"], 3
    )
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"train_speed_vs_nvidia_{args.resolution}.json").write_text(
        json.dumps(result, indent=2)
    )


if __name__ == "__main__":
    main()
