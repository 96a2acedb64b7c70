"""``gantk fingerprint-embed`` and ``gantk fingerprint-decode``: artificial fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    READS,
    WRITES,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    PrecisionOpt,
    QuietOpt,
    ShardOpt,
    StrictOpt,
    handle_errors,
    process_device,
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
    READS,
    typer.Option(
        "--encoder",
        help="Stego model (.safetensors from `gantk train stego`) or builtin:stego-100.",
    ),
]


def _load(spec: str, device: str):
    from gantk.fingerprint.artificial import resolve_model
    from gantk.fingerprint.train_stego import load_stego
    from gantk.nn.precision import channels_last

    path = resolve_model(spec)
    encoder, decoder = load_stego(path, process_device(device))  # torchrun: this rank's GPU
    channels_last(decoder)  # 1.9x faster tiles on a CPU, in float32 and bf16 alike
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
        WRITES,
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
        WRITES,
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
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    strict: StrictOpt = False,
    shard: ShardOpt = None,
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
    fingerprints, at least bits/8 apart so that nearest-entry identification cannot confuse two
    users, go to --registry.

    Under torchrun the processes share the images out; --shard K/N embeds part K of N into
    OUT (a part folder) for `gantk fingerprint-merge`, which assembles the N parts into the
    folder one run writes.
    """
    from gantk.errors import GantkError
    from gantk.fingerprint import bits as fpbits
    from gantk.fingerprint.artificial import embed_folder
    from gantk.io.images import list_images
    from gantk.nn.distributed import Shard, init_distributed, work_range

    part = Shard.parse(shard)
    if not part.whole and seed is None and fingerprint is None and not per_image:
        raise GantkError(
            "--shard splits one embedding across commands, which must embed one fingerprint: "
            "give --fingerprint, or the same --seed to every shard"
        )
    if not part.whole and data.is_file():
        raise GantkError(f"--shard splits a FOLDER of images; {data} is a file")
    if seed is None:  # fingerprints are secrets: not from a seed every user shares
        import secrets

        seed = secrets.randbits(62)
    if data.is_file() and data.suffix.lower() == ".safetensors":
        _refuse_unused(
            {"--bits": bits is not None, "--per-image": per_image, "--strict": strict,
             "--format": image_format != "png", "--quality": quality != 95,
             "--fingerprint": fingerprint is not None, "--design": design is not None,
             "--encoder": encoder != "builtin:stego-100", "--strength": strength is not None,
             "--min-psnr": min_psnr != 33.0},
            f"when minting generators from a run ({data.name}): they are for a FOLDER of images",
        )  # fmt: skip
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
    _refuse_unused({"--quality": image_format == "png" and quality != 95},
                   "with --format png, which is lossless (it is JPEG's quality)")  # fmt: skip
    if design is not None and design not in ("native", "paper"):
        raise GantkError(f"--design must be native or paper, got {design!r}")
    if strength is not None:
        _strength(strength)  # refuse a bad value before loading anything
    if min_psnr is not None and not 10 <= min_psnr <= 80:
        raise GantkError(f"--min-psnr must be in 10..80 dB, got {min_psnr:g}")
    output = Output(quiet, as_json)
    path, enc, dec = _load(encoder, device)
    # The design the model was trained for, unless asked otherwise (models from before the
    # native design: the paper's).
    design = design or enc.config.design
    level = _strength(strength or ("auto" if design == "native" else "1"))
    n = enc.config.bits
    if bits is not None and bits != n:
        raise GantkError(f"--bits {bits} does not match the encoder, which embeds {n} bits")
    ranks = init_distributed(process_device(device))
    seed = ranks.broadcast(seed)  # under torchrun: rank 0's, so all embed one fingerprint
    code = None if per_image else (
        fpbits.parse(fingerprint, n) if fingerprint else fpbits.random_bits(n, seed)
    )  # fmt: skip
    total = len(work_range(len(list_images(data)), part, ranks))  # this process's images
    with output.progress(total, "embedding") as advance:
        result = embed_folder(
            data, out, enc, path, code, seed if per_image else None, image_format, quality,
            force, advance, strict, output.warn, dec, design, level,
            min_psnr if level is None else None, precision, part, ranks,
        )  # fmt: skip
    record = result.record
    _show_record(output, "fingerprint-embed", record, out)
    output.result({"out": str(out), **record})


