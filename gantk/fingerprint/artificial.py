"""Artificial fingerprints: embed a fingerprint into every image of a dataset, decode it later.

The model owner fingerprints the training data with :func:`embed_folder`; any generative model
trained on it reproduces the fingerprint, so :func:`decode_images` on its outputs finds it.

Embedding keeps each image's size. The default design (``native``,
:mod:`gantk.fingerprint.native`) makes the residual on the image's own pixels, tile by tile of the
model's resolution, shaped by a just-noticeable-difference map, at a strength found per image
(:mod:`gantk.fingerprint.strength`); decoding pools the logits of every tile. The paper's design
(``paper``) encodes a copy at the model's resolution and upsamples the residual
(:func:`gantk.fingerprint.stego.embed_any_size`). Each image keeps
its mode and bit depth: grayscale stays grayscale (the fingerprint is embedded in RGB and the
result converted back), alpha channels are kept untouched, 16-bit grayscale stays 16-bit (the
fingerprint's change, made on the top 8 bits, is added to the 16-bit values, so the low bits
survive). Palette images are written as RGB (or RGBA) and 1-bit ones as 8-bit grayscale: neither
can hold a fingerprint's small changes. CMYK, floating-point and 32-bit images are refused.

Unreadable files (corrupt, truncated, decompression bombs) are skipped with a warning naming
them and listed in the record, or stop the command with ``strict``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.fingerprint import native
from gantk.fingerprint.stego import DESIGNS, StegoDecoder, StegoEncoder, decode_bits
from gantk.fingerprint.strength import Embedder
from gantk.io.atomic import atomic_dir, check_output
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import file_sha256
from gantk.io.images import UnreadableImage, list_images, open_image
from gantk.metrics.image_quality import delta_e_mean, psnr_db, ssim

RECORD = "fingerprint.json"
PER_IMAGE_MAP = "fingerprints.csv"
QUALITY_MAP = "embedding.csv"  # per image: strength, PSNR, SSIM, CIEDE2000, flag
MIN_SIDE = 16
EMBED_BATCH = 32  # images loaded, embedded and written per step
FORMATS = {"png": ".png", "jpeg": ".jpg"}


def resolve_model(spec: str | Path | None) -> Path:
    """A stego model file: a path, or ``builtin:stego-100`` (the default, shipped with gantk)."""
    return resolve_model_path(
        str(spec or "builtin:stego-100"), "stego model", "gantk train stego (stego.safetensors)"
    )


# ----------------------------------------------------------------------------------------------
# Reading images with their mode


@dataclass
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 uint8: what the encoder and the decoder see
    mode: str  # the mode the fingerprinted copy is saved in: RGB, RGBA, L, LA or I;16
    alpha: np.ndarray | None
    deep: np.ndarray | None = None  # an I;16 image's 16-bit values


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
Warn = Callable[[str], None]


def _gray(img: Image.Image) -> np.ndarray:
    return np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)


def load_image(path: Path) -> LoadedImage:
    """Read an image for embedding or decoding; raises UnreadableImage if it cannot be decoded,
    GantkError for a mode whose pixels cannot carry a fingerprint and come back unchanged."""
    with open_image(path) as img:
        img.load()
        mode = img.mode
        if mode in SIXTEEN_BIT or mode == "I":
            deep = np.asarray(img, dtype=np.int64)
            if mode == "I" and (deep.min(initial=0) < 0 or deep.max(initial=0) > 65535):
                raise GantkError(
                    f"{path} holds 32-bit integer pixels; convert it to 8- or 16-bit first"
                )
            gray = np.clip(np.round(deep / 257.0), 0, 255).astype(np.uint8)
            return LoadedImage(np.repeat(gray[..., None], 3, axis=2), "I;16", None, deep)
        if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = np.asarray(img.convert("RGBA"))
            return LoadedImage(np.ascontiguousarray(rgba[..., :3]), "RGBA", rgba[..., 3])
        if mode == "LA":
            la = np.asarray(img)
            return LoadedImage(_gray(img.convert("L")), "LA", np.ascontiguousarray(la[..., 1]))
        if mode in ("L", "1"):
            return LoadedImage(_gray(img), "L", None)
        if mode in ("RGB", "P"):
            return LoadedImage(np.asarray(img.convert("RGB")), "RGB", None)
    raise GantkError(
        f"{path} is a {mode} image; fingerprint-embed keeps each image's mode and cannot for "
        "this one: convert it to RGB (or 8/16-bit grayscale) first"
    )


def load_or_stop(path: Path) -> LoadedImage:
    """load_image for measurements, which a skipped image would bias: stop, naming the file."""
    try:
        return load_image(path)
    except UnreadableImage as exc:
        raise GantkError(f"cannot read image {exc}; remove or replace it") from exc


def load_readable(
    paths: list[Path], root: Path | None, skipped: list[str], strict: bool, warn: Warn | None
) -> dict[Path, LoadedImage]:
    """The images of ``paths`` that decode; each one that does not is warned about (by its path
    relative to ``root``) and added to ``skipped``, or stops everything with ``strict``."""
    loaded = {}
    for path in paths:
        try:
            loaded[path] = load_image(path)
        except UnreadableImage as exc:
            if strict:
                raise GantkError(
                    f"cannot read image {exc}; remove or replace it (or drop --strict to skip it)"
                ) from exc
            name = path.name if root is None or path == root else path.relative_to(root).as_posix()
            if warn is not None:
                warn(f"skipping unreadable image {name}")
            skipped.append(name)
    return loaded


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_rgb(t: torch.Tensor) -> np.ndarray:
    return ((t[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def restore_mode(rgb: np.ndarray, loaded: LoadedImage) -> Image.Image:
    img = Image.fromarray(rgb, "RGB")
    if loaded.mode == "I;16":
        # The fingerprint's change in 8-bit steps, scaled to 16 bits and added to the original.
        change = np.asarray(img.convert("L"), dtype=np.int64) - loaded.rgb[..., 0]
        deep = np.clip(loaded.deep + change * 257, 0, 65535).astype(np.uint16)
        return Image.fromarray(deep)  # mode I;16
    if loaded.mode in ("L", "LA"):
        img = img.convert("L")
    if loaded.mode in ("RGBA", "LA"):
        img.putalpha(Image.fromarray(loaded.alpha, "L"))
    return img


def check_size(path: Path, rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise GantkError(
            f"{path} is {width}x{height}; fingerprints need images of at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels (remove it or upscale it first)"
        )


# ----------------------------------------------------------------------------------------------
# Embedding


@dataclass
class EmbedResult:
    record: dict
    count: int


def embed_folder(
    source: Path,
    out: Path,
    encoder: StegoEncoder,
    encoder_path: Path,
    fingerprint: np.ndarray | None,
    per_image_seed: int | None = None,
    image_format: str = "png",
    jpeg_quality: int = 95,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
    strict: bool = False,
    warn: Warn | None = None,
    decoder: StegoDecoder | None = None,
    design: str = "native",
    strength: float | None = None,
    min_psnr: float | None = None,
) -> EmbedResult:
    """Fingerprint every image under ``source`` into ``out`` (same relative paths).

    One fingerprint for all images, or, with ``per_image_seed``, a fresh random fingerprint per
    image listed in ``fingerprints.csv``. ``strength`` None is auto (needs ``decoder``), else a
    fixed strength; ``min_psnr`` caps auto's strength. Writes ``fingerprint.json`` describing
    the embedding (with the unreadable files skipped and the flagged ones named) and
    ``embedding.csv`` (strength, PSNR, SSIM and CIEDE2000 of every image). Nothing is written
    unless every other image succeeds.
    """
    if design not in DESIGNS:
        raise GantkError(f"--design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if strength is None and decoder is None:
        raise GantkError("--strength auto needs the decoder of the stego model")
    if image_format not in FORMATS:
        raise GantkError(f"--format must be one of {', '.join(FORMATS)}, got {image_format!r}")
    if not 1 <= jpeg_quality <= 100:
        raise GantkError(f"--quality must be in 1..100, got {jpeg_quality}")
    existing = out / RECORD
    if existing.is_file() and fingerprint is not None and per_image_seed is None:
        previous = json.loads(existing.read_text())
        if previous.get("fingerprint") != fpbits.to_hex(fingerprint):
            raise GantkError(
                f"{out} already holds images with fingerprint {previous.get('fingerprint')}; "
                "use another --out (mixing fingerprints in one folder breaks attribution)"
            )
    check_output(out, force, inputs=[source])
    paths = list_images(source)
    if not paths:
        raise GantkError(f"{source} contains no images (png, jpg, jpeg, webp, bmp, tif)")
    bits_count = encoder.config.bits
    embedder = Embedder(encoder, decoder, design, strength, min_psnr)  # type: ignore[arg-type]
    quality: list[dict] = []
    rows, skipped, flagged = [], [], []
    device = next(encoder.parameters()).device
    writers = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    pending: list = []

    def collect(jobs: list) -> None:
        for job, relative, code, embedded in jobs:
            psnr, similarity, delta_e = job.result()
            quality.append(
                {"image": str(relative), "strength": embedded.strength, "psnr_db": psnr,
                 "ssim": similarity, "delta_e": delta_e, "flagged": embedded.flagged or ""}
            )  # fmt: skip
            if embedded.flagged:
                flagged.append(str(relative))
                if warn is not None:
                    warn(
                        f"{relative}: fingerprinted at strength {embedded.strength:.3g} "
                        f"({psnr:.1f} dB), weaker than auto wanted: it {embedded.flagged}"
                    )
            if per_image_seed is not None:
                rows.append([str(relative), fpbits.to_hex(code)])
            if advance:
                advance(1)

    # Writers stop (finishing their jobs) before atomic_dir publishes or removes the folder.
    with atomic_dir(out, force) as tmp, writers, torch.no_grad():
        for start in range(0, len(paths), EMBED_BATCH):
            batch = paths[start : start + EMBED_BATCH]
            readable = load_readable(batch, source, skipped, strict, warn)
            if advance:
                advance(len(batch) - len(readable))
            chunk = [(i, p) for i, p in enumerate(batch, start) if p in readable]
            loaded = {index: readable[path] for index, path in chunk}
            for index, path in chunk:
                check_size(path, loaded[index].rgb)
            codes = {
                index: fpbits.random_bits(bits_count, per_image_seed + index)
                if per_image_seed is not None
                else fingerprint
                for index, _ in chunk
            }
            embedded = {
                index: embedder.embed(
                    to_tensor(loaded[index].rgb).to(device),
                    torch.from_numpy(codes[index][None].astype(np.float32)).to(device),
                )
                for index, _ in chunk
            }
            relatives = {index: path.relative_to(source).with_suffix(FORMATS[image_format])
                         for index, path in chunk}  # fmt: skip
            # Encoding PNG/JPEG and measuring SSIM release the GIL: writer threads do it for
            # this batch while the next one is read and embedded; one batch is in flight.
            collect(pending)
            pending = [
                (writers.submit(_write_and_measure, to_rgb(embedded[index].image.cpu()),
                                loaded[index], tmp / relatives[index], image_format, jpeg_quality),
                 relatives[index], codes[index], embedded[index])
                for index, _ in chunk
            ]  # fmt: skip
        collect(pending)
        if not quality:
            raise GantkError(f"{source} holds no readable images; nothing was written")
        column = {key: [q[key] for q in quality] for key in ("strength", "psnr_db", "ssim",
                                                                "delta_e")}  # fmt: skip
        record = {
            "bits": bits_count,
            "fingerprint": None if per_image_seed is not None else fpbits.to_hex(fingerprint),
            "per_image": per_image_seed is not None,
            "map": PER_IMAGE_MAP if per_image_seed is not None else None,
            "encoder": {
                "file": str(encoder_path),
                "sha256": file_sha256(encoder_path),
                "resolution": encoder.config.resolution,
                "budget_db": encoder.config.budget_db,
            },
            "design": design,
            "strength": {
                "mode": "auto" if strength is None else "fixed",
                "min_psnr_db": min_psnr,
                **_stats(column["strength"]),
            },
            "images": len(quality),
            "skipped": skipped,
            "flagged": flagged,
            "format": image_format,
            "jpeg_quality": jpeg_quality if image_format == "jpeg" else None,
            "psnr_db": _stats(column["psnr_db"]),
            "ssim": _stats(column["ssim"]),
            "delta_e2000": _stats(column["delta_e"]),
            "quality_map": QUALITY_MAP,
        }
        with (tmp / QUALITY_MAP).open("w", newline="") as f:
            writer = csv.DictWriter(f, list(quality[0]))
            writer.writeheader()
            for row in sorted(quality, key=lambda q: q["image"]):
                writer.writerow({k: f"{v:.5g}" if isinstance(v, float) else v
                                 for k, v in row.items()})  # fmt: skip
        if per_image_seed is not None:
            with (tmp / PER_IMAGE_MAP).open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["image", "fingerprint"])
                writer.writerows(rows)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return EmbedResult(record, len(paths))


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit image as the 8-bit grayscale the decoder sees (Pillow's convert clips instead)."""
    if image.mode != "I;16":
        return image
    deep = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(deep / 257.0), 0, 255).astype(np.uint8), "L")


