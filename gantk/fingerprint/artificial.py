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
result converted back), alpha channels are kept untouched, 16-bit grayscale and 16-bit colour
PNGs stay 16-bit (the fingerprint's change, made on the top 8 bits, is added to the 16-bit
values, so the low bits survive). Pixels are embedded as shown: turned upright by their EXIF
orientation (a phone photo does not come back sideways). Palette images are written as RGB
(or RGBA) and 1-bit ones as 8-bit grayscale: neither can hold a fingerprint's small changes.
CMYK, floating-point, 32-bit and animated images are refused.

Unreadable files (corrupt, truncated, decompression bombs) are skipped with a warning naming
them and listed in the record, or stop the command with ``strict``.

Bigger than one process (gantk.nn.distributed): under torchrun the processes embed contiguous
parts of the sorted file list into one temporary folder and rank 0 writes the record of them
all; with a shard (``--shard K/N``) a command embeds part K into a folder of its own, whose
record says which part it is, and :func:`merge_parts` assembles the N folders into the one a
single run writes (same images, same record).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.fingerprint import native
from gantk.fingerprint.stego import DESIGNS, StegoDecoder, StegoEncoder, decode_bits
from gantk.fingerprint.strength import Embedder
from gantk.io.atomic import atomic_dir, check_output
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import file_sha256
from gantk.io.images import (
    UnreadableImage,
    exif_orientation,
    is_deep_color_png,
    list_images,
    open_image,
    read_deep_png,
    save_deep_png,
    upright,
)
from gantk.metrics.image_quality import delta_e_mean, psnr_db, ssim
from gantk.nn.distributed import Dist, Shard, check_parts, work_range

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
    # the mode the fingerprinted copy is saved in: RGB, RGBA, L, LA, I;16, or RGB;16 / RGBA;16
    # (16-bit colour PNGs, which Pillow cannot hold)
    mode: str
    alpha: np.ndarray | None
    deep: np.ndarray | None = None  # the 16-bit values of an I;16, RGB;16 or RGBA;16 image


@dataclass
class DeepColor:
    """A fingerprinted 16-bit colour image: uint16 (H, W, 3|4), written by save_deep_png."""

    pixels: np.ndarray


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
Warn = Callable[[str], None]


def _gray(img: Image.Image) -> np.ndarray:
    return np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)


def _eight_of(deep: np.ndarray) -> np.ndarray:
    """16-bit values as the 8-bit ones the networks see (the top 8 bits, rounded)."""
    return np.clip(np.round(deep / 257.0), 0, 255).astype(np.uint8)


def load_image(path: Path) -> LoadedImage:
    """Read an image for embedding or decoding; raises UnreadableImage if it cannot be decoded,
    GantkError for a mode whose pixels cannot carry a fingerprint and come back unchanged, and
    for an animated image (which one frame would not stand for).

    The pixels are turned upright as the EXIF orientation says (a phone photo stored sideways
    is embedded, decoded and written as it is shown, without the tag); 16-bit colour PNGs keep
    their 16 bits (read by libpng: Pillow decodes them to 8)."""
    with open_image(path) as img:
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            raise GantkError(
                f"{path} is an animated image ({frames} frames); a fingerprint in one frame "
                "would not stand for the others: save the frame you want as a still image"
            )
        orientation = exif_orientation(img)
        if is_deep_color_png(img):
            deep = upright(read_deep_png(path), orientation)
            mode = "RGBA;16" if deep.shape[2] == 4 else "RGB;16"
            return LoadedImage(_eight_of(deep[..., :3]), mode, None, deep)
        img.load()
        img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode in SIXTEEN_BIT or mode == "I":
            deep = np.asarray(img, dtype=np.int64)
            if mode == "I" and (deep.min(initial=0) < 0 or deep.max(initial=0) > 65535):
                raise GantkError(
                    f"{path} holds 32-bit integer pixels; convert it to 8- or 16-bit first"
                )
            return LoadedImage(np.repeat(_eight_of(deep)[..., None], 3, axis=2), "I;16", None, deep)
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