def _show_record(output: Output, title: str, record: dict, out: Path) -> None:
    """An embedding record as a table (a part with no readable images has no figures)."""

    def pair(stats: dict, first: str, second: str, digits: str) -> str:
        if stats["mean"] is None:
            return "-"
        return f"{stats[first]:{digits}} / {stats[second]:{digits}}"

    rows = [
        ["images", record["images"]],
        ["fingerprint", record["fingerprint"] or f"one per image ({record['map']})"],
        ["bits", record["bits"]],
        ["PSNR dB mean / min", pair(record["psnr_db"], "mean", "min", ".2f")],
        ["SSIM mean / min", pair(record["ssim"], "mean", "min", ".4f")],
        ["CIEDE2000 mean / max", pair(record["delta_e2000"], "mean", "max", ".2f")],
        [f"strength ({record['strength']['mode']}) mean / max",
         pair(record["strength"], "mean", "max", ".3g")],
        ["flagged (weaker than auto wanted)", len(record["flagged"])],
    ]  # fmt: skip
    if "part" in record:
        part = record["part"]
        rows.append(["part", f"{part['shard']}: images {part['images'][0]}..."
                     f"{part['images'][1] - 1} of {part['of']}"])  # fmt: skip
    output.table(title, ["item", "value"], [*rows, ["record", str(out / "fingerprint.json")]])


