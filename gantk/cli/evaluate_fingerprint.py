"""``gantk evaluate robustness|secrecy|scalable``: fingerprint metrics (robustness to
perturbations, secrecy against the ATS attack, scalable fingerprints)."""

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
    QuietOpt,
    SeedOpt,
    handle_errors,
)
from gantk.cli.evaluate_common import (
    LpipsNetOpt,
    LpipsWeightsOpt,
)


@handle_errors
def robustness_command(
    images: Annotated[
        Path,
        typer.Argument(metavar="IMAGES", help="Folder of fingerprinted images (recursive)."),
    ],
    expect: Annotated[
        str,
        READS,
        typer.Option(
            "--expect", help="fingerprint.json of the embedding (or its folder), or 0x…/0-1 bits."
        ),
    ],
    decoder: Annotated[
        str,
        READS,
        typer.Option("--decoder", help="Stego model (.safetensors) or builtin:stego-100."),
    ] = "builtin:stego-100",
    perturb: Annotated[
        str,
        typer.Option(
            "--perturb",
            help="Perturbations to sweep: comma list of noise, blur, jpeg, crop, resize, "
            "brightness, combined; or all.",
        ),
    ] = "all",
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="Also perturb this generator (trained on the fingerprinted data): weight "
            "quantization and weight noise, decoding --count samples each.",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("-n", "--count", min=1, help="Images used (the first N, sorted).")
    ] = 200,
    fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate for detection.")] = 1e-6,
    plot_path: Annotated[
        Path | None, WRITES, typer.Option("--plot", help="Write a PNG of bit accuracy vs strength.")
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Bit accuracy, detection rate and p-values of a fingerprint under perturbations of the
    images (noise, blur, JPEG, crop, resize, brightness, combined) and, with --generator, of the
    model's weights."""
    import numpy as np

    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.fingerprint import bits as fpbits
    from gantk.fingerprint.artificial import resolve_model
    from gantk.fingerprint.image_files import load_or_stop, to_tensor
    from gantk.fingerprint.records import expected_for, read_expectation
    from gantk.fingerprint.robustness import image_sweep, model_sweep, plot
    from gantk.fingerprint.train_stego import load_stego
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import list_images
    from gantk.perturb import SWEEPS, parse_names

    names = parse_names(perturb)
    if not images.is_dir():
        raise GantkError(f"{images} is not a folder of images")
    paths = list_images(images)[:count]
    if not paths:
        raise GantkError(f"{images} contains no images")
    if plot_path is not None:
        check_output(plot_path, force, inputs=[images])
    out = Output(quiet, as_json)
    dev = resolve_device(device)
    _, dec = load_stego(resolve_model(decoder), dev)
    n = dec.config.bits
    expected, record = read_expectation(expect, n, dec.config.resolution)
    # As fingerprint-decode: the record's design (records older than it: the paper's).
    design = record.get("design", "paper") if record else "native"
    tensors, targets = [], []
    for path in paths:
        target = expected_for(expected, str(path.relative_to(images)))
        if target is None:
            continue  # not an image the record knows (per-image maps only)
        tensors.append(to_tensor(load_or_stop(path).rgb))
        targets.append(target)
    if not tensors:
        raise GantkError(f"no image in {images} is listed in the record's fingerprint map")
    steps = sum(len(SWEEPS[name]) for name in names)
    with out.progress(steps, "perturbing") as advance:
        rows = image_sweep(tensors, np.stack(targets), dec, names, fpr, seed, advance, design)
    if generator is not None:
        if not isinstance(expected, np.ndarray):
            raise GantkError("--generator needs one fingerprint in --expect, not a per-image map")
        with out.progress(12, "perturbing the generator") as advance:
            rows += model_sweep(generator, expected, dec, count, fpr, seed, dev, advance, design)
    limit = fpbits.threshold(n, fpr)
    out.table(
        f"robustness ({len(tensors)} images, detection at >= {limit}/{n} bits, FPR {fpr:g})",
        ["perturbation", "strength", "bit acc", "detected", "median p"],
        [
            [r["perturbation"], f"{r['strength']:g}", f"{r['bit_accuracy']:.3f}",
             f"{r['detection_rate']:.2f}", f"{r['median_p_value']:.2g}"]
            for r in rows
        ],
    )  # fmt: skip
    if plot_path is not None:
        with atomic_file(plot_path, force) as tmp:
            plot(rows, tmp.with_suffix(".png"), limit / n)
            tmp.with_suffix(".png").replace(tmp)
    out.result({"images": len(tensors), "bits": n, "fpr": fpr, "threshold_matches": limit,
                "design": design, "rows": rows})  # fmt: skip


@handle_errors
def secrecy_command(
    marked: Annotated[
        Path, typer.Argument(metavar="FINGERPRINTED", help="The owner's fingerprinted images.")
    ],
    clean: Annotated[
        Path,
        typer.Argument(
            metavar="CLEAN",
            help="Clean images of the same kind (the test set's other half; with --protocol "
            "transfer, half of them build the attack's training set).",
        ),
    ],
    attack_encoder: Annotated[
        Path,
        typer.Option(
            "--attack-encoder",
            help="A stego model trained independently of the owner's (the attacker's).",
        ),
    ],
    count: Annotated[
        int, typer.Option("-n", "--count", min=8, help="Images read from each folder (at most).")
    ] = 400,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="paper (thesis §5.5.5): the SVM learns the test set as it is (negatives) vs "
            "encoded twice by the attacker (positives), then classifies the test set encoded "
            "once; transfer: it learns clean vs attacker-marked images and is asked about the "
            "owner's marked ones.",
        ),
    ] = "paper",
    design: Annotated[
        str | None,
        typer.Option(
            "--design",
            help="How the owner fingerprinted (fingerprint.json's design): native or paper; "
            "the attacker marks and looks the same way. Default: the design the attacker's "
            "model was trained for.",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """ATS attack on fingerprint secrecy (Artificial Training Sets): an attacker with an
    encoder of their own, trained independently, tries to tell the owner's fingerprinted
    images from clean ones with an SVM. Accuracy near 0.5 means secret (paper: 0.502)."""
    from gantk.errors import GantkError
    from gantk.fingerprint.artificial import resolve_model
    from gantk.fingerprint.image_files import load_or_stop, to_tensor
    from gantk.fingerprint.secrecy import ats_attack
    from gantk.fingerprint.train_stego import load_stego
    from gantk.io.images import list_images

    for folder in (marked, clean):
        if not folder.is_dir():
            raise GantkError(f"{folder} is not a folder of images")
    if marked.resolve() == clean.resolve():
        raise GantkError("FINGERPRINTED and CLEAN are the same folder; give clean images")
    out = Output(quiet, as_json)
    attacker, _ = load_stego(resolve_model(str(attack_encoder)))
    owner = [to_tensor(load_or_stop(p).rgb) for p in list_images(marked)[:count]]
    plain = [to_tensor(load_or_stop(p).rgb) for p in list_images(clean)[:count]]
    design = design or attacker.config.design
    if design not in ("native", "paper"):
        raise GantkError(f"--design must be native or paper, got {design!r}")
    result = ats_attack(owner, plain, attacker, seed, protocol, design)
    out.table(
        "secrecy (ATS attack)",
        ["item", "value"],
        [
            [k.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else v]
            for k, v in result.items()
        ],
    )
    out.result(result)


@handle_errors
def scalable_command(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="latest.safetensors of a `gantk train gan --fingerprint-bits` run."
        ),
    ],
    real: Annotated[
        str | None,
        READS,
        typer.Option(
            "--real", help="Real images for closed-world attribution (folder, pack, builtin:)."
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("-n", "--count", min=1, help="Samples for bit accuracy and robustness.")
    ] = 500,
    instances: Annotated[
        str, typer.Option("--instances", help="Closed-world sizes: comma list of instance counts.")
    ] = "1,10,100",
    per_instance: Annotated[
        int, typer.Option("--per-instance", min=1, help="Samples from each instance.")
    ] = 10,
    perturb: Annotated[
        str,
        typer.Option(
            "--perturb", help="Robustness sweep: comma list of perturbations, all, or none."
        ),
    ] = "all",
    capacity_bag: Annotated[
        int, typer.Option("--capacity-bag", min=2, help="Random fingerprints in the capacity bag.")
    ] = 10000,
    lpips: Annotated[
        bool, typer.Option("--lpips", help="Also measure consistency with LPIPS (needs weights).")
    ] = False,
    net: LpipsNetOpt = "alex",
    lpips_weights: LpipsWeightsOpt = None,
    fpr: Annotated[
        float, typer.Option("--fpr", help="False-positive rate for verification.")
    ] = 1e-6,
    plot_path: Annotated[
        Path | None,
        WRITES,
        typer.Option("--plot", help="Write a PNG of bit accuracy vs perturbation."),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Scalable fingerprints (thesis §6.4): bit accuracy over random latents and fingerprints,
    consistency between instances (PSNR; LPIPS with --lpips), capacity of the bit length
    (Fig. 6.4), closed-world attribution among 1, 10, 100 instances and --real images
    (Table 6.3), and robustness to perturbations (Fig. 6.5)."""
    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.fingerprint.image_files import to_tensor
    from gantk.fingerprint.robustness import plot
    from gantk.fingerprint.scalable import evaluation as ev
    from gantk.fingerprint.scalable.networks import BitDecoder, load_fingerprinted
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.datasets import open_dataset
    from gantk.perturb import SWEEPS, parse_names

    try:
        counts = [int(v) for v in instances.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise GantkError(f"--instances {instances!r}: give positive counts like 1,10,100")
    names = [] if perturb == "none" else parse_names(perturb)
    if plot_path is not None:
        if not names:
            raise GantkError("--plot draws the robustness sweep; drop --perturb none")
        check_output(plot_path, force, inputs=[run])
    out = Output(quiet, as_json)
    dev = resolve_device(device)
    G, Fnet, config = load_fingerprinted(run, dev)
    decoder = BitDecoder(Fnet, config.z_dim, config.fingerprint_bits).eval()
    lpips_model = None
    if lpips:
        from gantk.metrics.lpips_metric import load_lpips

        lpips_model = load_lpips(net, lpips_weights, dev)
    real_images = []
    if real is not None:
        dataset = open_dataset(real, resolution=config.resolution)
        take = min(len(dataset), per_instance * max(counts))
        real_images = [to_tensor(dataset[i][0].permute(1, 2, 0).numpy()) for i in range(take)]
    result: dict = {"run": str(run), "bits": config.fingerprint_bits, "fpr": fpr}
    result["bit_accuracy"] = ev.bit_accuracy(G, decoder, count, seed, fpr)
    result["consistency"] = ev.consistency(G, min(count, 200), seed, lpips_model)
    bits = config.fingerprint_bits
    lengths = sorted({16, 32, 64, 128, 256, bits})
    result["capacity"] = ev.capacity(lengths, capacity_bag, seed)
    with out.progress(sum(counts), "instances") as advance:
        result["closed_world"] = ev.closed_world(G, decoder, real_images, counts, per_instance,
                                                 fpr, seed, advance)  # fmt: skip
    steps = sum(len(SWEEPS[n]) for n in names)
    with out.progress(steps, "perturbing") as advance:
        rows = ev.robustness(G, decoder, names, min(count, 200), fpr, seed, advance)
    result["robustness"] = rows
    acc = result["bit_accuracy"]
    cons = result["consistency"]
    facts = [
        ["bit accuracy (mean / min)", f"{acc['mean_bit_accuracy']:.4f} / "
         f"{acc['min_bit_accuracy']:.4f} over {acc['images']} samples"],
        ["verified", f"{acc['verified_rate']:.3f} at >= {acc['threshold_matches']}/{bits} bits"],
        ["consistency", f"PSNR {cons['psnr_db']:.2f} dB"
         + (f", LPIPS {cons['lpips']:.4f}" if "lpips" in cons else "")],
    ]  # fmt: skip
    for row in result["capacity"]:
        facts.append([f"capacity: {row['bits']} bits", f"max overlap {row['max_overlap']:.3f} "
                      f"in {row['bag']} fingerprints"])  # fmt: skip
    for row in result["closed_world"]:
        real_acc = row["real_accuracy"]
        facts.append([f"attribution: {row['instances']} instances",
                      f"{row['accuracy']:.4f} (fakes {row['fake_accuracy']:.4f}"
                      + (f", real {real_acc:.4f})" if real_acc is not None else ")")])  # fmt: skip
    out.table(f"scalable fingerprints: {run}", ["", ""], facts)
    if rows:
        out.table(
            "robustness",
            ["perturbation", "strength", "bit acc", "verified"],
            [[r["perturbation"], f"{r['strength']:g}", f"{r['bit_accuracy']:.3f}",
              f"{r['detection_rate']:.2f}"] for r in rows],
        )  # fmt: skip
    if plot_path is not None and rows:
        with atomic_file(plot_path, force) as tmp:
            plot(rows, tmp.with_suffix(".png"), acc["threshold_matches"] / bits)
            tmp.with_suffix(".png").replace(tmp)
    out.result(result)
