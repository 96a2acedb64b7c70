"""The held-out figures of a stego model against the targets of the bundled model (docs/models.md).

    python scripts/stego_heldout.py MODEL FOLDER [--figure PNG] [--json OUT.json] [--curve LOG]

Every image of FOLDER is fingerprinted at its own size with its own random 100-bit code (as
`gantk fingerprint-embed` does: encode at the model's resolution, upsample the residual), rounded
to 8 bits as a saved PNG would be, then scored: PSNR and SSIM against the original; bit accuracy
of the untouched image, after a real JPEG round trip at quality 75 and after downscaling to half
size; the fraction of images detected at a false-positive rate of 1e-6. ``--figure`` writes
original / fingerprinted / 10x difference (around grey) of three images side by side;
``--curve`` appends the summary, with the model's step count, as one line to a JSON-lines file
(the held-out curve of a run: figures against training steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.artificial import to_rgb, to_tensor
from gantk.fingerprint.stego import decode_bits, embed_any_size
from gantk.fingerprint.train_stego import load_stego
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import read_metadata
from gantk.io.images import list_images, load_rgb
from gantk.metrics.image_quality import psnr_db, ssim
from gantk.perturb import jpeg, resize

TARGETS = {"psnr_mean": 33.0, "psnr_min": 30.0, "ssim_mean": 0.97, "acc_clean": 0.99,
           "acc_jpeg75": 0.95, "acc_half": 0.90, "detected_1e-6": 1.0}  # fmt: skip


def evaluate(model: str, folder: Path, seed: int = 0) -> tuple[dict, list[tuple]]:
    encoder, decoder = load_stego(resolve_model_path(model, "stego model", "gantk train stego"))
    n = encoder.config.bits
    rng = np.random.default_rng(seed)
    rows, examples = [], []
    marked_all, jpeg_all, half_all, codes = [], [], [], []
    with torch.no_grad():
        for path in list_images(folder):
            original = load_rgb(path)
            code = rng.integers(0, 2, n, dtype=np.uint8)
            x = to_tensor(original)
            marked = to_rgb(embed_any_size(encoder, x, torch.from_numpy(code[None]).float()))
            t = to_tensor(marked)
            marked_all.append(t)
            jpeg_all.append(jpeg(t, 75))
            half_all.append(resize(t, 0.5))
            codes.append(code)
            rows.append({"image": path.name, "width": original.shape[1],
                         "height": original.shape[0], "psnr": psnr_db(original, marked),
                         "ssim": ssim(original, marked)})  # fmt: skip
            examples.append((original, marked))
    code_arr = np.stack(codes)
    need = fpbits.threshold(n, 1e-6)
    accuracy = {}
    for name, images in (("clean", marked_all), ("jpeg75", jpeg_all), ("half", half_all)):
        matches = (decode_bits(decoder, images) == code_arr).sum(axis=1)
        for row, m in zip(rows, matches, strict=True):
            row[f"acc_{name}"] = float(m) / n
        accuracy[name] = (float(matches.mean()) / n, float((matches >= need).mean()))
    psnrs = np.array([r["psnr"] for r in rows])
    metadata = read_metadata(resolve_model_path(model, "stego model", "gantk train stego"))
    summary = {
        "model": model,
        "steps": int(metadata.get("gantk.total_steps", metadata.get("gantk.steps", "0"))),
        "images": len(rows),
        "sizes_px": [
            min(min(r["width"], r["height"]) for r in rows),
            max(max(r["width"], r["height"]) for r in rows),
        ],
        "psnr_mean": float(psnrs.mean()),
        "psnr_min": float(psnrs.min()),
        "ssim_mean": float(np.mean([r["ssim"] for r in rows])),
        "acc_clean": accuracy["clean"][0],
        "acc_jpeg75": accuracy["jpeg75"][0],
        "acc_half": accuracy["half"][0],
        "detected_1e-6": accuracy["clean"][1],
        "detected_1e-6_jpeg75": accuracy["jpeg75"][1],
        "detected_1e-6_half": accuracy["half"][1],
        "bits_needed_at_1e-6": need,
    }
    return {"summary": summary, "images": rows}, examples


def figure(examples: list[tuple], path: Path, height: int = 256) -> None:
    """Rows of original | fingerprinted | 10x difference around grey, each scaled to ``height``."""
    picks = [examples[i] for i in np.linspace(0, len(examples) - 1, 3).astype(int)]
    rows = []
    for original, marked in picks:
        diff = np.clip(128 + 10 * (marked.astype(np.int16) - original.astype(np.int16)), 0, 255)
        panels = []
        for arr in (original, marked, diff.astype(np.uint8)):
            h, w = arr.shape[:2]
            size = (max(1, round(w * height / h)), height)
            panels.append(np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS)))
        rows.append(np.concatenate([p for panel in panels for p in (panel, _gap(height))], 1))
    width = max(r.shape[1] for r in rows)
    grid = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(grid)).save(path)


def _gap(height: int) -> np.ndarray:
    return np.full((height, 4, 3), 255, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--curve", type=Path)
    args = parser.parse_args()
    report, examples = evaluate(args.model, args.folder)
    s = report["summary"]
    for key, target in TARGETS.items():
        ok = "meets" if s[key] >= target else "below"
        print(f"{key:16s} {s[key]:8.4f}   target >= {target:<6} {ok}")
    print(f"{s['images']} images, {s['sizes_px'][0]}-{s['sizes_px'][1]} px", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.figure:
        figure(examples, args.figure)
    if args.curve:
        with args.curve.open("a") as f:
            f.write(json.dumps(s) + "\n")


if __name__ == "__main__":
    main()
