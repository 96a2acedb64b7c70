"""``gantk evaluate fid|kid|pr|prd|all``: distribution metrics sharing one feature pass per set."""

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
    ResolutionOpt,
    SeedOpt,
    ShardOpt,
    handle_errors,
)
from gantk.cli.evaluate_common import (
    BatchOpt,
    CountOpt,
    SetArg,
    SubsetOpt,
    TruncOpt,
    is_path,
    report_metrics,
    subset_names,
)

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
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers", min=0, help="Data loading processes (0: a reader thread beside the network)."
    ),
]


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
    prd_options: dict | None = None,
    shard: str | None = None,
) -> dict:
    """FID / KID / precision-recall / PRD with one feature pass per set and network; ``subset``
    restricts dataset sets to images with those attributes (e.g. a minority group);
    ``prd_options`` are the keyword arguments of PRD (clusters, angles, runs, beta) and its
    ``plot`` path.

    The feature pass is split by whole batches (the images of each batch, and a generator's
    noise seeds, are those of one pass): under torchrun among the processes, whose statistics'
    sums and kept features rank 0 joins; with ``shard`` K/N only part K is computed and its sums
    saved, for ``gantk evaluate merge-stats``."""
    from gantk.cli.common import process_device
    from gantk.errors import GantkError
    from gantk.gan.generate import open_sampler
    from gantk.io.atomic import check_output
    from gantk.metrics import distribution as dist
    from gantk.metrics.features import STANDARD_FOR, load_feature_net, metric_name
    from gantk.metrics.sources import open_source, save_partial_stats
    from gantk.metrics.sources import save_stats as write_stats
    from gantk.nn.distributed import Shard, init_distributed, work_range

    part = Shard.parse(shard)
    dev = process_device(device)
    if save_stats is not None:
        check_output(save_stats, force, [s for s in (set_a, set_b) if s and is_path(s)])
    chosen = {m: features or STANDARD_FOR[m] for m in metrics}
    wanted = sorted(set(chosen.values()))
    keep = sorted({chosen[m] for m in metrics if m in ("kid", "pr", "prd")})
    sources = [
        open_source(s, count, resolution, seed, truncation, dev, subset, attributes, open_sampler)
        for s in ([set_a] if set_b is None else [set_a, set_b])
    ]
    # Statistics files need no network: FID between two of them loads no weights (and so
    # works offline, with no weight file at hand).
    nets = {
        name: load_feature_net(name, _weights_for(name, inception_weights, vgg_weights), dev)
        for name in wanted
        if any(src.kind != "stats" for src in sources)
    }
    if not part.whole and sources[0].kind == "stats":
        raise GantkError(f"{set_a} holds statistics already; --shard splits a set of images")
    ranks = init_distributed(dev)  # the processes of a torchrun job (one without torchrun)
    passes = []
    for src in sources:
        if src.kind == "stats":
            missing = [n for n in wanted if n not in src.stats]
            if keep:
                raise GantkError(
                    f"{src.spec} holds statistics only; KID, precision/recall and PRD "
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
        mine = work_range(src.batch_count(batch_size), part, ranks)
        first, stop = src.items(batch_size, mine)
        failed = None
        with out.progress(stop - first, f"features of {src.spec}") as advance:
            try:
                found = dist.feature_pass(
                    src, list(nets.values()), keep, batch_size, workers, advance, mine
                )
            except Exception as exc:  # every process stops alike, with the one error
                failed = exc
        ranks.all_succeed(failed)
        passes.append(dist.pooled(found, ranks))
    summary: dict = {
        "sets": [
            # count None: statistics that do not record it (pytorch-fid's)
            {"set": s.spec, "kind": s.kind, "count": s.count or None, "resolution": s.resolution}
            for s in sources
        ],
        "features": {
            n: {"network": n, "weights": nets[n].weights if n in nets else "statistics files"}
            for n in wanted
        },
    }
    if save_stats is not None:
        src = sources[0]
        if part.whole and ranks.main:
            write_stats(save_stats, src, passes[0][0], force)
        elif ranks.main:
            items = src.items(batch_size, part.part(range(src.batch_count(batch_size))))
            job = {"set": src.spec, "images": src.count, "resolution": resolution,
                   "batch_size": batch_size, "subset": subset,
                   "attributes": None if attributes is None else str(attributes),
                   **({"seed": seed, "truncation": truncation}
                      if src.kind == "generator" else {})}  # fmt: skip
            save_partial_stats(save_stats, src, passes[0][0], str(part), items, job, force)
            summary["part"] = {"shard": str(part), "images": list(items)}
        summary["saved_stats"] = str(save_stats)
    if set_b is None or not ranks.main:  # the metrics are rank 0's to compute and write
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
        elif metric == "prd":
            summary["prd_curve"] = _prd(feats_a[net], feats_b[net], name, values, prd_options)
    summary["metrics"] = values
    return summary


def _prd(real, fake, name: str, values: dict, options: dict | None) -> dict:
    """PRD of the second set against the first: its F8 / F1/8 summary into ``values``, the
    curve returned (and plotted when ``options["plot"]`` names a PNG)."""
    from gantk.io.atomic import atomic_file
    from gantk.metrics.prd import plot_prd, prd_from_features

    options = dict(options or {})
    plot = options.pop("plot", None)
    force = options.pop("force", False)
    result = prd_from_features(real.double().numpy(), fake.double().numpy(), **options)
    values.update({f"{name}_{key}": value for key, value in result.summary().items()})
    if plot is not None:
        with atomic_file(plot, force) as tmp:
            plot_prd({"set 2 vs set 1": result}, tmp, title=f"{name} (Sajjadi et al. 2018)")
    return {
        "precision": [round(float(v), 6) for v in result.precision],
        "recall": [round(float(v), 6) for v in result.recall],
    }


AttributesOpt = Annotated[
    Path | None,
    typer.Option("--attributes", help="CSV filename,attr1,… (0/1) giving the attributes."),
]


def distribution_command(metric: str):
    """One command per metric, sharing every option."""

    @handle_errors
    def command(
        set_a: SetArg,
        set_b: Annotated[
            str | None,
            READS,
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
            WRITES,
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
        clusters: Annotated[
            int,
            typer.Option(
                "--clusters", help="PRD: k-means clusters.", hidden=metric not in PRD_COMMANDS
            ),
        ] = 20,
        angles: Annotated[
            int,
            typer.Option(
                "--angles", help="PRD: points on the curve.", hidden=metric not in PRD_COMMANDS
            ),
        ] = 1001,
        runs: Annotated[
            int,
            typer.Option(
                "--runs", help="PRD: clusterings averaged.", hidden=metric not in PRD_COMMANDS
            ),
        ] = 10,
        beta: Annotated[
            float,
            typer.Option(
                "--beta",
                help="PRD: summarise by F_beta (recall) and F_1/beta (precision).",
                hidden=metric not in PRD_COMMANDS,
            ),
        ] = 8.0,
        plot: Annotated[
            Path | None,
            WRITES,
            typer.Option(
                "--plot", help="PRD: write the curve as a PNG.", hidden=metric not in PRD_COMMANDS
            ),
        ] = None,
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
        shard: ShardOpt = None,
    ) -> None:
        from gantk.errors import GantkError
        from gantk.nn.distributed import Shard

        out = Output(quiet, as_json)
        chosen = [m.strip() for m in metrics.split(",")] if metric == "all" else [metric]
        unknown = [m for m in chosen if m not in ("fid", "kid", "pr", "prd")]
        if unknown:
            raise GantkError(f"--metrics {unknown[0]!r} is not one of fid, kid, pr, prd")
        if metric != "all" and metrics != "fid,kid,pr":
            raise GantkError("--metrics chooses the metrics of `gantk evaluate all`")
        if set_b is None and save_stats is None:
            raise GantkError("give two sets to compare, or one set and --save-stats FILE.npz")
        if save_stats is not None and chosen != ["fid"]:
            raise GantkError("--save-stats caches FID statistics; use it with `gantk evaluate fid`")
        if not Shard.parse(shard).whole and (set_b is not None or save_stats is None):
            raise GantkError(
                "--shard computes part of one set's FID statistics: give one set and "
                "--save-stats PART.npz, then merge the parts with `gantk evaluate merge-stats` "
                "(KID, precision/recall and PRD need every feature at once: split them with "
                "torchrun instead)"
            )
        if plot is not None:
            if "prd" not in chosen:
                raise GantkError("--plot draws the PRD curve; use it with `gantk evaluate prd`")
            from gantk.io.atomic import check_output

            check_output(plot, force, [s for s in (set_a, set_b) if s and is_path(s)])
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
            subset_names(subset),
            attributes,
            {
                "clusters": clusters,
                "angles": angles,
                "runs": runs,
                "beta": beta,
                "plot": plot,
                "seed": seed,
                "force": force,
            },
            shard,
        )
        if plot is not None:
            summary["plot"] = str(plot)
        report_metrics(out, metric, summary)

    return command


DISTRIBUTION_HELP = {
    "fid": "Fréchet Inception Distance between two sets (pytorch-fid's InceptionV3, FID "
    "weights).\n\n"
    "Examples: gantk evaluate fid real/ fakes/; gantk evaluate fid runs/x/latest.safetensors "
    "builtin:shapes -n 10000; gantk evaluate fid real/ --save-stats real.npz; "
    "gantk evaluate fid real.npz fakes/",
    "kid": "Kernel Inception Distance (unbiased MMD, cubic polynomial kernel, seeded subsets).",
    "pr": "Improved precision and recall (Kynkäänniemi et al. 2019: k-NN balls in VGG16 fc2 "
    "features, k=3).",
    "prd": "Precision and recall for distributions (Sajjadi et al. 2018), the precision/recall "
    "of Inclusive GAN (thesis Tables 7.2-7.3): Inception features of both sets clustered "
    "together by k-means (--clusters 20), the two cluster histograms compared along --angles "
    "1001 slopes, averaged over --runs 10 clusterings; reported as F_8 (recall) and F_1/8 "
    "(precision). SET1 is the reference (real), SET2 the evaluated set (generated); both need "
    "as many images (-n).\n\n"
    "Example: gantk evaluate prd builtin:shapes runs/x/latest.safetensors -n 2000 --plot prd.png",
    "all": "Several distribution metrics with one feature pass per set: --metrics fid,kid,pr,prd.",
}
PRD_COMMANDS = ("prd", "all")


@handle_errors
def merge_stats_command(
    parts: Annotated[
        list[Path],
        typer.Argument(
            metavar="PART.npz...",
            help="The part files of one set, from `gantk evaluate fid SET --shard K/N "
            "--save-stats PART.npz`, one per shard.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, WRITES, typer.Option("--out", "-o", help="The statistics file of the whole set.")
    ],
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Merge the statistics parts of a set computed by N shards (a job array) into the one
    statistics file a single `--save-stats` run writes.

    Each part holds its images' count, sum of features and sum of their outer products; the
    merge adds them, so the mean and covariance (and any FID from them) are the whole set's.
    Every shard of the job must be given, each once.

    Example: gantk evaluate fid real/ --shard $K/4 --save-stats part-$K.npz (K = 0..3), then
    gantk evaluate merge-stats part-*.npz --out real.npz; gantk evaluate fid real.npz fakes/
    """
    from gantk.io.atomic import check_output
    from gantk.metrics.sources import ImageSource, merge_partial_stats, save_stats

    check_output(out, force, inputs=parts)
    output = Output(quiet, as_json)
    source, count, stats = merge_partial_stats(parts)
    save_stats(out, ImageSource(source, "stats", count, None), stats, force)
    summary = {"set": source, "images": count, "parts": len(parts),
               "features": sorted(stats), "saved_stats": str(out)}  # fmt: skip
    output.table(
        "evaluate merge-stats",
        ["", ""],
        [["set", f"{source} ({count} images)"], ["parts", len(parts)],
         ["features", ", ".join(sorted(stats))], ["statistics saved to", str(out)]],
    )  # fmt: skip
    output.result(summary)