def restore_mode(rgb: np.ndarray, loaded: LoadedImage) -> Image.Image | DeepColor:
    if loaded.mode in ("RGB;16", "RGBA;16"):
        # As for I;16: the change in 8-bit steps, scaled to 16 bits, added to the original
        # colour channels (alpha untouched), so the low bits survive.
        assert loaded.deep is not None
        change = rgb.astype(np.int64) - loaded.rgb
        deep = loaded.deep.astype(np.int64)
        deep[..., :3] = np.clip(deep[..., :3] + change * 257, 0, 65535)
        return DeepColor(deep.astype(np.uint16))
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
    precision: str = "auto",
    shard: Shard = Shard(),
    dist: Dist | None = None,
) -> EmbedResult:
    """Fingerprint every image under ``source`` into ``out`` (same relative paths).

    One fingerprint for all images, or, with ``per_image_seed``, a fresh random fingerprint per
    image listed in ``fingerprints.csv``. ``strength`` None is auto (needs ``decoder``), else a
    fixed strength; ``min_psnr`` caps auto's strength. Writes ``fingerprint.json`` describing
    the embedding (with the unreadable files skipped and the flagged ones named) and
    ``embedding.csv`` (strength, PSNR, SSIM and CIEDE2000 of every image). Nothing is written
    unless every other image succeeds.

    ``shard``: only that part of the sorted images, into a part folder for :func:`merge_parts`
    (its record says which part; its embedding.csv keeps the embedding order and every digit).
    ``dist``: this process's place in a torchrun job, which embeds its share into rank 0's
    temporary folder; rank 0 writes the record.
    """
    dist = dist or Dist()
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
        previous = read_record(existing)
        if previous.get("fingerprint") != fpbits.to_hex(fingerprint):
            raise GantkError(
                f"{out} already holds images with fingerprint {previous.get('fingerprint')}; "
                "use another --out (mixing fingerprints in one folder breaks attribution)"
            )
    check_output(out, force, inputs=[source])
    paths = list_images(source)
    if not paths:
        raise GantkError(f"{source} contains no images (png, jpg, jpeg, webp, bmp, tif)")
    mine = work_range(len(paths), shard, dist)  # this process's images
    bits_count = encoder.config.bits
    embedder = Embedder(encoder, decoder, design, strength, min_psnr, precision)  # type: ignore[arg-type]
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

    # Writers stop (finishing their jobs) before atomic_dir publishes or removes the folder;
    # under torchrun rank 0 makes the folder and every process writes its share into it.
    folder = atomic_dir(out, force) if dist.main else contextlib.nullcontext(None)
    with folder as made, writers, torch.no_grad():
        tmp = dist.broadcast(made)
        failed: Exception | None = None
        try:
            for start in range(mine.start, mine.stop, EMBED_BATCH):
                batch = paths[start : min(start + EMBED_BATCH, mine.stop)]
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
                                    loaded[index], tmp / relatives[index], image_format,
                                    jpeg_quality),
                     relatives[index], codes[index], embedded[index])
                    for index, _ in chunk
                ]  # fmt: skip
            collect(pending)
        except Exception as exc:  # every process stops alike, with the one error
            failed = exc
        dist.all_succeed(failed)
        # Shares in rank order are the files in order: joined, they are one process's lists.
        shares = dist.gather((quality, rows, skipped, flagged))
        quality, rows, skipped, flagged = ([x for share in shares for x in share[i]]
                                           for i in range(4))  # fmt: skip
        if not quality and shard.whole:
            raise GantkError(f"{source} holds no readable images; nothing was written")
        settings = {
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
            "strength": {"mode": "auto" if strength is None else "fixed", "min_psnr_db": min_psnr},
            "format": image_format,
            "jpeg_quality": jpeg_quality if image_format == "jpeg" else None,
        }
        record = embedding_record(settings, quality, skipped, flagged)
        if not shard.whole:
            ours = shard.part(range(len(paths)))
            record["part"] = {"shard": str(shard), "images": [ours.start, ours.stop],
                              "of": len(paths), "source": str(source)}  # fmt: skip
        failed = None
        try:
            if dist.main:
                _write_record(tmp, record, quality, rows, exact=not shard.whole)
        except Exception as exc:  # a full disk: every process fails with rank 0
            failed = exc
        dist.all_succeed(failed)
    dist.barrier()  # the folder is published when any process returns
    return EmbedResult(record, len(paths))


