"""Artificial fingerprints: embed a fingerprint into every image of a dataset, decode it later.

The model owner fingerprints the training data with :func:`embed_folder`; any generative model
trained on it reproduces the fingerprint, so :func:`decode_report` on its outputs finds it.

Embedding keeps each image's size. The default design (``native``,
:mod:`gantk.fingerprint.native`) makes the residual on the image's own pixels, tile by tile of the
model's resolution, shaped by a just-noticeable-difference map, at a strength found per image
(:mod:`gantk.fingerprint.strength`); decoding pools the logits of every tile. The paper's design
(``paper``) encodes a copy at the model's resolution and upsamples the residual
(:func:`gantk.fingerprint.stego.embed_any_size`). Each image keeps its mode and bit depth
(:mod:`gantk.fingerprint.image_files`); the record of an embedding and its tables are
:mod:`gantk.fingerprint.records`.

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
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.fingerprint import native
from gantk.fingerprint.image_files import (
    LoadedImage,
    Warn,
    check_size,
    load_readable,
    to_rgb,
    to_tensor,
    write_in_mode,
)
from gantk.fingerprint.records import (
    PER_IMAGE_MAP,
    RECORD,
    embedding_record,
    expected_for,
    read_record,
    write_record,
)
from gantk.fingerprint.stego import DESIGNS, StegoDecoder, StegoEncoder, decode_bits
from gantk.fingerprint.strength import Embedder
from gantk.io.atomic import atomic_dir, check_output
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import file_sha256
from gantk.io.images import (
    list_images,
)
from gantk.metrics.image_quality import delta_e_mean, psnr_db, ssim
from gantk.nn.distributed import Dist, Shard, work_range

EMBED_BATCH = 32  # images loaded, embedded and written per step
# Flagged images named one warning each; the rest in one line (a folder of small images can flag
# thousands, all listed in the record).
FLAGGED_NAMED = 5
FORMATS = {"png": ".png", "jpeg": ".jpg"}


def resolve_model(spec: str | Path | None) -> Path:
    """A stego model file: a path, or ``builtin:stego-100`` (the default, shipped with gantk)."""
    return resolve_model_path(
        str(spec or "builtin:stego-100"), "stego model", "gantk train stego (stego.safetensors)"
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
                if warn is not None and len(flagged) <= FLAGGED_NAMED:
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
            if warn is not None and len(flagged) > FLAGGED_NAMED:
                warn(
                    f"{len(flagged) - FLAGGED_NAMED} more images were fingerprinted weaker than "
                    f"auto wanted ({len(flagged)} of {len(quality)} in all): fingerprint.json "
                    "lists them under flagged, embedding.csv gives each one's strength and PSNR"
                )
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
                write_record(tmp, record, quality, rows, exact=not shard.whole)
        except Exception as exc:  # a full disk: every process fails with rank 0
            failed = exc
        dist.all_succeed(failed)
    dist.barrier()  # the folder is published when any process returns
    return EmbedResult(record, len(paths))


def _write_and_measure(
    rgb: np.ndarray, loaded: LoadedImage, target: Path, image_format: str, quality: int
) -> tuple[float, float, float]:
    """Write one fingerprinted image; PSNR, SSIM and mean CIEDE2000 of what was saved against
    the original."""
    saved = write_in_mode(rgb, loaded, target, image_format, quality)
    return psnr_db(loaded.rgb, saved), ssim(loaded.rgb, saved), delta_e_mean(loaded.rgb, saved)


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
