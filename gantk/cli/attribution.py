"""``gantk train attributor`` and ``gantk attribute``: attributing images to their source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    WRITES,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    PrecisionOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
    ThreadsOpt,
    handle_errors,
    process_device,
    set_threads,
)

VARIANT_HELP = (
    "Network: full (default), predownsample@N (low frequencies: Gaussian-downsampled to N), "
    "residual@N (the Laplacian band between N and N/2), postpool@N (patch statistics: average "
    "pooling from N), or visnet (fingerprint visualization network)."
)


@handle_errors
def train_attributor(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCES",
            help="Folder with one subfolder of images per source (real/, ganA/, … or 0_real/).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        WRITES,
        typer.Option("--out", "-o", help="Run folder: latest/best .safetensors, log.jsonl."),
    ],
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", "-r", help="Working size (power of two); default: the images' size."
        ),
    ] = None,
    variant: Annotated[str, typer.Option("--variant", help=VARIANT_HELP)] = "full",
    steps: Annotated[int, typer.Option("--steps", help="Training steps (batches).")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per step.")] = 32,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="Training recipe: fast (default; Adam lr 1e-2, betas 0.9/0.99, 16 channels at the "
            "input) or paper (the authors': lr 1e-3, betas 0/0.99, --channel-base 2048); both "
            "mirror images left-right. visnet defaults to paper.",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Adam learning rate [default: the recipe's]", show_default=False),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of each source held out for validation.")
    ] = 0.1,
    finetune: Annotated[
        Path | None,
        typer.Option(
            "--finetune",
            help="Start from this trained attributor (same sources); with --augment this is "
            "immunization against the attacks.",
        ),
    ] = None,
    augment: Annotated[
        str,
        typer.Option(
            "--augment",
            help="Attack training images (comma list of jpeg, blur, noise, crop, combo; or all) "
            "with the paper's random strengths; half the images stay clean.",
        ),
    ] = "",
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Validate and save every N steps.")
    ] = 200,
    channel_base: Annotated[
        int | None,
        typer.Option(
            "--channel-base",
            help="Width: channels at size r are this / r, max 512 [default: the recipe's: 16 x "
            "the resolution for fast, 2048 for paper]",
            show_default=False,
        ),
    ] = None,
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier that attributes images to their source (Yu et al., ICCV 2019).

    Each subfolder of SOURCES is a class (sorted names). The image fingerprint is the network's
    512-d penultimate feature and a source's model fingerprint its last-layer weights. Writes
    OUT/latest.safetensors, OUT/best.safetensors (best validation accuracy; class names in the
    metadata) and OUT/log.jsonl. --finetune with --augment immunizes a trained attributor
    against JPEG, blur, noise and crops.
    """

    from gantk.attribution.data import native_size
    from gantk.attribution.networks import AttributorConfig
    from gantk.attribution.train import AttributorTrainConfig, AttributorTrainer, load_attributor
    from gantk.errors import GantkError
    from gantk.io.atomic import check_run_folder, new_run
    from gantk.perturb import parse_attacks

    if not data.is_dir():
        raise GantkError(f"{data} is not a folder; give one subfolder of images per source")
    if (out / "latest.safetensors").exists() and not force:
        raise GantkError(f"{out} already holds an attributor; pass --force or choose another --out")
    check_run_folder(out, [data], force)
    set_threads(threads)
    output = Output(quiet, as_json)
    if finetune is not None:
        base = load_attributor(finetune)
        resolution = base.config.resolution if resolution is None else resolution
        variant = base.config.variant
    resolution = native_size(data) if resolution is None else resolution
    config = AttributorTrainConfig(
        data=str(data), resolution=resolution, variant=variant, steps=steps,
        batch_size=batch_size, recipe=recipe, lr=lr, val_fraction=val_fraction,
        augment=parse_attacks(augment) if augment else [], channel_base=channel_base,
        precision=precision, seed=seed, device=process_device(device), eval_every=eval_every,
        finetune=str(finetune) if finetune else None,
    ).validate()  # fmt: skip
    # Fail on a bad variant before reading any image.
    AttributorConfig(resolution, ["a", "b"], variant, config.channel_base).validate()
    trainer = AttributorTrainer(config, out, warn=output.warn)
    done = {"step": 0}
    with output.progress(steps, "training") as advance:

        def on_log(entry: dict) -> None:
            status = f"step {entry['step']} loss {entry['loss']:.3f} val {entry['val_acc']:.3f}"
            advance(entry["step"] - done["step"], status)
            done["step"] = entry["step"]

        # A run that fails before its first model (a full disk) leaves nothing behind.
        with new_run(out, lambda: (out / "latest.safetensors").is_file()):
            final = trainer.run(on_log)
    output.say(
        f"classes {', '.join(final['classes'])}; validation accuracy {final['val_acc']:.4f} "
        f"(best {final['best_val_acc']:.4f}); saved {out}/latest.safetensors and best.safetensors"
    )
    output.result({"out": str(out), **final})