def _write(
    rgb: np.ndarray, loaded: LoadedImage, target: Path, image_format: str, quality: int
) -> np.ndarray:
    """Save in the input's mode; returns the RGB pixels as saved (what PSNR/SSIM must see)."""
    image = restore_mode(rgb, loaded)
    target.parent.mkdir(parents=True, exist_ok=True)
    if image_format == "jpeg":  # 8 bits and no alpha: the format the user asked for
        flat = _eight_bit(image)
        flat.convert("L" if flat.mode in ("L", "LA") else "RGB").save(target, quality=quality)
        return np.asarray(Image.open(target).convert("RGB"))
    # zlib level 3 instead of Pillow's 6: half the encoding time (3.6 vs 6.9 ms for a 128 px
    # photo) for files ~7 % larger; the pixels are the same either way.
    image.save(target, compress_level=3)
    # PNG is lossless: the saved pixels are the image's own.
    return np.asarray(_eight_bit(image).convert("RGB"))


def _write_and_measure(
    rgb: np.ndarray, loaded: LoadedImage, target: Path, image_format: str, quality: int
) -> tuple[float, float, float]:
    """Write one fingerprinted image; PSNR, SSIM and mean CIEDE2000 of what was saved against
    the original."""
    saved = _write(rgb, loaded, target, image_format, quality)
    return psnr_db(loaded.rgb, saved), ssim(loaded.rgb, saved), delta_e_mean(loaded.rgb, saved)


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return {"mean": None, "min": None, "max": None}
    return {
        "mean": float(np.mean(finite)),
        "min": float(np.min(finite)),
        "max": float(np.max(finite)),
    }