QUALITY_COLUMNS = ["image", "strength", "psnr_db", "ssim", "delta_e", "flagged"]
# What a record says of how it was embedded (not of its images); the parts of one sharded
# embedding share them all (the encoder by its content: its file may sit elsewhere per machine).
SETTINGS = ("bits", "fingerprint", "per_image", "map", "encoder", "design", "strength", "format",
            "jpeg_quality")  # fmt: skip


def embedding_record(
    settings: dict, quality: list[dict], skipped: list[str], flagged: list[str]
) -> dict:
    """The record of an embedding: its ``settings`` (:data:`SETTINGS`) and the figures of its
    images, ``quality`` rows in the order they were embedded."""
    column = {key: [q[key] for q in quality] for key in ("strength", "psnr_db", "ssim",
                                                            "delta_e")}  # fmt: skip
    head = ("bits", "fingerprint", "per_image", "map", "encoder", "design")
    return {
        **{key: settings[key] for key in head},
        "strength": {**settings["strength"], **_stats(column["strength"])},
        "images": len(quality),
        "skipped": skipped,
        "flagged": flagged,
        "format": settings["format"],
        "jpeg_quality": settings["jpeg_quality"],
        "psnr_db": _stats(column["psnr_db"]),
        "ssim": _stats(column["ssim"]),
        "delta_e2000": _stats(column["delta_e"]),
        "quality_map": QUALITY_MAP,
    }


def _write_record(
    folder: Path, record: dict, quality: list[dict], rows: list[list[str]], exact: bool
) -> None:
    """The record, embedding.csv and (per-image fingerprints) fingerprints.csv into ``folder``.
    ``exact`` (a part of a sharded embedding): embedding.csv in the order of embedding and
    with every digit, for :func:`merge_parts` to rebuild the whole record from."""
    with (folder / QUALITY_MAP).open("w", newline="") as f:
        writer = csv.DictWriter(f, QUALITY_COLUMNS)
        writer.writeheader()

        def text(value: object) -> object:  # every digit for the merge, or five to read
            if not isinstance(value, float):
                return value
            return repr(float(value)) if exact else f"{value:.5g}"

        for row in quality if exact else sorted(quality, key=lambda q: q["image"]):
            writer.writerow({k: text(v) for k, v in row.items()})
    if record["per_image"]:
        with (folder / PER_IMAGE_MAP).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "fingerprint"])
            writer.writerows(rows)
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


PART_HINT = "give the folders `gantk fingerprint-embed --shard K/N` wrote, one per shard"


