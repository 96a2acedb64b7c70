"""``gantk fingerprint-embed`` and ``gantk fingerprint-decode``: artificial fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    SeedOpt,
    handle_errors,
    resolve_device,
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--encoder",
        help="Stego model (.safetensors from `gantk train stego`) or builtin:stego-100.",
    ),
]


def _load(spec: str, device: str):
    from gantk.fingerprint.artificial import resolve_model
    from gantk.fingerprint.train_stego import load_stego

    path = resolve_model(spec)
    encoder, decoder = load_stego(path, resolve_device(device))
    return path, encoder, decoder


@handle_errors
def fingerprint_embed(
    data: Annotated[
        Path, typer.Argument(metavar="FOLDER", help="Images to fingerprint (searched recursively).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="New folder for the fingerprinted copies.")
    ],
    bits: Annotated[
        int | None,
        typer.Option("--bits", help="Fingerprint length; must match the encoder (a check)."),
    ] = None,
    encoder: ModelOpt = "builtin:stego-100",
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The fingerprint: 0x + hex digits or a 0/1 string. Default: random from --seed.",
        ),
    ] = None,
    per_image: Annotated[
        bool,
        typer.Option(
            "--per-image",
            help="A different random fingerprint per image, listed in OUT/fingerprints.csv.",
        ),
    ] = False,
    image_format: Annotated[
        str, typer.Option("--format", help="Output format: png (lossless) or jpeg.")
    ] = "png",
    quality: Annotated[
        int, typer.Option("--quality", help="JPEG quality (with --format jpeg).")
    ] = 95,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed a fingerprint into every image of FOLDER, keeping names, sub-folders and sizes.

    Train any generative model on OUT; `gantk fingerprint-decode` then finds the fingerprint in
    what it generates. OUT/fingerprint.json records the fingerprint, the encoder (file and
    SHA-256), the image count and the PSNR/SSIM cost of embedding.
    """
    from gantk.errors import GantkError
    from gantk.fingerprint import bits as fpbits
    from gantk.fingerprint.artificial import embed_folder
    from gantk.io.images import list_images

    if not data.is_dir():
        raise GantkError(
            f"{data} is not a folder of images; export a built-in first with `gantk data export`"
        )
    if per_image and fingerprint:
        raise GantkError("--per-image draws one fingerprint per image; leave out --fingerprint")
    output = Output(quiet, as_json)
    path, enc, _ = _load(encoder, device)
    n = enc.config.bits
    if bits is not None and bits != n:
        raise GantkError(f"--bits {bits} does not match the encoder, which embeds {n} bits")
    code = None if per_image else (
        fpbits.parse(fingerprint, n) if fingerprint else fpbits.random_bits(n, seed)
    )  # fmt: skip
    total = len(list_images(data))
    with output.progress(total, "embedding") as advance:
        result = embed_folder(
            data, out, enc, path, code, seed if per_image else None, image_format, quality,
            force, advance,
        )  # fmt: skip
    record = result.record
    output.table(
        "fingerprint-embed",
        ["item", "value"],
        [
            ["images", record["images"]],
            ["fingerprint", record["fingerprint"] or f"one per image ({record['map']})"],
            ["bits", record["bits"]],
            [
                "PSNR dB mean / min",
                f"{record['psnr_db']['mean']:.2f} / {record['psnr_db']['min']:.2f}",
            ],
            ["SSIM mean / min", f"{record['ssim']['mean']:.4f} / {record['ssim']['min']:.4f}"],
            ["record", str(out / "fingerprint.json")],
        ],
    )
    output.result({"out": str(out), **record})


@handle_errors
def fingerprint_decode(
    images: Annotated[
        Path, typer.Argument(metavar="IMAGES", help="A folder of images (recursive) or one image.")
    ],
    decoder: Annotated[
        str,
        typer.Option("--decoder", help="Stego model (.safetensors) or builtin:stego-100."),
    ] = "builtin:stego-100",
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="The fingerprint to test for: a fingerprint.json (or its folder) or 0x…/0-1 bits.",
        ),
    ] = None,
    fpr: Annotated[
        float,
        typer.Option("--fpr", help="False-positive rate that sets the per-image bit threshold."),
    ] = 1e-6,
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="JSON registry of fingerprints: report the closest."),
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per image to this CSV file.")
    ] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode fingerprints from images and test them against an expected fingerprint.

    Per image: decoded bits, bit accuracy, the one-sided binomial p-value (chance of that many
    matching bits without the fingerprint) and a verdict at --fpr. For the folder: the
    majority vote over images tested against the fingerprint (per-image fingerprints: all bits
    pooled), which stays valid when a decoder reads similar bits from similar images. Without
    --expect it reports the decoded bits (and, with --registry, the closest registered
    fingerprint).
    """
    import csv

    from gantk.errors import GantkError
    from gantk.fingerprint import bits as fpbits
    from gantk.fingerprint.artificial import decode_report, read_expectation
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import is_image_file, list_images

    if images.is_dir():
        paths, root = list_images(images), images
    elif images.is_file() and is_image_file(images):
        paths, root = [images], images.parent
    else:
        raise GantkError(f"{images} is neither an image nor a folder of images")
    if not paths:
        raise GantkError(f"{images} contains no images (png, jpg, jpeg, webp, bmp, tif)")
    if csv_out is not None:
        check_output(csv_out, force, inputs=[images])
    output = Output(quiet, as_json)
    _, _, dec = _load(decoder, device)
    n, r = dec.config.bits, dec.config.resolution
    expected = read_expectation(expect, n, r)[0] if expect else None
    entries = fpbits.read_registry(registry) if registry else None
    with output.progress(len(paths), "decoding") as advance:
        report = decode_report(root, paths, dec, expected, fpr, entries, advance)
    summary = report["summary"]
    rows = [
        ["images", summary["images"]],
        ["bits", n],
        ["majority fingerprint", summary["majority"]],
    ]
    if expect:
        rows += [
            ["threshold", f"{summary['threshold_matches']}/{n} bits (FPR {fpr:g})"],
            ["detected", f"{summary['detected']} of {summary['images']}"],
            ["mean bit accuracy", f"{summary['mean_bit_accuracy']:.4f}"],
            [f"folder p-value ({summary['folder_test']['method']})",
             f"{summary['folder_p_value']:.3g}"],
            ["verdict", summary["verdict"]],
        ]  # fmt: skip
    if summary.get("closest"):
        best = summary["closest"]
        rows.append(
            ["closest registered", f"{best['name']} ({best['matches']}/{n} bits, "
             f"corrected p {best['p_value_corrected']:.3g})"]
        )  # fmt: skip
    output.table("fingerprint-decode", ["item", "value"], rows)
    if csv_out is not None:
        columns = ["image", "decoded", "matches", "bit_accuracy", "p_value", "fingerprinted"]
        with atomic_file(csv_out, force) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(report["images"])
    output.result(report)
