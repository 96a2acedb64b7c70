"""The held-out figures of a stego model against the targets of the bundled model (docs/models.md).

    python scripts/stego_heldout.py MODEL FOLDER... [--design native|paper] [--strength auto|X]
        [--figure PNG] [--figure-full PNG] [--json OUT.json] [--curve LOG] [--clean N]

Every image of the FOLDERs is fingerprinted at its own size with its own random 100-bit code the
way `gantk fingerprint-embed` does (the native design with --strength auto by default), rounded
to 8 bits as a saved PNG would be, then scored: PSNR, SSIM and mean CIEDE2000 against the
original; bit accuracy and detection at a false-positive rate of 1e-6 untouched, after a real
JPEG round trip at quality 75, after halving the size and after a centre crop to 80 % (each read
the way `gantk fingerprint-decode` reads: on the grid the pilot gives). Figures are given for the
whole set and per size group (short side >= 256 px, 128-255, under 128). ``--clean N`` also
decodes N un-fingerprinted crops of the same images against random fingerprints (false
detections at 1e-6). ``--figure`` writes original / fingerprinted / 10x difference of three
images (``--figure-full``: of four, as full-size centre crops); ``--curve`` appends the
summary, with the model's step count, to a JSON-lines file.
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
from gantk.fingerprint import native
from gantk.fingerprint.artificial import to_rgb, to_tensor
from gantk.fingerprint.stego import decode_bits
from gantk.fingerprint.strength import Embedder
from gantk.fingerprint.train_stego import load_stego
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import read_metadata
from gantk.io.images import list_images, load_rgb
from gantk.metrics.image_quality import delta_e_mean, psnr_db, ssim
from gantk.perturb import center_crop, jpeg, resize

# The targets of issue 31 for photos with a short side of at least 256 px.
TARGETS = {"psnr_mean": 40.0, "psnr_min": 36.0, "ssim_mean": 0.98, "delta_e_max": 1.0,
           "acc_clean": 0.99, "acc_jpeg75": 0.95, "acc_half": 0.95, "acc_crop80": 0.95,
           "detected_1e-6": 1.0}  # fmt: skip
ATTACKS = {
    "clean": lambda t: t,
    "jpeg75": lambda t: jpeg(t, 75),
    "half": lambda t: resize(t, 0.5),
    "crop80": lambda t: center_crop(t, 0.8),
}
GROUPS = {"all": (0, 10**9), ">=256": (256, 10**9), "128-255": (128, 255), "<128": (0, 127)}


def read(decoder, images: list[torch.Tensor], design: str) -> np.ndarray:
    if design == "native":
        return native.decode_bits(decoder, images)[0]
    return decode_bits(decoder, images)


def evaluate(model: str, folders: list[Path], design: str = "native",
             strength: float | None = None, seed: int = 0, clean_count: int = 0,
             min_psnr: float | None = 33.0) -> tuple[dict, list[tuple]]:  # fmt: skip
    path = resolve_model_path(model, "stego model", "gantk train stego")
    encoder, decoder = load_stego(path)
    if design == "paper" and strength is None:
        strength = 1.0
    embedder = Embedder(encoder, decoder, design, strength, min_psnr)
    n = encoder.config.bits
    rng = np.random.default_rng(seed)
    rows, examples, attacked, codes = [], [], {name: [] for name in ATTACKS}, []
    with torch.no_grad():
        for path_image in [p for folder in folders for p in list_images(folder)]:
            original = load_rgb(path_image)
            code = rng.integers(0, 2, n, dtype=np.uint8)
            done = embedder.embed(to_tensor(original), torch.from_numpy(code[None]).float())
            marked = to_rgb(done.image)
            t = to_tensor(marked)
            for name, attack in ATTACKS.items():
                attacked[name].append(attack(t))
            codes.append(code)
            rows.append({"image": path_image.name, "width": original.shape[1],
                         "height": original.shape[0], "strength": done.strength,
                         "flagged": bool(done.flagged), "psnr": psnr_db(original, marked),
                         "ssim": ssim(original, marked),
                         "delta_e": delta_e_mean(original, marked)})  # fmt: skip
            examples.append((original, marked))
    code_arr = np.stack(codes)
    need = fpbits.threshold(n, 1e-6)
    for name, images in attacked.items():
        matches = (read(decoder, images, design) == code_arr).sum(axis=1)
        for row, m in zip(rows, matches, strict=True):
            row[f"acc_{name}"] = float(m) / n
            row[f"detected_{name}"] = bool(m >= need)
    summary = {"model": model, "design": design,
               "strength": "auto" if strength is None else strength, "min_psnr": min_psnr,
               "steps": int(read_metadata(path).get("gantk.total_steps",
                                                    read_metadata(path).get("gantk.steps", "0"))),
               "budget_db": encoder.config.budget_db, "bits_needed_at_1e-6": need}  # fmt: skip
    for group, (low, high) in GROUPS.items():
        chosen = [r for r in rows if low <= min(r["width"], r["height"]) <= high]
        if chosen:
            summary[group] = summarize(chosen)
    if clean_count:
        summary["false_detections_1e-6"] = false_detections(decoder, folders, clean_count, design,
                                                             need, seed)  # fmt: skip
    return {"summary": summary, "images": rows}, examples


def summarize(rows: list[dict]) -> dict:
    psnrs = np.array([r["psnr"] for r in rows])
    out = {"images": len(rows), "psnr_mean": float(psnrs.mean()), "psnr_min": float(psnrs.min()),
           "ssim_mean": float(np.mean([r["ssim"] for r in rows])),
           "delta_e_mean": float(np.mean([r["delta_e"] for r in rows])),
           "delta_e_max": float(np.max([r["delta_e"] for r in rows])),
           "strength_mean": float(np.mean([r["strength"] for r in rows])),
           "flagged": int(sum(r["flagged"] for r in rows))}  # fmt: skip
    for name in ATTACKS:
        out[f"acc_{name}"] = float(np.mean([r[f"acc_{name}"] for r in rows]))
        out[f"detected_{name}"] = float(np.mean([r[f"detected_{name}"] for r in rows]))
    out["detected_1e-6"] = out["detected_clean"]
    return out


def false_detections(decoder, folders: list[Path], count: int, design: str, need: int,
                     seed: int) -> dict:  # fmt: skip
    """Un-fingerprinted random crops (at least one tile) decoded against random fingerprints."""
    rng = np.random.default_rng(seed + 1)
    paths = [p for folder in folders for p in list_images(folder)]
    images = []
    for i in range(count):
        arr = load_rgb(paths[i % len(paths)])
        h, w = arr.shape[:2]
        side_h = int(rng.integers(min(h, 64), h + 1))
        side_w = int(rng.integers(min(w, 64), w + 1))
        y, x = int(rng.integers(0, h - side_h + 1)), int(rng.integers(0, w - side_w + 1))
        images.append(to_tensor(arr[y : y + side_h, x : x + side_w]))
    decoded = read(decoder, images, design)
    codes = rng.integers(0, 2, decoded.shape, dtype=np.uint8)
    matches = (decoded == codes).sum(axis=1)
    return {"images": count, "detected": int((matches >= need).sum()),
            "max_matches": int(matches.max())}  # fmt: skip


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


def figure_full(examples: list[tuple], path: Path, count: int = 4, side: int = 384) -> None:
    """Rows of original | fingerprinted | 10x difference around grey for ``count`` images spread
    over the set, each a centre crop of ``side`` px at full size (no resampling: what a viewer
    sees on screen)."""
    picks = [examples[i] for i in np.linspace(0, len(examples) - 1, count).astype(int)]
    rows = []
    for original, marked in picks:
        h, w = original.shape[:2]
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        a = original[top : top + side, left : left + side]
        b = marked[top : top + side, left : left + side]
        diff = np.clip(128 + 10 * (b.astype(np.int16) - a.astype(np.int16)), 0, 255)
        panels = [a, b, diff.astype(np.uint8)]
        row = np.concatenate([p for panel in panels for p in (panel, _gap(panel.shape[0]))], 1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    grid = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(grid)).save(path, optimize=True)


def _gap(height: int) -> np.ndarray:
    return np.full((height, 4, 3), 255, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--design", default="native", choices=["native", "paper"])
    parser.add_argument("--strength", default="auto")
    parser.add_argument("--min-psnr", type=float, default=33.0)
    parser.add_argument("--clean", type=int, default=0)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--figure-full", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--curve", type=Path)
    # Steps of earlier sessions, added to the model's own count (a run continued from a WIP).
    parser.add_argument("--step-offset", type=int, default=0)
    args = parser.parse_args()
    strength = None if args.strength == "auto" else float(args.strength)
    report, examples = evaluate(args.model, args.folders, args.design, strength,
                                clean_count=args.clean, min_psnr=args.min_psnr)  # fmt: skip
    s = report["summary"]
    s["steps"] += args.step_offset
    for group in GROUPS:
        if group not in s:
            continue
        g = s[group]
        print(f"[{group}] {g['images']} images: PSNR {g['psnr_mean']:.2f} / {g['psnr_min']:.2f}  "
              f"SSIM {g['ssim_mean']:.4f}  dE {g['delta_e_mean']:.2f} / {g['delta_e_max']:.2f}  "
              f"strength {g['strength_mean']:.2f}  flagged {g['flagged']}  |  acc clean "
              f"{g['acc_clean']:.3f} jpeg75 {g['acc_jpeg75']:.3f} half {g['acc_half']:.3f} "
              f"crop80 {g['acc_crop80']:.3f}  detected {g['detected_clean']:.2f} / "
              f"{g['detected_jpeg75']:.2f} / {g['detected_half']:.2f} / "
              f"{g['detected_crop80']:.2f}")  # fmt: skip
    if ">=256" in s:
        for key, target in TARGETS.items():
            value = s[">=256"][key]
            ok = value <= target if key == "delta_e_max" else value >= target
            print(f"  {key:16s} {value:8.4f}   target {'<=' if key == 'delta_e_max' else '>='} "
                  f"{target:<6} {'meets' if ok else 'below'}")  # fmt: skip
    if "false_detections_1e-6" in s:
        print("false detections at 1e-6:", s["false_detections_1e-6"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.figure:
        figure(examples, args.figure)
    if args.figure_full:
        figure_full(examples, args.figure_full)
    if args.curve:
        with args.curve.open("a") as f:
            f.write(json.dumps(s) + "\n")
    print(f"{sum(g['images'] for k, g in s.items() if k == 'all')} images", file=sys.stderr)


if __name__ == "__main__":
    main()