@handle_errors
def attribute(
    images: Annotated[
        Path,
        typer.Argument(
            metavar="IMAGES",
            help="Folder of images (recursive); with --eval, one subfolder per source.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Attributor from `gantk train attributor`."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Use a classic method instead: knn, eigenface, eigenface-lr, prnu or spectral.",
        ),
    ] = None,
    fit: Annotated[
        Path | None,
        typer.Option("--fit", help="Labeled folder (one subfolder per source) to fit --baseline."),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--eval",
            help="IMAGES is labeled: report accuracy, per-class accuracy, confusion, FD ratio "
            "and (with a real/ class) real-vs-fake accuracy and average precision.",
        ),
    ] = False,
    attack: Annotated[
        str,
        typer.Option(
            "--attack",
            help="Attack the images first (comma list of jpeg, blur, noise, crop, combo; all); "
            "each is reported separately, with 'clean' for none.",
        ),
    ] = "",
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Vote over the 8 flips/rotations of each image (for attributors trained "
            "with such transforms; rotations mislead one trained on upright images).",
        ),
    ] = False,
    predictions: Annotated[
        Path | None,
        WRITES,
        typer.Option("--out", "-o", help="CSV of predictions: file, class, probabilities."),
    ] = None,
    confusion: Annotated[
        Path | None,
        WRITES,
        typer.Option("--confusion", help="With --eval: confusion matrix PNG (first attack)."),
    ] = None,
    visualize: Annotated[
        Path | None,
        WRITES,
        typer.Option(
            "--visualize",
            help="visNet models: PNG of model fingerprints, image fingerprints and their "
            "correlations (up to 8 images).",
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", "-r", help="Baselines: working size (default: the --fit images')."
        ),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    shard: ShardOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Attribute images to their source with a trained attributor or a classic baseline.

    Without --eval it predicts a source per image (--out writes a CSV). With --eval, IMAGES has
    one subfolder per source (names as in training) and the accuracy is reported; --attack
    repeats it on attacked copies (Table 4.7 strengths: noise std 5-20/255, blur 1-9 px, crop
    5-20 % at a random offset, JPEG 10-75, combo). Baselines (--baseline with --fit): knn on
    pixels, eigenface (PCA, nearest neighbour in eigenspace: the paper's), eigenface-lr
    (whitened PCA + logistic regression, stronger), prnu (noise residual correlation) and
    spectral (azimuthal power spectrum).

    Under torchrun the processes share the images out (a baseline is fitted by each) and rank
    0 reports on all of them; --shard K/N attributes part K of N (its --out rows are that part
    of one run's, in order; its figures are the part's).
    """
    from gantk.attribution import attribute as lib
    from gantk.errors import GantkError
    from gantk.io.atomic import check_output
    from gantk.nn.distributed import Shard, init_distributed, world_size
    from gantk.perturb import parse_attacks

    if (model is None) == (baseline is None):
        raise GantkError("give either --model (a trained attributor) or --baseline with --fit")
    if baseline is not None and fit is None:
        raise GantkError(f"--baseline {baseline} needs --fit SOURCES, a labeled folder to fit on")
    if fit is not None and baseline is None:
        raise GantkError("--fit is for --baseline; a trained --model needs no fitting")
    if resolution is not None and model is not None:
        raise GantkError("--resolution is for baselines; a trained --model works at its own size")
    if confusion is not None and not evaluate:
        raise GantkError("--confusion needs --eval (labeled IMAGES)")
    if not images.is_dir():
        raise GantkError(f"{images} is not a folder of images")
    if visualize is not None and model is None:
        raise GantkError("--visualize draws a visNet attributor's fingerprints; give --model")
    part = Shard.parse(shard)
    split = not part.whole or world_size() > 1
    if visualize is not None and split:
        raise GantkError("--visualize picks its images from the whole folder; run it without "
                         "--shard and torchrun")  # fmt: skip
    for target in (predictions, confusion, visualize):
        if target is not None:
            check_output(target, force, inputs=[images, *([fit] if fit else [])])
    names = [n.strip() for n in attack.split(",") if n.strip()]
    wanted = [n for n in names if n != "clean"]
    runs = (["clean"] if not names or "clean" in names else []) + (
        parse_attacks(",".join(wanted)) if wanted else []
    )
    output = Output(quiet, as_json)
    dev = process_device(device)  # under torchrun: this process's GPU
    ranks = init_distributed(dev)
    if model is not None:
        from gantk.attribution.train import load_attributor

        net = load_attributor(model, dev)
        if visualize is not None and net.config.variant != "visnet":
            raise GantkError(
                f"--visualize needs a visNet attributor ({model} is a {net.config.variant} one); "
                "train one with --variant visnet"
            )
        method: lib.Method = lib.ModelMethod(net, dev, tta)
    else:
        from gantk.attribution.baselines import BASELINES

        if baseline is not None and baseline not in BASELINES:
            raise GantkError(f"unknown baseline {baseline!r}; choose {', '.join(BASELINES)}")
        assert baseline is not None and fit is not None
        if tta:
            raise GantkError("--tta is for trained attributors; leave it out with --baseline")
        method = lib.BaselineMethod(baseline, fit, resolution, output.warn, seed)
    mine = ours = None  # every image, read at once
    if split:
        from gantk.attribution.data import image_count

        ours = part.part(range(image_count(images, evaluate)[0]))  # the shard's images
        mine = ranks.part(ours)  # this process's
    failed = None
    try:
        data = lib.read_for(method, images, evaluate, output.warn, mine)
    except Exception as exc:  # every process stops alike, with the one error
        failed = exc
    ranks.all_succeed(failed)
    results = lib.evaluate_runs(method, data, runs, seed, evaluate, ranks)
    filenames = [name for share in ranks.gather(data.filenames) for name in share]
    _show(output, method, results, evaluate)
    first = results[runs[0]]
    if predictions is not None and ranks.main:  # rank 0 writes what every process found
        lib.write_predictions(predictions, filenames, first["prediction"], method.class_names,
                              force)  # fmt: skip
    if confusion is not None and ranks.main:
        lib.write_confusion(confusion, first["report"], f"{method.name}, {runs[0]}", force)
    if visualize is not None:
        lib.write_visualization(method, data, visualize, force)
    output.result({
        "method": method.name,
        "classes": method.class_names,
        "images": len(filenames),
        **({"part": {"shard": str(part), "images": [ours.start, ours.stop]}}
           if ours is not None and not part.whole else {}),
        "results": {name: r["report"] for name, r in results.items()},
        **({"predictions": str(predictions)} if predictions else {}),
    })  # fmt: skip


def _show(output: Output, method, results: dict, evaluate: bool) -> None:
    if not evaluate:
        counts = {}
        for name, r in results.items():
            predicted = r["prediction"].predicted
            counts[name] = [int((predicted == i).sum()) for i in range(len(method.class_names))]
        output.table(
            f"{method.name}: predicted sources",
            ["attack", *method.class_names],
            [[name, *row] for name, row in counts.items()],
        )
        return
    rows = []
    for name, r in results.items():
        rep = r["report"]
        rvf = rep.get("real_vs_fake") or {}
        ap = rvf.get("average_precision")
        rows.append([
            name, f"{rep['accuracy']:.4f}",
            f"{rep['fd_ratio']:.2f}" if rep.get("fd_ratio") is not None else None,
            f"{rvf['accuracy']:.4f}" if rvf else None, f"{ap:.4f}" if ap is not None else None,
            " ".join(f"{v:.2f}" if v is not None else "-"
                     for v in rep["per_class_accuracy"].values()),
        ])  # fmt: skip
    output.table(
        f"{method.name} on {', '.join(method.class_names)}",
        ["attack", "accuracy", "FD ratio", "real/fake acc", "real/fake AP", "per class"],
        rows,
    )