# ----------------------------------------------------------------------------------------------
# Decoding


def iter_decoded(
    paths: list[Path],
    decoder: StegoDecoder,
    batch: int = 64,
    root: Path | None = None,
    skipped: list[str] | None = None,
    strict: bool = True,
    warn: Warn | None = None,
    design: str = "native",
) -> Iterator[tuple[Path, np.ndarray, dict]]:
    """(path, decoded 0/1 bits, how it was read) per image, images of any size: with the
    native design, pooled over the tiles of the grid the pilot gives; with the paper's, resized
    to the decoder's resolution. Unreadable files stop it (``strict``) or are skipped into
    ``skipped`` with a warning."""
    skipped = [] if skipped is None else skipped
    for start in range(0, len(paths), batch):
        readable = load_readable(paths[start : start + batch], root, skipped, strict, warn)
        for path, loaded in readable.items():
            check_size(path, loaded.rgb)
        images = [to_tensor(loaded.rgb) for loaded in readable.values()]
        if design == "native":
            decoded, readings = native.decode_bits(decoder, images)
            how = [{"tiles": r.tiles, "scale": r.grid.scale, "offset": list(r.grid.offset),
                    "pilot_z": round(r.grid.z, 2)} for r in readings]  # fmt: skip
        else:
            decoded, how = decode_bits(decoder, images, batch), [{} for _ in images]
        yield from zip(readable, decoded, how, strict=True)