def _part_of(folder: Path) -> tuple[dict, tuple[int, int, int]]:
    """The record of a part folder and its images (first, stop, of all)."""
    if not folder.is_dir():
        raise GantkError(f"{folder} is not a folder; {PART_HINT}")
    if not (folder / RECORD).is_file():
        raise GantkError(f"{folder} holds no {RECORD}, so it is no part folder; {PART_HINT}")
    record = read_record(folder / RECORD)
    part = record.get("part")
    try:
        first, stop = (int(v) for v in part["images"])  # type: ignore[index]
        total = int(part["of"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        raise GantkError(
            f"{folder} holds a whole embedding, not a part of one; {PART_HINT}"
        ) from None
    if not 0 <= first <= stop <= total:
        raise GantkError(f"{folder}: its images {first}..{stop} are no part of {total}")
    missing = [key for key in SETTINGS if key not in record]
    if missing:
        raise GantkError(f"{folder / RECORD} has no {missing[0]}; {PART_HINT}")
    return record, (first, stop, total)


def _settings(record: dict) -> dict:
    """A record's settings, the encoder by its content and the strength without figures."""
    settings = {key: record[key] for key in SETTINGS}
    encoder = dict(record["encoder"] or {})
    encoder.pop("file", None)
    settings["encoder"] = encoder
    strength = record["strength"] or {}
    settings["strength"] = {k: strength.get(k) for k in ("mode", "min_psnr_db")}
    return settings


def _part_rows(folder: Path, record: dict) -> tuple[list[dict], list[list[str]]]:
    """A part's quality rows (every digit, in embedding order) and its per-image map rows."""
    from gantk.io.files import read_csv

    fix = f"keep the part folder as fingerprint-embed --shard wrote it; {PART_HINT}"
    rows = read_csv(folder / QUALITY_MAP, "embedding table", fix=fix)
    if not rows or rows[0][1] != QUALITY_COLUMNS:
        raise GantkError(f"{folder / QUALITY_MAP} is not the table of a part; {fix}")
    quality = []
    for line, row in rows[1:]:
        try:
            values = dict(zip(QUALITY_COLUMNS, row, strict=True))
            for key in ("strength", "psnr_db", "ssim", "delta_e"):
                values[key] = float(values[key])
        except ValueError:
            raise GantkError(f"{folder / QUALITY_MAP} line {line} is damaged; {fix}") from None
        if not (folder / values["image"]).is_file():
            raise GantkError(f"{folder} lacks {values['image']}, which its table lists; {fix}")
        quality.append(values)
    if len(quality) != record["images"]:
        raise GantkError(f"{folder / QUALITY_MAP} lists {len(quality)} images, its record "
                         f"{record['images']}; {fix}")  # fmt: skip
    mapping = []
    if record["per_image"]:
        found = read_csv(folder / PER_IMAGE_MAP, "per-image map", fix=fix)
        mapping = [row for _, row in found[1:]]
    return quality, mapping


def merge_parts(parts: list[Path], out: Path, force: bool = False) -> dict:
    """The folder one ``fingerprint-embed`` run writes, from the N part folders of a sharded
    one: every part's images (hard-linked where the file system allows, else copied) and one
    record, equal to the single run's. The parts must be of one embedding (the same
    fingerprint, encoder and settings) and cover the images exactly once; the part folders
    are left as they are."""
    if not parts:
        raise GantkError(f"give the part folders to merge; {PART_HINT}")
    check_output(out, force, inputs=parts)
    found = [(folder, *_part_of(folder)) for folder in parts]
    first_folder, first_record, (_, _, total) = found[0]
    settings = _settings(first_record)
    for folder, record, (_, _, of) in found[1:]:
        other = _settings(record)
        if other["fingerprint"] != settings["fingerprint"]:
            ours, theirs = (f"fingerprint {r['fingerprint']}" if r["fingerprint"] else
                            "one fingerprint per image" for r in (other, settings))  # fmt: skip
            raise GantkError(
                f"{folder} holds {ours}, {first_folder} {theirs}: parts of different "
                "embeddings (mixing fingerprints breaks attribution); merge the parts of one job"
            )
        differ = [key for key in SETTINGS if other[key] != settings[key]]
        if differ or of != total:
            what = differ[0] if differ else "number of images in the source"
            raise GantkError(
                f"{folder} was embedded with another {what} than {first_folder}; merge the "
                "parts of one job (the same encoder, options and source)"
            )
    check_parts([(str(f), first, stop) for f, _, (first, stop, _) in found], total, "parts")
    found.sort(key=lambda item: item[2][0])  # the order of the files, as one run embeds them
    quality, mapping, skipped, flagged = [], [], [], []
    with atomic_dir(out, force) as tmp:
        for folder, record, _ in found:
            rows, per_image = _part_rows(folder, record)
            for row in rows:
                target = tmp / row["image"]
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(folder / row["image"], target)
                except OSError:  # another file system, or one without hard links
                    shutil.copy2(folder / row["image"], target)
            quality += rows
            mapping += per_image
            skipped += record["skipped"]
            flagged += record["flagged"]
        if not quality:
            raise GantkError("the parts hold no fingerprinted images; nothing was written")
        record = embedding_record(
            {**first_record, "strength": settings["strength"]}, quality, skipped, flagged
        )
        _write_record(tmp, record, quality, mapping, exact=False)
    return record


def _eight_bit(image: Image.Image | DeepColor) -> Image.Image:
    """A 16-bit image as the 8-bit one the decoder sees (Pillow's convert clips instead)."""
    if isinstance(image, DeepColor):
        pixels = _eight_of(image.pixels)
        return Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    if image.mode != "I;16":
        return image
    return Image.fromarray(_eight_of(np.asarray(image, dtype=np.float64)), "L")


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
    if isinstance(image, DeepColor):
        save_deep_png(image.pixels, target, level=3)
    else:
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
    precision: str = "auto",
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
            decoded, readings = native.decode_bits(decoder, images, precision)
            how = [{"tiles": r.tiles, "scale": r.grid.scale, "offset": list(r.grid.offset),
                    "pilot_z": round(r.grid.z, 2)} for r in readings]  # fmt: skip
        else:
            decoded, how = decode_bits(decoder, images, batch), [{} for _ in images]
        yield from zip(readable, decoded, how, strict=True)


RECORD_HINT = "give the fingerprint.json that `gantk fingerprint-embed` wrote"


def _record_error(path: Path, why: str) -> GantkError:
    return GantkError(f"{path} is not a fingerprint record ({why}); {RECORD_HINT}")


def read_record(path: Path) -> dict:
    """A ``fingerprint.json`` record, checked field by field: an object whose ``bits`` is a
    whole number in 1..4096, with either a ``fingerprint`` of those bits or ``per_image`` and
    the plain file name of its ``map``; ``encoder`` an object (its ``resolution`` a whole
    number) and ``design`` text, where present."""
    from gantk.io.files import describe, read_json

    record = read_json(path, "fingerprint record", 16 * 2**20)
    if not isinstance(record, dict):
        raise _record_error(path, f"a JSON {type(record).__name__}, not an object")
    bits = record.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= fpbits.MAX_BITS:
        raise _record_error(path, f"bits is {describe(bits)}")
    if not isinstance(record.get("per_image", False), bool):
        raise _record_error(path, f"per_image is {describe(record['per_image'])}")
    if record.get("per_image"):
        name = record.get("map") or PER_IMAGE_MAP
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise _record_error(path, f"map is {describe(name)}, not a file name")
    elif "fingerprint" not in record:
        raise _record_error(path, "no 'fingerprint' and not per_image")
    elif not isinstance(record["fingerprint"], str):
        raise _record_error(path, f"fingerprint is {describe(record['fingerprint'])}")
    encoder = record.get("encoder")
    if encoder is not None and not isinstance(encoder, dict):
        raise _record_error(path, f"encoder is {describe(encoder)}, not an object")
    made_at = (encoder or {}).get("resolution")
    if made_at is not None and (isinstance(made_at, bool) or not isinstance(made_at, int)):
        raise _record_error(path, f"encoder.resolution is {describe(made_at)}")
    if not isinstance(record.get("design", ""), str):
        raise _record_error(path, f"design is {describe(record['design'])}")
    return record


def read_per_image_map(record_path: Path, record: dict, bits: int) -> dict[str, np.ndarray]:
    """The per-image map a per-image record names (``image,fingerprint`` rows), each
    fingerprint of ``bits`` bits."""
    from gantk.io.files import read_csv

    mapping = record_path.parent / (record.get("map") or PER_IMAGE_MAP)
    if not mapping.exists():
        raise GantkError(
            f"{record_path} gives one fingerprint per image, listed in {mapping.name}, but "
            f"{mapping} is missing; keep the map next to the record (copy the whole "
            "fingerprint-embed folder)"
        )
    rows = read_csv(mapping, "per-image map", fix="keep the map fingerprint-embed wrote")
    if not rows or [c.strip() for c in rows[0][1]] != ["image", "fingerprint"]:
        raise GantkError(
            f"{mapping} is not a per-image map: its first line must be 'image,fingerprint'; "
            "keep the map fingerprint-embed wrote"
        )
    expected = {}
    for line, row in rows[1:]:
        if len(row) != 2:
            raise GantkError(f"{mapping} line {line}: {len(row)} fields, expected 2 "
                             "(image,fingerprint)")  # fmt: skip
        try:
            expected[row[0]] = fpbits.parse(row[1], bits)
        except GantkError as exc:
            raise GantkError(f"{mapping} line {line}: {exc}") from None
    return expected


def read_expectation(
    text: str | Path, bits: int, resolution: int
) -> tuple[np.ndarray | dict[str, np.ndarray], dict]:
    """``--expect``: a ``fingerprint.json`` record (its fingerprint, or its per-image map) or a
    fingerprint string. Returns the expected bits and the record (empty for a string)."""
    path = Path(str(text)).expanduser()
    if path.is_dir():
        path = path / RECORD
    # Anything that exists is read as a record (read_record refuses FIFOs and devices).
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise GantkError(f"fingerprint record {path} does not exist")
        record = read_record(path)
        if record["bits"] != bits:
            raise GantkError(
                f"{path} records {record['bits']}-bit fingerprints but the decoder reads "
                f"{bits} bits; use the decoder that matches the encoder of the record"
            )
        made_at = (record.get("encoder") or {}).get("resolution")
        if made_at is not None and made_at != resolution:
            raise GantkError(
                f"{path} was made by an encoder working at {made_at}x{made_at} but this decoder "
                f"works at {resolution}x{resolution}; use the decoder trained with that encoder"
            )
        if record.get("per_image"):
            return read_per_image_map(path, record, bits), record
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
    precision: str = "auto",
    shard: Shard = Shard(),
    dist: Dist | None = None,
) -> dict:
    """Decode every image; with ``expected``, test each against it and pool the folder.

    ``shard``: only that part of ``paths`` (the report is the part's); ``dist``: this process's
    place in a torchrun job, which decodes its share; every process gets the whole report.

    ``identify`` (scalable fingerprints) maps decoded fingerprints to registered users: each
    image gets its ``user`` and the folder the user of its majority-vote fingerprint.

    Per image: decoded bits, matches, bit accuracy, p-value and verdict (matches >= the
    threshold for ``fpr``). Folder: the majority-vote fingerprint and one test for the whole
    set (:func:`gantk.fingerprint.bits.folder_test`), whose p-value gives the verdict.
    """
    bits = decoder.config.bits
    limit = fpbits.threshold(bits, fpr)
    dist = dist or Dist()
    ours = shard.part(range(len(paths)))
    if not ours:
        raise GantkError(f"--shard {shard}: that part of the {len(paths)} images is empty; "
                         "split them into fewer shards")  # fmt: skip
    mine = dist.part(ours)
    rows, decoded_all, targets, skipped = [], [], [], []
    failed: Exception | None = None
    try:
        found = iter_decoded(paths[mine.start : mine.stop], decoder, 64, root, skipped, strict,
                             warn, design, precision)  # fmt: skip
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
    except Exception as exc:  # every process stops alike, with the one error
        failed = exc
    dist.all_succeed(failed)
    if advance and skipped:
        advance(len(skipped))
    # The processes' shares in rank order are the images in order: one process's lists.
    shares = dist.gather((rows, decoded_all, targets, skipped))
    rows, decoded_all, targets, skipped = ([x for share in shares for x in share[i]]
                                           for i in range(4))  # fmt: skip
    if not rows:
        raise GantkError(f"none of the {len(ours)} images could be read; nothing to decode")
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
    if not shard.whole:  # the figures below are this part's, not the folder's
        summary["part"] = {"shard": str(shard), "images": [ours.start, ours.stop],
                           "of": len(paths)}  # fmt: skip
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
