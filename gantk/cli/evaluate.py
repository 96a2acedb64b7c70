"""``gantk evaluate``: distribution and perceptual metrics for image sets and generators."""

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    ResolutionOpt,
    SeedOpt,
    handle_errors,
)
from gantk.cli.texture import GramNetOpt, GramWeightsOpt

app = typer.Typer(
    help="Metrics for generated images: FID, KID, precision/recall, LPIPS, IvOM, SWD, "
    "Stacked-MNIST mode coverage, FDDF and texture interpolation (SPD, CGD, CCD, CSWD).\n\n"
    "An image SET is a folder, an .h5 pack, builtin:NAME, or a generator checkpoint (sampled "
    "on the fly with seeds SEED…SEED+n-1); for FID also a statistics file written by "
    "--save-stats. Standard weights are never downloaded: see `gantk info` for where they are "
    "looked up.",
    no_args_is_help=True,
)

SetArg = Annotated[
    str,
    typer.Argument(
        metavar="SET",
        help="Folder, .h5, builtin:NAME, generator .safetensors (or stats .npz for FID).",
        show_default=False,
    ),
]
CountOpt = Annotated[
    int | None,
    typer.Option(
        "-n", "--count", min=2, help="Images per set (generators: default 10000; datasets: all)."
    ),
]
FeaturesOpt = Annotated[
    str | None,
    typer.Option(
        "--features",
        help="Feature network: inception, vgg16, random-inception, random-vgg16 "
        "(default: the metric's standard one).",
    ),
]
InceptionWeightsOpt = Annotated[
    Path | None,
    typer.Option("--inception-weights", help="Path of pt_inception-2015-12-05-6726825d.pth."),
]
VggWeightsOpt = Annotated[
    Path | None, typer.Option("--vgg-weights", help="Path of vgg16-397923af.pth.")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Data loading processes.")]
TruncOpt = Annotated[
    float, typer.Option("--truncation", help="Truncation psi when sampling a generator.")
]


def _is_path(spec: str) -> bool:
    return not spec.startswith("builtin:")


def _weights_for(features: str, inception: Path | None, vgg: Path | None) -> Path | None:
    return inception if features.endswith("inception") else vgg


def _distribution(
    metrics: list[str],
    set_a: str,
    set_b: str | None,
    count: int | None,
    features: str | None,
    inception_weights: Path | None,
    vgg_weights: Path | None,
    save_stats: Path | None,
    resolution: int | None,
    batch_size: int,
    workers: int,
    device: str,
    seed: int,
    truncation: float,
    kid_subsets: int,
    kid_subset_size: int,
    k: int,
    force: bool,
    out: Output,
    subset: list[str] | None = None,
    attributes: Path | None = None,
) -> dict:
    """FID / KID / precision-recall with one feature pass per set and network; ``subset``
    restricts dataset sets to images with those attributes (e.g. a minority group)."""
    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.io.atomic import check_output
    from gantk.metrics import distribution as dist
    from gantk.metrics.features import STANDARD_FOR, load_feature_net, metric_name
    from gantk.metrics.sources import open_source
    from gantk.metrics.sources import save_stats as write_stats

    dev = resolve_device(device)
    if save_stats is not None:
        check_output(save_stats, force, [s for s in (set_a, set_b) if s and _is_path(s)])
    chosen = {m: features or STANDARD_FOR[m] for m in metrics}
    nets = {
        name: load_feature_net(name, _weights_for(name, inception_weights, vgg_weights), dev)
        for name in sorted(set(chosen.values()))
    }
    keep = sorted({chosen[m] for m in metrics if m in ("kid", "pr")})
    sources = [
        open_source(s, count, resolution, seed, truncation, dev, subset, attributes)
        for s in ([set_a] if set_b is None else [set_a, set_b])
    ]
    passes = []
    for src in sources:
        if src.kind == "stats":
            missing = [n for n in nets if n not in src.stats]
            if keep:
                raise GantkError(
                    f"{src.spec} holds statistics only; KID and precision/recall "
                    "need the images: give the image set instead"
                )
            if missing:
                raise GantkError(
                    f"{src.spec} holds statistics of {', '.join(src.stats)} features, not "
                    f"{', '.join(missing)}; use --features {next(iter(src.stats))} or "
                    "recompute the statistics"
                )
            passes.append((src.stats, {}))
            continue
        with out.progress(src.count, f"features of {src.spec}") as advance:
            passes.append(
                dist.feature_pass(src, list(nets.values()), keep, batch_size, workers, advance)
            )
    summary: dict = {
        "sets": [
            {"set": s.spec, "kind": s.kind, "count": s.count, "resolution": s.resolution}
            for s in sources
        ],
        "features": {n: {"network": n, "weights": net.weights} for n, net in nets.items()},
    }
    if save_stats is not None:
        write_stats(save_stats, sources[0], passes[0][0], force)
        summary["saved_stats"] = str(save_stats)
    if set_b is None:
        return summary
    resolutions = {s.resolution for s in sources if s.resolution}
    if len(resolutions) > 1:
        summary["note"] = (
            "the sets have different resolutions "
            f"({', '.join(str(r) for r in sorted(resolutions))} px); the feature "
            "network resizes both to its input size"
        )
    (stats_a, feats_a), (stats_b, feats_b) = passes
    values: dict = {}
    for metric in metrics:
        net = chosen[metric]
        name = metric_name(metric, net)
        if metric == "fid":
            values[name] = dist.fid(stats_a[net], stats_b[net])
        elif metric == "kid":
            mean, std = dist.kid(feats_a[net], feats_b[net], kid_subsets, kid_subset_size, seed)
            values[name], values[name + "_std"] = mean, std
        elif metric == "pr":
            p, r = dist.precision_recall(feats_a[net], feats_b[net], k)
            values[metric_name("precision", net) if net != "vgg16" else "precision"] = p
            values[metric_name("recall", net) if net != "vgg16" else "recall"] = r
    summary["metrics"] = values
    return summary


def _report(out: Output, title: str, summary: dict) -> None:
    rows = [[k, f"{v:.6g}"] for k, v in summary.get("metrics", {}).items()]
    rows += [
        [f"set {i + 1}", f"{s['set']} ({s['count']} images, {s['kind']})"]
        for i, s in enumerate(summary.get("sets", []))
    ]
    if "note" in summary:
        rows.append(["note", summary["note"]])
    if "saved_stats" in summary:
        rows.append(["statistics saved to", summary["saved_stats"]])
    out.table(title, ["", ""], rows)
    out.result(summary)


SubsetOpt = Annotated[
    str | None,
    typer.Option(
        "--subset",
        help="Only the images of dataset sets having any of these attributes (comma list, "
        "e.g. Eyeglasses): metrics per subgroup.",
    ),
]
AttributesOpt = Annotated[
    Path | None,
    typer.Option("--attributes", help="CSV filename,attr1,… (0/1) giving the attributes."),
]


def _subset_names(subset: str | None) -> list[str] | None:
    return [a.strip() for a in subset.split(",") if a.strip()] if subset else None


def _distribution_command(metric: str):
    """One command per metric, sharing every option."""

    @handle_errors
    def command(
        set_a: SetArg,
        set_b: Annotated[
            str | None,
            typer.Argument(
                metavar="[SET2]",
                help="Second set (omit with --save-stats to only cache the first).",
                show_default=False,
            ),
        ] = None,
        count: CountOpt = None,
        features: FeaturesOpt = None,
        inception_weights: InceptionWeightsOpt = None,
        vgg_weights: VggWeightsOpt = None,
        save_stats: Annotated[
            Path | None,
            typer.Option(
                "--save-stats", help="Cache the first set's statistics in this .npz (FID)."
            ),
        ] = None,
        resolution: ResolutionOpt = None,
        kid_subsets: Annotated[
            int, typer.Option("--kid-subsets", min=1, help="KID: number of subsets.")
        ] = 100,
        kid_subset_size: Annotated[
            int, typer.Option("--kid-subset-size", min=2, help="KID: images per subset.")
        ] = 1000,
        k: Annotated[
            int, typer.Option("--k", min=1, help="Precision/recall: k of the k-NN balls.")
        ] = 3,
        batch_size: BatchOpt = 50,
        workers: WorkersOpt = 0,
        truncation: TruncOpt = 1.0,
        device: DeviceOpt = "auto",
        seed: SeedOpt = 0,
        force: ForceOpt = False,
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
        metrics: Annotated[
            str,
            typer.Option(
                "--metrics", help="With `all`: comma-separated fid,kid,pr.", hidden=metric != "all"
            ),
        ] = "fid,kid,pr",
        subset: SubsetOpt = None,
        attributes: AttributesOpt = None,
    ) -> None:
        from gantk.errors import GantkError

        out = Output(quiet, as_json)
        chosen = [m.strip() for m in metrics.split(",")] if metric == "all" else [metric]
        unknown = [m for m in chosen if m not in ("fid", "kid", "pr")]
        if unknown:
            raise GantkError(f"--metrics {unknown[0]!r} is not one of fid, kid, pr")
        if metric != "all" and metrics != "fid,kid,pr":
            raise GantkError("--metrics chooses the metrics of `gantk evaluate all`")
        if set_b is None and save_stats is None:
            raise GantkError("give two sets to compare, or one set and --save-stats FILE.npz")
        if save_stats is not None and chosen != ["fid"]:
            raise GantkError("--save-stats caches FID statistics; use it with `gantk evaluate fid`")
        summary = _distribution(
            chosen,
            set_a,
            set_b,
            count,
            features,
            inception_weights,
            vgg_weights,
            save_stats,
            resolution,
            batch_size,
            workers,
            device,
            seed,
            truncation,
            kid_subsets,
            kid_subset_size,
            k,
            force,
            out,
            _subset_names(subset),
            attributes,
        )
        _report(out, metric, summary)

    return command


_HELP = {
    "fid": "Fréchet Inception Distance between two sets (pytorch-fid's InceptionV3, FID "
    "weights).\n\n"
    "Examples: gantk evaluate fid real/ fakes/; gantk evaluate fid runs/x/latest.safetensors "
    "builtin:shapes -n 10000; gantk evaluate fid real/ --save-stats real.npz; "
    "gantk evaluate fid real.npz fakes/",
    "kid": "Kernel Inception Distance (unbiased MMD, cubic polynomial kernel, seeded subsets).",
    "pr": "Improved precision and recall (k-NN balls in VGG16 fc2 features, k=3).",
    "all": "Several distribution metrics with one feature pass per set: --metrics fid,kid,pr.",
}
for _name, _doc in _HELP.items():
    app.command(_name, help=_doc)(_distribution_command(_name))


@app.command("fddf")
@handle_errors
def fddf_command(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN",
            help="A training run folder (uses its latest-state.safetensors).",
            show_default=False,
        ),
    ],
    data: Annotated[
        str,
        typer.Argument(
            metavar="DATA", help="Real images (folder, .h5, builtin:NAME).", show_default=False
        ),
    ],
    count: Annotated[
        int, typer.Option("-n", "--count", min=2, help="Real and generated images.")
    ] = 10000,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """FDDF: Fréchet distance of the discriminator's last-layer features, real vs generated
    (thesis Table 2.2; larger = more distinguishable)."""
    from gantk.cli.common import resolve_device
    from gantk.gan.fddf import fddf
    from gantk.gan.train import load_run_networks
    from gantk.io.datasets import open_dataset

    out = Output(quiet, as_json)
    G, D, config = load_run_networks(run, resolve_device(device))
    dataset = open_dataset(data, resolution=config.network.resolution, allow_upscale=True)
    value = fddf(D, G, dataset, count, batch_size, seed=seed)
    _report(
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


@app.command("modes")
@handle_errors
def modes_command(
    source: Annotated[
        str,
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
    from gantk.metrics.modes import digit_classifier, evaluate_modes

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    model, _ = digit_classifier(dev, classifier)
    with out.progress(count, "classifying") as advance:
        result = evaluate_modes(source, count, batch_size, dev, seed, model, advance)
    rows = [
        ["modes covered", f"{result['modes_covered']} of {result['num_modes']}"],
        ["KL to uniform", f"{result['kl_to_uniform']:.4f}"],
        ["images", result["count"]],
        ["classifier accuracy", f"{result['classifier_test_accuracy']:.4f}"],
    ]
    out.table(f"modes of {source}", ["", ""], rows)
    out.result(result)


LpipsNetOpt = Annotated[str, typer.Option("--net", help="LPIPS backbone: alex or vgg.")]
LpipsWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--lpips-weights",
        help="Path of the backbone's torchvision weights "
        "(alexnet-owt-7be5be79.pth or vgg16-397923af.pth).",
    ),
]


@app.command("lpips")
@handle_errors
def lpips_command(
    set_a: Annotated[
        str,
        typer.Argument(metavar="A", help="Images (folder, .h5, builtin:NAME).", show_default=False),
    ],
    set_b: Annotated[
        str,
        typer.Argument(metavar="B", help="Images paired with A by file name.", show_default=False),
    ],
    net: LpipsNetOpt = "alex",
    lpips_weights: LpipsWeightsOpt = None,
    per_image: Annotated[
        Path | None, typer.Option("--per-image", help="Also write per-image distances to this CSV.")
    ] = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """LPIPS between paired images (same relative file names in A and B): mean, std and
    per-image distances."""
    import csv

    from gantk.cli.common import resolve_device
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.datasets import open_dataset
    from gantk.metrics.lpips_metric import load_lpips, paired_lpips

    out = Output(quiet, as_json)
    if per_image is not None:
        check_output(per_image, force, [s for s in (set_a, set_b) if _is_path(s)])
    dev = resolve_device(device)
    model = load_lpips(net, lpips_weights, dev)
    a, b = open_dataset(set_a), open_dataset(set_b)
    with out.progress(len(a), "lpips") as advance:
        result = paired_lpips(model, a, b, batch_size, dev, advance)
    if per_image is not None:
        with atomic_file(per_image, force) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "lpips"])
            writer.writerows([[r["file"], r["lpips"]] for r in result["per_image"]])
    out.table(
        f"lpips ({result['network']})",
        ["", ""],
        [
            ["mean", f"{result['mean']:.6g}"],
            ["std", f"{result['std']:.6g}"],
            ["pairs", result["count"]],
        ]
        + ([["note", "B resized to A's size"]] if result.get("resized") else []),
    )
    out.result({"metric": result["network"], **result})