@handle_errors
def fingerprint_merge(
    parts: Annotated[
        list[Path],
        typer.Argument(
            metavar="PART...",
            help="The folders `gantk fingerprint-embed FOLDER --shard K/N --out PART` wrote, "
            "one per shard.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, WRITES, typer.Option("--out", "-o", help="The new, whole folder.")],
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Assemble the part folders of a sharded fingerprint-embed into the folder one run writes:
    every part's images (hard links where the file system allows, else copies) and one
    fingerprint.json, embedding.csv (and fingerprints.csv) equal to the single run's.

    Every shard of the job must be given, each once, all embedded with the same fingerprint,
    encoder and options; the part folders are left as they are (remove them afterwards).

    Example: gantk fingerprint-embed photos/ --fingerprint 0x… --shard $K/4 --out part-$K
    (K = 0..3 of a job array), then gantk fingerprint-merge part-* --out fingerprinted/
    """
    from gantk.fingerprint.records import merge_parts

    output = Output(quiet, as_json)
    record = merge_parts(parts, out, force)  # links or copies: no work worth a progress bar
    _show_record(output, "fingerprint-merge", record, out)
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
    from gantk.fingerprint.scalable.instances import bit_decoder, run_id
    from gantk.fingerprint.scalable.registry import Registry

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


def _refuse_unused(given: dict[str, bool], why: str) -> None:
    """An option that would be silently ignored is refused instead, naming it."""
    from gantk.errors import GantkError

    unused = [name for name, on in given.items() if on]
    if unused:
        verb, them = ("does", "it") if len(unused) == 1 else ("do", "them")
        raise GantkError(f"{', '.join(unused)} {verb} nothing {why}; leave {them} out")


def _instance_bytes(run: Path) -> int:
    """What one generator instance of ``run`` takes on disk: its generator's weights (G.*) in
    float32, read from the checkpoint's header alone."""
    from gantk.io.checkpoint import read_header

    total = 0
    for name, entry in read_header(run).items():
        if name.startswith("G."):
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += 4 * count
    return total


def _embed_instances(
    run: Path, out: Path, users, count, registry, seed: int, device: str, force: bool,
    as_json: bool, quiet: bool,
) -> None:  # fmt: skip
    from gantk.errors import GantkError
    from gantk.fingerprint.scalable.instances import make_instances
    from gantk.io.atomic import check_output, missing_top, remove_empty_folders
    from gantk.io.files import size_text
    from gantk.io.limits import check_count, check_disk

    if registry is None:
        raise GantkError(
            "give --registry REG.h5: without it nobody could tell whose generator a fake came from"
        )
    # --out is a folder the instances are added to (it may hold earlier ones): never a link,
    # which would put them wherever it points, and never the run's own folder (the command's
    # inputs are checked by check_output).
    if out.is_symlink():
        raise GantkError(
            f"--out {out} is a symbolic link; give the folder for the instances itself"
        )
    check_output(out, force=True)
    check_output(registry, force=True)
    if count is not None:
        check_count("--count", count, "mint them in several commands", noun="generators")
        each = _instance_bytes(run)
        check_disk(out / "x", count * each,
                   f"--count {count} generators of {size_text(each)} each",
                   "mint fewer at a time or free space")  # fmt: skip
    output = Output(quiet, as_json)
    total = count or len([u for u in (users or "").split(",") if u.strip()]) or 1
    made = missing_top(out.absolute())
    try:
        with output.progress(total, "minting generators") as advance:
            records = make_instances(run, users, count, registry, out, seed, force,
                                     resolve_device(device), advance)  # fmt: skip
    except BaseException:
        remove_empty_folders(out.absolute(), made)  # a refused or failed call leaves none
        raise
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
        READS,
        typer.Option(
            "--decoder",
            help="Stego model (.safetensors), builtin:stego-100, or the latest.safetensors of a "
            "fingerprinted GAN run (scalable fingerprints; use with --registry REG.h5).",
        ),
    ] = "builtin:stego-100",
    expect: Annotated[
        str | None,
        READS,
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
        Path | None, WRITES, typer.Option("--csv", help="Write one row per image to this CSV file.")
    ] = None,
    design: DesignOpt = None,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    strict: StrictOpt = False,
    shard: ShardOpt = None,
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

    Under torchrun the processes share the images out and rank 0 reports on all of them;
    --shard K/N decodes part K of N (its CSV rows are that part of one run's, in order; the
    folder figures are the part's).
    """
    import csv

    from gantk.errors import GantkError
    from gantk.fingerprint.artificial import decode_report
    from gantk.fingerprint.records import read_expectation
    from gantk.fingerprint.scalable.registry import read_entries
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import is_image_file, list_images
    from gantk.nn.distributed import Shard, init_distributed

    if images.is_dir():
        paths, root = list_images(images), images
    elif images.is_file() and is_image_file(images):
        paths, root = [images], images.parent
    else:
        raise GantkError(f"{images} is neither an image nor a folder of images")
    if not paths:
        raise GantkError(f"{images} contains no images (png, jpg, jpeg, webp, bmp, tif)")
    part = Shard.parse(shard)
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
    # The record's design (records written before the native design existed: the paper's),
    # else the one the decoder was trained for.
    trained_for = getattr(dec.config, "design", "paper")
    design = design or (record.get("design", "paper") if record else trained_for)
    if design not in ("native", "paper"):
        raise GantkError(f"--design must be native or paper, got {design!r}")
    entries = read_entries(registry) if registry and identify is None else None
    ranks = init_distributed(process_device(device))
    with output.progress(len(paths), "decoding") as advance:
        report = decode_report(
            root, paths, dec, expected, fpr, entries, advance, identify, strict, output.warn,
            design if identify is None else "paper", precision, part, ranks,
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
    if "part" in summary:
        first, stop = summary["part"]["images"]
        rows.append(["part", f"{part}: images {first}..{stop - 1} of {len(paths)}"])
    output.table("fingerprint-decode", ["item", "value"], rows)
    if csv_out is not None and ranks.main:  # rank 0 writes what every process found
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
