"""``gantk evaluate fddf|modes|ivom``: metrics of a trained GAN (discriminator features, mode
coverage, inversion of the generator)."""

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    READS,
    DeviceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    SeedOpt,
    handle_errors,
)
from gantk.cli.evaluate_common import (
    BatchOpt,
    LpipsWeightsOpt,
    SubsetOpt,
    report_metrics,
    subset_names,
)
from gantk.errors import GantkError


def _checkpoint_pair(generator: Path, discriminator: Path | None, device: str):
    from gantk.gan.generate import load_generator
    from gantk.gan.nvidia import load_discriminator

    if discriminator is None:
        raise GantkError(
            f"{generator} is a generator checkpoint: FDDF also needs its discriminator, "
            "--discriminator D.safetensors (gantk convert MODEL.pkl --discriminator ...)"
        )
    G, D = load_generator(generator, device), load_discriminator(discriminator, device)
    if D.config != G.config:
        raise GantkError(f"{discriminator} is not the discriminator of {generator}")
    return G, D


@handle_errors
def fddf_command(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN",
            help="A training run folder (uses its latest-state.safetensors), or a generator "
            "checkpoint with --discriminator (e.g. from `gantk convert`).",
            show_default=False,
        ),
    ],
    data: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="DATA", help="Real images (folder, .h5, builtin:NAME).", show_default=False
        ),
    ],
    count: Annotated[
        int, typer.Option("-n", "--count", min=2, help="Real and generated images.")
    ] = 10000,
    batch_size: BatchOpt = 64,
    discriminator: Annotated[
        Path | None,
        typer.Option("--discriminator", help="The discriminator, when RUN is a checkpoint."),
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """FDDF: Fréchet distance of the discriminator's last-layer features, real vs generated
    (thesis Table 2.2; larger = more distinguishable)."""
    from gantk.cli.common import resolve_device
    from gantk.gan.fddf import fddf
    from gantk.gan.run import load_run_networks
    from gantk.io.datasets import open_dataset

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    if run.is_file():
        G, D = _checkpoint_pair(run, discriminator, dev)
        resolution = G.config.resolution
    else:
        if discriminator is not None:
            raise GantkError("--discriminator goes with a generator checkpoint; RUN is a folder")
        G, D, config = load_run_networks(run, dev)
        resolution = config.network.resolution
    dataset = open_dataset(data, resolution=resolution, allow_upscale=True)
    value = fddf(D, G, dataset, count, batch_size, seed=seed)
    report_metrics(
        out,
        "fddf",
        {
            "metrics": {"fddf": value},
            "run": str(run),
            "sets": [
                {"set": data, "kind": "dataset", "count": count},
                {"set": str(run), "kind": "generator", "count": count},
            ],
        },
    )


@handle_errors
def modes_command(
    source: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="SET",
            help="A generator checkpoint trained on builtin:stacked-digits, or a dataset.",
            show_default=False,
        ),
    ],
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="Images to classify.")] = 24000,
    classifier: Annotated[
        Path | None,
        typer.Option(
            "--classifier",
            help="Digit classifier checkpoint (default: the cached one, trained on first use).",
        ),
    ] = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stacked-MNIST mode coverage: modes covered (of 1000) and KL to uniform (Table 7.1).

    Each channel is classified by a digit classifier trained by gantk on builtin:digits
    (cached in $GANTK_CACHE_DIR, default ~/.cache/gantk; its held-out accuracy is reported).
    KL is KL(p_hat || uniform), biased upward for small -n: compare at equal counts.
    """
    from gantk.cli.common import resolve_device
    from gantk.gan.generate import open_sampler
    from gantk.metrics.modes import digit_classifier, evaluate_modes

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    model, _ = digit_classifier(dev, classifier)
    with out.progress(count, "classifying") as advance:
        result = evaluate_modes(source, count, batch_size, dev, seed, model, advance, open_sampler)
    rows = [
        ["modes covered", f"{result['modes_covered']} of {result['num_modes']}"],
        ["KL to uniform", f"{result['kl_to_uniform']:.4f}"],
        ["images", result["count"]],
        ["classifier accuracy", f"{result['classifier_test_accuracy']:.4f}"],
    ]
    out.table(f"modes of {source}", ["", ""], rows)
    out.result(result)


@handle_errors
def ivom_command(
    generator: Annotated[
        Path, typer.Argument(metavar="CKPT", help="Generator checkpoint.", show_default=False)
    ],
    queries: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="QUERIES",
            help="Real images to reconstruct (folder, .h5, builtin:NAME).",
            show_default=False,
        ),
    ],
    attributes: Annotated[
        Path | None,
        typer.Option(
            "--attributes",
            help="CSV filename,attr... (0/1): also report per-attribute IvOM and its std.",
        ),
    ] = None,
    subset: SubsetOpt = None,
    count: Annotated[
        int | None, typer.Option("-n", "--count", min=1, help="Use the first n queries.")
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=0, help="Adam steps per query (authors: 400).")
    ] = 400,
    lr: Annotated[
        float, typer.Option("--lr", help="Adam learning rate on z (authors: 0.1).")
    ] = 0.1,
    restarts: Annotated[
        int, typer.Option("--restarts", min=1, help="Random starts per query; the best counts.")
    ] = 1,
    schedule: Annotated[
        str,
        typer.Option(
            "--schedule",
            help="authors: the Inclusive GAN projector (learning rate ramped up over 5% of the "
            "steps and cosine-ramped down over the last 25%, latent noise 0.05 decaying to 0 at "
            "75%); constant: a fixed --lr, no latent noise.",
        ),
    ] = "authors",
    net: Annotated[
        str, typer.Option("--net", help="LPIPS backbone: vgg (the authors') or alex.")
    ] = "vgg",
    lpips_weights: LpipsWeightsOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """IvOM: how well the generator can reconstruct each query (optimise z to minimise LPIPS;
    Inclusive GAN). Lower is better; with --attributes, the std of per-attribute means measures
    how evenly groups are covered. Defaults follow the authors' projector (projector_lpips.py):
    VGG-16 LPIPS, 400 Adam steps at 0.1 with its ramps and latent noise."""
    import torch

    from gantk.cli.common import resolve_device
    from gantk.gan.generate import load_generator
    from gantk.io.datasets import Subset, attribute_rows, attributes_file, open_dataset
    from gantk.metrics.ivom import ivom, summarize_ivom
    from gantk.metrics.lpips_metric import load_lpips

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    G = load_generator(generator, dev)
    model = load_lpips(net, lpips_weights, dev)
    data = open_dataset(
        queries,
        resolution=G.config.resolution,
        allow_upscale=True,
        count=None if subset else count,
        attributes_csv=attributes_file(queries, attributes) if subset else attributes,
    )
    if subset:  # the queries of one subgroup (e.g. the minority IMLE was asked to include)
        rows = attribute_rows(data, subset_names(subset) or [])
        data = Subset(data, rows[:count] if count else rows)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with out.progress(len(images), "ivom") as advance:
        values = ivom(
            G, images, model, steps, lr, restarts, batch_size, seed, advance, schedule=schedule
        )
    has_attributes = attributes is not None or (subset and data.attributes is not None)
    summary = summarize_ivom(
        values,
        data.attributes if has_attributes else None,
        data.attribute_names if has_attributes else None,
    )
    rows = [
        ["mean", f"{summary['mean']:.6g}"],
        ["std", f"{summary['std']:.6g}"],
        ["queries", summary["count"]],
    ]
    for name, value in (summary.get("attributes") or {}).items():
        rows.append([f"  {name}", "-" if value is None else f"{value:.6g}"])
    if "attribute_std" in summary:
        rows.append(["attribute std", f"{summary['attribute_std']:.6g}"])
    out.table("ivom", ["", ""], rows)
    out.result({"metric": "ivom", "network": f"lpips-{net}", "steps": steps,
                "schedule": schedule, **summary})  # fmt: skip