def read_expectation(
    text: str | Path, bits: int, resolution: int
) -> tuple[np.ndarray | dict[str, np.ndarray], dict]:
    """``--expect``: a ``fingerprint.json`` record (its fingerprint, or its per-image map) or a
    fingerprint string. Returns the expected bits and the record (empty for a string)."""
    path = Path(str(text)).expanduser()
    if path.is_dir():
        path = path / RECORD
    if path.suffix == ".json" or path.is_file():
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise GantkError(f"fingerprint record {path} does not exist") from None
        except json.JSONDecodeError:
            raise GantkError(f"{path} is not a fingerprint record (not JSON)") from None
        if record.get("bits") != bits:
            raise GantkError(
                f"{path} records {record.get('bits')}-bit fingerprints but the decoder reads "
                f"{bits} bits; use the decoder that matches the encoder of the record"
            )
        made_at = (record.get("encoder") or {}).get("resolution")
        if made_at is not None and made_at != resolution:
            raise GantkError(
                f"{path} was made by an encoder working at {made_at}x{made_at} but this decoder "
                f"works at {resolution}x{resolution}; use the decoder trained with that encoder"
            )
        if record.get("per_image"):
            mapping = path.parent / (record.get("map") or PER_IMAGE_MAP)
            with mapping.open() as f:
                expected = {
                    row["image"]: fpbits.parse(row["fingerprint"], bits)
                    for row in csv.DictReader(f)
                }
            return expected, record
        return fpbits.parse(record["fingerprint"], bits), record
    return fpbits.parse(str(text), bits), {}