@app.command("ivom")
@handle_errors
def ivom_command(
    generator: Annotated[
        Path, typer.Argument(metavar="CKPT", help="Generator checkpoint.", show_default=False)
    ],
    queries: Annotated[
        str,
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
    net: LpipsNetOpt = "alex",
    lpips_weights: LpipsWeightsOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """IvOM: how well the generator can reconstruct each query (optimise z to minimise LPIPS;
    Inclusive GAN). Lower is better; with --attributes, the std of per-attribute means measures
    how evenly groups are covered."""
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
        rows = attribute_rows(data, _subset_names(subset) or [])
        data = Subset(data, rows[:count] if count else rows)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with out.progress(len(images), "ivom") as advance:
        values = ivom(G, images, model, steps, lr, restarts, batch_size, seed, advance)
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
    out.result({"metric": "ivom", "network": f"lpips-{net}", "steps": steps, **summary})


@app.command("swd")
@handle_errors
def swd_command(
    set_a: SetArg,
    set_b: Annotated[str, typer.Argument(metavar="SET2", help="Second set.", show_default=False)],
    count: CountOpt = None,
    resolution: ResolutionOpt = None,
    batch_size: BatchOpt = 64,
    truncation: TruncOpt = 1.0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN protocol), per level
    (x1e3) and averaged. Needs no pretrained network."""
    from gantk.cli.common import resolve_device
    from gantk.metrics.sources import open_source
    from gantk.metrics.swd import swd_images

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    a, b = (open_source(s, count, resolution, seed, truncation, dev) for s in (set_a, set_b))
    result = swd_images(a.batches(batch_size), b.batches(batch_size), seed=seed)
    rows = [[f"{res} px", f"{value:.4g}"] for res, value in result["levels"].items()]
    rows.append(["mean", f"{result['mean']:.4g}"])
    if result.get("resized"):
        rows.append(["note", "SET2 resized to SET's resolution"])
    out.table("swd (x1e3)", ["", ""], rows)
    out.result(
        {
            "metric": "swd",
            "sets": [
                {"set": a.spec, "count": result["count_real"]},
                {"set": b.spec, "count": result["count_fake"]},
            ],
            **result,
        }
    )


@app.command("robustness")
@handle_errors
def robustness_command(
    images: Annotated[
        Path,
        typer.Argument(metavar="IMAGES", help="Folder of fingerprinted images (recursive)."),
    ],
    expect: Annotated[
        str,
        typer.Option(
            "--expect", help="fingerprint.json of the embedding (or its folder), or 0x…/0-1 bits."
        ),
    ],
    decoder: Annotated[
        str, typer.Option("--decoder", help="Stego model (.safetensors) or builtin:stego-100.")
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
        Path | None, typer.Option("--plot", help="Write a PNG of bit accuracy vs strength.")
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
    from gantk.fingerprint.artificial import (
        expected_for,
        load_image,
        read_expectation,
        resolve_model,
        to_tensor,
    )
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
    expected, _ = read_expectation(expect, n, dec.config.resolution)
    tensors, targets = [], []
    for path in paths:
        target = expected_for(expected, str(path.relative_to(images)))
        if target is None:
            continue  # not an image the record knows (per-image maps only)
        tensors.append(to_tensor(load_image(path).rgb))
        targets.append(target)
    if not tensors:
        raise GantkError(f"no image in {images} is listed in the record's fingerprint map")
    steps = sum(len(SWEEPS[name]) for name in names)
    with out.progress(steps, "perturbing") as advance:
        rows = image_sweep(tensors, np.stack(targets), dec, names, fpr, seed, advance)
    if generator is not None:
        if not isinstance(expected, np.ndarray):
            raise GantkError("--generator needs one fingerprint in --expect, not a per-image map")
        with out.progress(12, "perturbing the generator") as advance:
            rows += model_sweep(generator, expected, dec, count, fpr, seed, dev, advance)
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
                "rows": rows})  # fmt: skip


@app.command("secrecy")
@handle_errors
def secrecy_command(
    marked: Annotated[
        Path, typer.Argument(metavar="FINGERPRINTED", help="The owner's fingerprinted images.")
    ],
    clean: Annotated[
        Path,
        typer.Argument(
            metavar="CLEAN", help="Clean images of the same kind (half build the attack's set)."
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
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """ATS attack on fingerprint secrecy: an SVM trained to spot images fingerprinted by the
    attacker's own encoder tries to spot the owner's. Accuracy near 0.5 means secret."""
    from gantk.errors import GantkError
    from gantk.fingerprint.artificial import load_image, resolve_model, to_tensor
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
    owner = [to_tensor(load_image(p).rgb) for p in list_images(marked)[:count]]
    plain = [to_tensor(load_image(p).rgb) for p in list_images(clean)[:count]]
    result = ats_attack(owner, plain, attacker, seed)
    out.table(
        "secrecy (ATS attack)",
        ["item", "value"],
        [
            [k.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else v]
            for k, v in result.items()
        ],
    )
    out.result(result)


@app.command("scalable")
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
        Path | None, typer.Option("--plot", help="Write a PNG of bit accuracy vs perturbation.")
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
    from gantk.fingerprint import scalable_eval as ev
    from gantk.fingerprint.artificial import to_tensor
    from gantk.fingerprint.robustness import plot
    from gantk.gan.scalable import BitDecoder, load_fingerprinted
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


TEXTURE_METHODS = ("ours", "alpha")
SAMPLE_STRIPS = 4  # pairs shown by --samples


@app.command("texture")
@handle_errors
def texture_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="Texture Mixer model (.safetensors of `gantk train texture`) or "
            "builtin:texture-mixer.",
            show_default=False,
        ),
    ],
    textures: Annotated[
        str,
        typer.Argument(
            metavar="TEST_TEXTURES",
            help="Test textures: a folder, one image, builtin:textures (?sources=a,b picks "
            "some) or builtin:NAME.",
            show_default=False,
        ),
    ],
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma list: ours (the model's latent interpolation), alpha (pixel "
            "alpha-blending baseline).",
        ),
    ] = "ours,alpha",
    pairs: Annotated[
        int, typer.Option("--pairs", min=1, help="Texture pairs, i.e. strips per method.")
    ] = 50,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Rows of the test images used: auto (test for builtin: sets, whose top 75% "
            "trains the bundled model; all for files), train, test or all.",
        ),
    ] = "auto",
    gram_net: GramNetOpt = "auto",
    gram_weights: GramWeightsOpt = None,
    lpips_net: Annotated[
        str,
        typer.Option(
            "--lpips-net",
            help="LPIPS of SPD: alex, vgg, random-alex, random-vgg, or auto (alex when its "
            "weight file is found).",
        ),
    ] = "auto",
    lpips_weights: LpipsWeightsOpt = None,
    samples: Annotated[
        Path | None,
        typer.Option(
            "--samples",
            help=f"Write a PNG of the first {SAMPLE_STRIPS} pairs' strips, one row per pair "
            "and method.",
        ),
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Texture interpolation metrics (Texture Mixer, thesis Table 3.1): for --pairs pairs of
    test textures, an R x 8R strip per method (R = the model's resolution), scored by SPD
    (LPIPS of the ends vs the textures), CGD and CCD (Gram-matrix centrality and direction of
    the central crop), CSWD (SWD x1e3 of central crops vs real crops) and seconds per strip.

    Example: gantk evaluate texture builtin:texture-mixer builtin:textures --pairs 50
    """
    import itertools

    import torch

    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import make_grid, save_image
    from gantk.io.weights import locate
    from gantk.metrics import texture as tm
    from gantk.metrics.lpips_metric import TRUNK_WEIGHTS, network_name
    from gantk.texture.data import SPLITS, load_texture_sources
    from gantk.texture.gram import load_gram_net
    from gantk.texture.mixing import Mixer, to_uint8
    from gantk.texture.train import load_texture_mixer

    chosen = list(dict.fromkeys(m.strip() for m in methods.split(",") if m.strip()))
    unknown = [m for m in chosen if m not in TEXTURE_METHODS] or ([] if chosen else [methods])
    if unknown:
        raise GantkError(
            f"--methods {unknown[0]!r} is not one of {', '.join(TEXTURE_METHODS)}; "
            "give a comma list of them"
        )
    if split not in ("auto", *SPLITS):
        raise GantkError(f"--split {split!r} is not one of auto, {', '.join(SPLITS)}")
    if split == "auto":
        split = "test" if textures.startswith("builtin:") else "all"
    if samples is not None:
        check_output(samples, force, [s for s in (model, textures) if _is_path(s)])
    out = Output(quiet, as_json)
    dev = resolve_device(device)
    mixer_model = load_texture_mixer(model, dev)
    size = mixer_model.config.resolution
    sources = load_texture_sources(textures, split)
    pair_list, real = tm.sample_pairs(sources, size, pairs, seed, split)
    pair_list = [(left.to(dev), right.to(dev)) for left, right in pair_list]
    lpips_model = tm.load_texture_lpips(lpips_net, lpips_weights, dev)
    gram = load_gram_net(gram_net, gram_weights, dev)
    lpips_name = network_name(lpips_model)
    for asked, used, what in ((gram_net, gram.name, "cgd"), (lpips_net, lpips_name, "spd")):
        if asked == "auto" and used.startswith("random-"):
            out.warn(
                f"standard weights not found, so {what}{'/ccd' if what == 'cgd' else ''} use "
                f"{used} (reported as {what}[{used}]): not comparable with published numbers"
            )

    mixer = Mixer(mixer_model, shuffle=True)
    # One latent cell covers this many pixels: the period at which grid lines would show.
    cell_period = size // mixer_model.config.latent_size
    seeds = itertools.count(seed)  # every strip its own shuffle, the same on every run

    def ours(left: torch.Tensor, right: torch.Tensor, length: int) -> torch.Tensor:
        return mixer.strip([left, right], length, seed=next(seeds))

    runners = {"ours": ours, "alpha": tm.alpha_blend_strip}
    keep = min(SAMPLE_STRIPS, pairs) if samples is not None else 0
    shown: dict[str, list] = {name: [] for name in chosen}
    results: dict[str, dict] = {}
    with out.progress(pairs * len(chosen), "strips") as advance:
        for name in chosen:

            def seen(index: int, strip: torch.Tensor, name: str = name) -> None:
                if index < keep:
                    shown[name].append(to_uint8(strip))
                advance(1)

            result = tm.evaluate_interpolation(
                runners[name], pair_list, real, gram, lpips_model, on_strip=seen, swd_seed=seed,
                grid_period=cell_period,
            )  # fmt: skip
            results[name] = result["metrics"]
    length = tm.LENGTH_FACTOR * size
    names = tm.metric_names(gram.name, lpips_name)

    def cell(values: dict, key: str) -> str:
        name = names[key]
        if name + "_std" in values:
            return f"{values[name]:.4g} ± {values[name + '_std']:.2g}"
        return f"{values[name]:.4g}"

    out.table(
        f"texture interpolation: {pairs} pairs, {size}x{length} strips, {len(sources)} "
        f"textures ({split} split)",
        ["metric", *chosen],
        [[names[key], *[cell(results[m], key) for m in chosen]] for key in tm.METRICS]
        + [[f"grid@{cell_period}px", *[f"{results[m]['grid']:.3g}" for m in chosen]]]
        + [["grid of real crops", *[f"{results[m]['grid_real']:.3g}" for m in chosen]]],
    )
    if samples is not None:
        strips = [shown[name][i] for i in range(keep) for name in chosen]
        with atomic_file(samples, force) as tmp:
            save_image(make_grid(strips, cols=1), tmp, named_as=samples)
        out.say(f"samples: {samples} (rows: pair 1 {', '.join(chosen)}; pair 2 …)")
    lpips_file = None
    if not lpips_name.startswith("random-"):
        key = TRUNK_WEIGHTS[lpips_name.removeprefix("lpips-")]
        lpips_file = str(lpips_weights) if lpips_weights else str(locate(key))
    summary: dict = {
        "metric": "texture-interpolation",
        "model": model,
        "resolution": size,
        "model_gram_net": getattr(mixer_model, "gram_net", None),
        "test_textures": textures,
        "split": split,
        "textures": [s.name for s in sources],
        "pairs": pairs,
        "strip": [size, length],
        "seed": seed,
        "networks": {
            "gram": {"network": gram.name, "weights": gram.path},
            "lpips": {"network": lpips_name, "weights": lpips_file},
        },
        "metrics": [names[key] for key in tm.METRICS] + ["grid", "grid_real"],
        "grid_period_px": cell_period,
        "methods": results,
    }
    if samples is not None:
        summary["samples"] = str(samples)
    out.result(summary)
