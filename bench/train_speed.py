"""GAN training speed and peak memory: baseline vs +contrastive vs +SAN vs +reference attention.

Each variant runs in its own process (so peak memory is its own), trains ``--warmup`` steps,
then times ``--steps`` steps; the table gives sec/kimg, peak memory, and the ratio to the
baseline measured in the same run. Regularizers (R1 every 16 D steps, path length every 4 G
steps) are included, so time at least 16 steps for a fair average.

    python bench/train_speed.py --resolution 32 --steps 16            # CPU
    python bench/train_speed.py --resolution 128 --device cuda --channel-base 16384 \
        --z-dim 512 --w-dim 512 --batch-size 32 --amp bf16            # the published config
    ... --ops ref,cuda       # each variant with the reference ops and with the CUDA kernels
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "baseline": {},
    "contrastive": {"loss": "contrastive"},
    "san": {"g_attn": "san@{attn}"},
    "reference": {"d_attn": "reference@{attn}"},
}


def measure(args: argparse.Namespace, variant: str) -> dict:
    import torch

    from gantk.gan.config import TrainConfig
    from gantk.gan.loop import loader
    from gantk.gan.networks import NetworkConfig, count_parameters
    from gantk.gan.trainer import Trainer
    from gantk.io.builtin import load_builtin

    extra = {
        k: v.format(attn=args.attn_res) if isinstance(v, str) else v
        for k, v in VARIANTS[variant].items()
    }
    network = NetworkConfig(
        resolution=args.resolution,
        z_dim=args.z_dim,
        w_dim=args.w_dim,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        g_attn=extra.pop("g_attn", None),
        d_attn=extra.pop("d_attn", None),
    )
    data = load_builtin(
        "builtin:shapes", count=max(256, args.batch_size), resolution=args.resolution
    )
    config = TrainConfig(
        data="builtin:shapes",
        out="/nonexistent",
        network=network,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        **extra,
    )
    trainer = Trainer(config, dataset=data)
    device = torch.device(args.device)
    batches = loader(trainer)

    def step() -> None:
        images, _ = next(batches)
        trainer.train_step(images.to(device).float() / 127.5 - 1)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "variant": variant,
        "ops": os.environ.get("GANTK_OPS", "auto"),
        "sec_per_kimg": seconds / (args.steps * args.batch_size) * 1000,
        "peak_gib": peak,
        "memory": "cuda allocated" if device.type == "cuda" else "process RSS",
        "g_params": count_parameters(trainer.G),
        "d_params": count_parameters(trainer.D),
    }


SHAPE_ARGUMENTS = ("resolution", "batch_size", "steps", "warmup", "z_dim", "w_dim",
                   "channel_base", "channel_max")  # fmt: skip


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The network and step-count options (bench/train_speed_vs_nvidia.py passes them on)."""
    defaults = (32, 16, 16, 2, 64, 64, 2048, 64)
    for name, default in zip(SHAPE_ARGUMENTS, defaults, strict=True):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shape_arguments(parser)
    parser.add_argument(
        "--attn-res", type=int, default=None, help="default: resolution/2 (32 at 64+)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none")
    parser.add_argument(
        "--ops",
        default=os.environ.get("GANTK_OPS", "auto"),
        help="comma-separated GANTK_OPS values to run every variant with, e.g. ref,cuda",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--only", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    if args.attn_res is None:
        args.attn_res = min(32, args.resolution // 2)
    if args.only:
        print(json.dumps(measure(args, args.only)))
        return
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "baseline" not in variants:
        parser.error(f"--variants: need baseline (the ratios' base); unknown: {unknown}")
    rows = []
    for ops_path in args.ops.split(","):
        env = {**os.environ, "GANTK_OPS": ops_path.strip()}
        for variant in variants:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--only", variant]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{'ops':<5} {'variant':<12} {'sec/kimg':>9} {'x base':>7} {'peak GiB':>9} "
        f"{'G params':>9} {'D params':>9}"
    )
    for r in rows:
        # Ratio to the baseline variant run with the same ops path.
        base = next(b for b in rows if b["ops"] == r["ops"] and b["variant"] == "baseline")
        r["ratio"] = r["sec_per_kimg"] / base["sec_per_kimg"]
        print(
            f"{r['ops']:<5} {r['variant']:<12} {r['sec_per_kimg']:>9.2f} {r['ratio']:>7.2f} "
            f"{r['peak_gib']:>9.3f} "
            f"{r['g_params']:>9} {r['d_params']:>9}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": platform.machine(),
        "device": args.device,
        "args": vars(args),
        "rows": rows,
    }
    (args.out / f"train_speed_{args.device.replace(':', '')}_{args.resolution}.json").write_text(
        json.dumps(report, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