def decode_report(
    root: Path,
    paths: list[Path],
    decoder: StegoDecoder,
    expected: np.ndarray | dict[str, np.ndarray] | None,
    fpr: float,
    registry: list[dict] | None = None,
    advance: Callable[[int], None] | None = None,
    identify: Callable[[np.ndarray], list[dict]] | None = None,
    strict: bool = False,
    warn: Warn | None = None,
    design: str = "native",
) -> dict:
    """Decode every image; with ``expected``, test each against it and pool the folder.

    ``identify`` (scalable fingerprints) maps decoded fingerprints to registered users: each
    image gets its ``user`` and the folder the user of its majority-vote fingerprint.

    Per image: decoded bits, matches, bit accuracy, p-value and verdict (matches >= the
    threshold for ``fpr``). Folder: the majority-vote fingerprint and one test for the whole
    set (:func:`gantk.fingerprint.bits.folder_test`), whose p-value gives the verdict.
    """
    bits = decoder.config.bits
    limit = fpbits.threshold(bits, fpr)
    rows, decoded_all, targets, skipped = [], [], [], []
    found = iter_decoded(paths, decoder, 64, root, skipped, strict, warn, design)
    for path, decoded, how in found:
        name = str(path.relative_to(root)) if path != root else path.name
        row: dict = {"image": name, "decoded": fpbits.to_hex(decoded), **how}
        target = expected_for(expected, name)
        if target is not None:
            matches = int((decoded == target).sum())
            targets.append((decoded, target))
            row.update(
                matches=matches,
                bit_accuracy=matches / bits,
                p_value=float(fpbits.p_value(matches, bits)),
                fingerprinted=matches >= limit,
            )
        if registry:
            row["closest"] = fpbits.closest(decoded, registry)
        rows.append(row)
        decoded_all.append(decoded)
        if advance:
            advance(1)
    if advance and skipped:
        advance(len(skipped))
    if not rows:
        raise GantkError(f"none of the {len(paths)} images could be read; nothing to decode")
    pooled = fpbits.majority(np.stack(decoded_all))
    summary: dict = {
        "images": len(rows),
        "skipped": skipped,
        "design": design,
        "bits": bits,
        "fpr": fpr,
        "threshold_matches": limit,
        "majority": fpbits.to_hex(pooled),
    }
    if targets:
        test = fpbits.folder_test(
            np.stack([d for d, _ in targets]), np.stack([t for _, t in targets])
        )
        summary["detected"] = sum(bool(r.get("fingerprinted")) for r in rows)
        summary["mean_bit_accuracy"] = float(
            np.mean([r["bit_accuracy"] for r in rows if "matches" in r])
        )
        summary["folder_test"] = test
        summary["folder_p_value"] = test["p_value"]
        summary["verdict"] = "fingerprinted" if test["p_value"] <= fpr else "not detected"
    if registry:
        summary["closest"] = fpbits.closest(pooled, registry)
    if identify is not None:
        for row, found in zip(rows, identify(np.stack(decoded_all)), strict=True):
            row["user"] = found
        verified = [r["user"]["name"] for r in rows if r["user"]["verified"]]
        summary["users"] = {name: verified.count(name) for name in sorted(set(verified))}
        summary["no_match"] = len(rows) - len(verified)
        summary["user"] = identify(pooled[None])[0]
    return {"summary": summary, "images": rows}


def expected_for(expected, name: str) -> np.ndarray | None:
    if expected is None or isinstance(expected, np.ndarray):
        return expected
    # Per-image maps name the embedded files; decoded copies may have another extension.
    stem = str(Path(name).with_suffix(""))
    for key, value in expected.items():
        if key == name or str(Path(key).with_suffix("")) == stem:
            return value
    return None
