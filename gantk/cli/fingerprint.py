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
    StrictOpt,
    handle_errors,
    resolve_device,
)

DesignOpt = Annotated[
    str | None,
    typer.Option(
        "--design",
        help="native (the fingerprint made and read on the image's own pixels, tile by tile; "
        "the default) or paper (the image resized to the model's resolution, as published). "
        "fingerprint-decode: default from the --expect record, else native.",
    ),
]
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
        Path,
        typer.Argument(
            metavar="FOLDER|RUN",
            help="Images to fingerprint (searched recursively), or the latest.safetensors of a "
            "`gantk train gan --fingerprint-bits` run to mint per-user generators from.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="New folder for the fingerprinted copies (or the instances)."
        ),
    ],
    users: Annotated[
        str | None,
        typer.Option("--users", help="RUN: one generator per user, e.g. alice,bob,carol."),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", help="RUN: this many generators, named user-00001, …"),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            help="RUN: the secret registry (.h5, created if new, mode 0600) that maps users to "
            "fingerprints; new users are appended.",
        ),
    ] = None,
    bits: Annotated[
        int | None,
        typer.Option("--bits", help="Fingerprint length; must match the encoder (a check)."),
    ] = None,
    encoder: ModelOpt = "builtin:stego-100",
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The fingerprint: 0x + hex digits or a 0/1 string. Default: random.",
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
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of the random fingerprints (reproducible; default: drawn from the "
            "operating system, so nobody can guess them).",
        ),
    ] = None,
    design: DesignOpt = None,
    strength: Annotated[
        str | None,
        typer.Option(
            "--strength",
            help="auto: per image, the faintest fingerprint whose every bit still decodes after "
            "JPEG 75 and after halving the size; or a number (native: 1 is the model's own PSNR "
            "budget, 0.5 is 6 dB fainter; paper: 1 is the encoder's residual as trained). "
            "Default: auto with the native design, 1 with the paper's (as published).",
            show_default=False,
        ),
    ] = None,
    min_psnr: Annotated[
        float | None,
        typer.Option(
            "--min-psnr",
            help="With --strength auto: never below this PSNR (dB); an image that needs more is "
            "embedded at it and flagged in a warning and the record.",
        ),
    ] = 33.0,
    device: DeviceOpt = "auto",
    strict: StrictOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed a fingerprint into every image of FOLDER, keeping names, sub-folders and sizes; or
    mint per-user generators from a fingerprinted training RUN.

    FOLDER (artificial fingerprints): train any generative model on OUT; `gantk
    fingerprint-decode` then finds the fingerprint in what it generates. OUT/fingerprint.json
    records the fingerprint, the encoder (file and SHA-256), the design, the image count and the
    cost of embedding (PSNR, SSIM, CIEDE2000 colour difference); OUT/embedding.csv has each
    image's strength and cost, and images auto could not make robust within --min-psnr are
    warned about and listed as flagged.

    RUN (scalable fingerprints): each user gets OUT/NAME.safetensors, an ordinary generator
    (`gantk generate` takes it) with the user's fingerprint folded into its weights; the
    fingerprints, spaced so no two can verify the same image at --fpr, go to --registry.
    """
    from gantk.errors import GantkError
    from gantk.fingerprint import bits as fpbits
    from gantk.fingerprint.artificial import embed_folder
    from gantk.io.images import list_images

    if seed is None:  # fingerprints are secrets: not from a seed every user shares
        import secrets

        seed = secrets.randbits(62)
    if data.is_file() and data.suffix.lower() == ".safetensors":
        _embed_instances(data, out, users, count, registry, seed, device, force, as_json, quiet)
        return
    if users is not None or count is not None or registry is not None:
        raise GantkError(
            f"--users, --count and --registry mint generators from a fingerprinted run's "
            f"checkpoint; {data} is not a file"
        )
    if not data.is_dir():
        raise GantkError(
            f"{data} is not a folder of images; export a built-in first with `gantk data export`"
        )
    if per_image and fingerprint:
        raise GantkError("--per-image draws one fingerprint per image; leave out --fingerprint")
    design = design or "native"
    if design not in ("native", "paper"):
        raise GantkError(f"--design must be native or paper, got {design!r}")
    level = _strength(strength or ("auto" if design == "native" else "1"))
    if min_psnr is not None and not 10 <= min_psnr <= 80:
        raise GantkError(f"--min-psnr must be in 10..80 dB, got {min_psnr:g}")
    output = Output(quiet, as_json)
    path, enc, dec = _load(encoder, device)
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
            force, advance, strict, output.warn, dec, design, level,
            min_psnr if level is None else None,
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
            [
                "CIEDE2000 mean / max",
                f"{record['delta_e2000']['mean']:.2f} / {record['delta_e2000']['max']:.2f}",
            ],
            [
                f"strength ({record['strength']['mode']}) mean / max",
                f"{record['strength']['mean']:.3g} / {record['strength']['max']:.3g}",
            ],
            ["flagged (weaker than auto wanted)", len(record["flagged"])],
            ["record", str(out / "fingerprint.json")],
        ],
    )
    output.result({"out": str(out), **record})


def _strength(text: str) -> float | None:
    """--strength: None for auto, else a positive finite number."""
    import math

    from gantk.errors import GantkError

    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 100:
        raise GantkError(f"--strength must be auto or a number in (0, 100], got {text!r}")
    return value


def _is_fingerprinted_run(spec: str) -> bool:
    from gantk.io.checkpoint import read_metadata

    path = Path(spec)
    return path.is_file() and read_metadata(path).get("gantk.kind") == "gan-fingerprinted"


def _scalable_decoder(spec: str, registry: Path | None, fpr: float, device: str, output: Output):
    """F of a fingerprinted run as a bit decoder, and the registry lookup for its users."""
    from gantk.errors import GantkError
    from gantk.fingerprint.registry import Registry
    from gantk.fingerprint.scalable import bit_decoder, run_id

    dec = bit_decoder(spec, resolve_device(device))
    if registry is None:
        return dec, None
    if registry.suffix.lower() not in (".h5", ".hdf5"):
        raise GantkError(
            f"--registry {registry}: a fingerprinted run's users live in an .h5 registry "
            "written by `gantk fingerprint-embed RUN --registry`"
        )
    reg = Registry.open(registry)
    if reg.bits != dec.config.bits:
        raise GantkError(
            f"registry {registry} holds {reg.bits}-bit fingerprints but the decoder reads "
            f"{dec.config.bits} bits; use the registry of this run"
        )
    if reg.threshold(fpr) > reg.bits:
        output.warn(
            f"{reg.bits}-bit fingerprints cannot be verified at FPR {fpr:g} among "
            f"{len(reg.entries)} users (even all bits matching is likelier by chance); pass a "
            "larger --fpr or train with more --fingerprint-bits"
        )
    if reg.run != run_id(spec):
        output.warn(
            f"registry {registry} belongs to training run {reg.run[:12]}, the decoder to run "
            f"{run_id(spec)[:12]}: decoded bits will be random, and nobody should match"
        )
    return dec, lambda decoded: reg.identify(decoded, fpr)


def _embed_instances(
    run: Path, out: Path, users, count, registry, seed: int, device: str, force: bool,
    as_json: bool, quiet: bool,
) -> None:  # fmt: skip
    from gantk.errors import GantkError
    from gantk.fingerprint.scalable import make_instances

    if registry is None:
        raise GantkError(
            "give --registry REG.h5: without it nobody could tell whose generator a fake came from"
        )
    output = Output(quiet, as_json)
    total = count or len([u for u in (users or "").split(",") if u.strip()]) or 1
    with output.progress(total, "minting generators") as advance:
        records = make_instances(run, users, count, registry, out, seed, force,
                                 resolve_device(device), advance)  # fmt: skip
    output.table(
        "fingerprint-embed (generator instances)",
        ["user", "generator", "instance SHA-256"],
        [[r["user"], r["file"], r["instance_sha256"][:16]] for r in records],
    )
    output.say(f"registry {registry}: {len(records)} users added (keep it secret)")
    output.result({"registry": str(registry), "instances": records})


@handle_errors
def fingerprint_decode(
    images: Annotated[
        Path, typer.Argument(metavar="IMAGES", help="A folder of images (recursive) or one image.")
    ],
    decoder: Annotated[
        str,
        typer.Option(
            "--decoder",
            help="Stego model (.safetensors), builtin:stego-100, or the latest.safetensors of a "
            "fingerprinted GAN run (scalable fingerprints; use with --registry REG.h5).",
        ),
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
    design: DesignOpt = None,
    device: DeviceOpt = "auto",
    strict: StrictOpt = False,
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
    fingerprint). With the native design each image's bits are the mean logits of all its
    tiles, on the tile grid found from the fingerprint's pilot pattern (so crops and halving
    are found again); the CSV and JSON give the grid (scale, offset, pilot_z) per image.
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
    identify = None
    if _is_fingerprinted_run(decoder):
        dec, identify = _scalable_decoder(decoder, registry, fpr, device, output)
    else:
        _, _, dec = _load(decoder, device)
    n, r = dec.config.bits, dec.config.resolution
    expected, record = read_expectation(expect, n, r) if expect else (None, {})
    # Records written before the native design existed were embedded with the paper's.
    design = design or (record.get("design", "paper") if record else "native")
    if design not in ("native", "paper"):
        raise GantkError(f"--design must be native or paper, got {design!r}")
    entries = fpbits.read_registry(registry) if registry and identify is None else None
    with output.progress(len(paths), "decoding") as advance:
        report = decode_report(
            root, paths, dec, expected, fpr, entries, advance, identify, strict, output.warn,
            design if identify is None else "paper",
        )  # fmt: skip
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
    if "users" in summary:
        found = ", ".join(f"{k} ({v})" for k, v in summary["users"].items()) or "none"
        majority = summary["user"]
        rows += [
            ["threshold", f"{majority['threshold']}/{n} bits (FPR {fpr:g} over the registry)"],
            ["images per user", found],
            ["folder (majority bits)", f"{majority['name'] or 'no match'} "
             f"({majority['matches']}/{n} bits, p {majority['p_value']:.3g})"],
        ]  # fmt: skip
    output.table("fingerprint-decode", ["item", "value"], rows)
    if csv_out is not None:
        columns = ["image", "decoded", "matches", "bit_accuracy", "p_value", "fingerprinted",
                   "tiles", "scale", "offset", "pilot_z"]  # fmt: skip
        rows_out = report["images"]
        if identify is not None:  # scalable fingerprints: who, per image
            columns += ["user", "user_matches", "verified"]
            rows_out = [{**r, "user": r["user"]["name"] or "", "user_matches":
                         r["user"]["matches"], "verified": r["user"]["verified"]}
                        for r in rows_out]  # fmt: skip
        with atomic_file(csv_out, force) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows_out)
    output.result(report)
