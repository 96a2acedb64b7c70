"""``gantk evaluate lpips|swd``: perceptual and patch-statistics distances between image sets."""

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    WRITES,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    ResolutionOpt,
    SeedOpt,
    handle_errors,
)
from gantk.cli.evaluate_common import (
    BatchOpt,
    CountOpt,
    LpipsNetOpt,
    LpipsWeightsOpt,
    SetArg,
    TruncOpt,
    is_path,
)


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
        Path | None,
        WRITES,
        typer.Option("--per-image", help="Also write per-image distances to this CSV."),
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
        check_output(per_image, force, [s for s in (set_a, set_b) if is_path(s)])
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
    from gantk.gan.generate import open_sampler
    from gantk.metrics.sources import open_source
    from gantk.metrics.swd import swd_images

    out = Output(quiet, as_json)
    dev = resolve_device(device)
    a, b = (
        open_source(s, count, resolution, seed, truncation, dev, open_generator=open_sampler)
        for s in (set_a, set_b)
    )
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
