"""Fingerprint embedding and decoding throughput (images/s), end to end and network only.

End to end runs the commands' library functions on a folder of PNGs (decode, embed, encode
PNG, write, PSNR/SSIM for embedding); network only times the encoder and decoder on batches
already in memory, which is the ceiling a faster input pipeline could reach.

    python bench/fingerprint_speed.py --count 256 --resolution 64 [--model run/stego.safetensors]
    python bench/fingerprint_speed.py --device cuda --count 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gantk.fingerprint.artificial import decode_report, embed_folder, resolve_model
from gantk.fingerprint.stego import decode_any_size, embed_any_size
from gantk.fingerprint.train_stego import load_stego
from gantk.io.builtin import load_builtin
from gantk.io.export import export_images
from gantk.io.images import list_images


def network_rate(encoder, decoder, resolution: int, batch: int, device: str, repeat: int) -> dict:
    x = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    bits = torch.randint(0, 2, (batch, encoder.config.bits), device=device).float()
    rates = {}
    for name, fn in (
        ("embed", lambda: embed_any_size(encoder, x, bits)),
        ("decode", lambda: decode_any_size(decoder, x)),
    ):
        with torch.no_grad():
            fn()  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        rates[name] = batch * repeat / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=64, help="size of the test images")
    parser.add_argument("--model", default="builtin:stego-100")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()

    model = resolve_model(args.model)
    encoder, decoder = load_stego(model, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = load_builtin("builtin:photos", count=args.count, resolution=args.resolution)
        export_images(data, tmp / "clean")
        code = np.random.default_rng(0).integers(0, 2, encoder.config.bits, dtype=np.uint8)
        start = time.perf_counter()
        embed_folder(tmp / "clean", tmp / "marked", encoder, model, code)
        embed_rate = args.count / (time.perf_counter() - start)
        paths = list_images(tmp / "marked")
        start = time.perf_counter()
        decode_report(tmp / "marked", paths, decoder, code, 1e-6)
        decode_rate = args.count / (time.perf_counter() - start)
    nets = network_rate(encoder, decoder, args.resolution, args.batch, args.device, args.repeat)
    report = {
        "machine": platform.machine(),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "model": str(model),
        "model_resolution": encoder.config.resolution,
        "image_resolution": args.resolution,
        "count": args.count,
        "end_to_end_images_per_s": {"embed": embed_rate, "decode": decode_rate},
        "network_images_per_s": nets,
    }
    print(f"{'':<10} {'end to end img/s':>17} {'network img/s':>14}")
    for name, rate in report["end_to_end_images_per_s"].items():
        print(f"{name:<10} {rate:>17.1f} {nets[name]:>14.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fingerprint_speed_{args.device.replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
