"""The record of a fingerprint embedding and the files beside it, and reading them back.

An embedded folder holds ``fingerprint.json`` (:func:`embedding_record`: the settings and the
quality figures), ``embedding.csv`` (per image: strength, PSNR, SSIM, CIEDE2000, flag) and, for
per-image fingerprints, ``fingerprints.csv``. The parts a sharded embedding writes carry the
same files with full-precision tables, and :func:`merge_parts` assembles them into the folder a
single run writes. Decoding reads a record back (:func:`read_record`,
:func:`read_expectation`) to know which fingerprint to expect.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.io.atomic import atomic_dir, check_output
from gantk.nn.distributed import check_parts

RECORD = "fingerprint.json"
PER_IMAGE_MAP = "fingerprints.csv"
QUALITY_MAP = "embedding.csv"  # per image: strength, PSNR, SSIM, CIEDE2000, flag


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return {"mean": None, "min": None, "max": None}
    return {
        "mean": float(np.mean(finite)),
        "min": float(np.min(finite)),
        "max": float(np.max(finite)),
    }


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


def write_record(
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
        write_record(tmp, record, quality, mapping, exact=False)
    return record


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


def expected_for(expected, name: str) -> np.ndarray | None:
    if expected is None or isinstance(expected, np.ndarray):
        return expected
    # Per-image maps name the embedded files; decoded copies may have another extension.
    stem = str(Path(name).with_suffix(""))
    for key, value in expected.items():
        if key == name or str(Path(key).with_suffix("")) == stem:
            return value
    return None
