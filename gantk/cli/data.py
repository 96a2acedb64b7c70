"""``gantk data``: built-in datasets, exporting, packing and inspecting image datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import (
    WRITES,
    CountOpt,
    DatasetArg,
    ForceOpt,
    JsonOpt,
    LabelsOpt,
    Output,
    QuietOpt,
    ResizeOpt,
    ResolutionOpt,
    SeedOpt,
    StrictOpt,
    UpscaleOpt,
    handle_errors,
)

app = typer.Typer(
    help="Built-in datasets, exporting, packing and inspecting image datasets.\n\n"
    "A DATASET is a folder of images (recursive; png, jpg, jpeg, webp, bmp, tif), an .h5 pack "
    "written by `gantk data pack`, or builtin:NAME[?option=value&...].",
    no_args_is_help=True,
)


def _open(
    out: Output,
    spec: str,
    resolution: int | None = None,
    labels: bool = False,
    count: int | None = None,
    seed: int | None = None,
    resize: str = "center-crop",
    allow_upscale: bool = False,
    strict: bool = False,
    attributes: Path | None = None,
):
    from gantk.errors import GantkError
    from gantk.io.datasets import open_dataset
    from gantk.io.images import RESIZE_POLICIES

    if resize not in RESIZE_POLICIES:
        raise GantkError(f"--resize {resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
    return open_dataset(
        spec,
        resolution=resolution,
        policy=resize,
        allow_upscale=allow_upscale,
        labeled=labels,
        attributes_csv=attributes,
        strict=strict,
        count=count,
        seed=seed,
        warn=out.warn,
    )


@app.command("list")
@handle_errors
def list_builtins(as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the built-in datasets with their sizes, resolutions, labels and attributes."""
    from dataclasses import asdict

    from gantk.io.builtin import BUILTINS

    out = Output(quiet, as_json)
    out.table(
        "built-in datasets (use as builtin:NAME)",
        ["name", "images", "px", "labels; attributes", "about"],
        [
            [
                i.name,
                i.default_count
                if i.max_count == i.default_count
                else f"{i.default_count} (max {i.max_count})",
                i.default_resolution,
                i.labels + ("" if i.attributes == "-" else f"; {i.attributes}"),
                i.summary + "".join(f"; option {k}={v}" for k, v in i.options.items()),
            ]
            for i in BUILTINS.values()
        ],
    )
    out.result(
        {
            "datasets": [
                {k: v for k, v in asdict(i).items() if k != "builder"} for i in BUILTINS.values()
            ]
        }
    )


@app.command("export")
@handle_errors
def export(
    dataset: DatasetArg,
    out_dir: Annotated[
        Path, WRITES, typer.Argument(metavar="OUT", help="Folder to create.", show_default=False)
    ],
    count: CountOpt = None,
    resolution: ResolutionOpt = None,
    seed: SeedOpt = 0,
    image_format: Annotated[str, typer.Option("--format", help="png, jpg or webp.")] = "png",
    flat: Annotated[
        bool, typer.Option("--flat", help="No class subfolders for labeled data.")
    ] = False,
    labels: LabelsOpt = False,
    resize: ResizeOpt = "center-crop",
    allow_upscale: UpscaleOpt = False,
    strict: StrictOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a dataset out as image files.

    Labeled data goes into one subfolder per class; attributes into OUT/attributes.csv.
    Example: gantk data export builtin:shapes out/shapes -n 2000 --resolution 64
    """
    from gantk.io.atomic import check_output
    from gantk.io.export import export_images

    out = Output(quiet, as_json)
    check_output(out_dir, force, [] if dataset.startswith("builtin:") else [dataset])
    ds = _open(out, dataset, resolution, labels, count, seed, resize, allow_upscale, strict)
    with out.progress(len(ds), "exporting") as advance:
        result = export_images(ds, out_dir, image_format, flat, strict, force, out.warn, advance)
    out.say(
        f"wrote {result.written} images to {out_dir}"
        + (f", skipped {len(result.skipped)}" if result.skipped else "")
    )
    out.result({**vars(result), "dataset": dataset, "resolution": ds.resolution})


@app.command("pack")
@handle_errors
def pack(
    images: DatasetArg,
    out_file: Annotated[
        Path,
        WRITES,
        typer.Argument(metavar="OUT.h5", help="Pack file to create.", show_default=False),
    ],
    resolution: ResolutionOpt = None,
    labels: LabelsOpt = False,
    attributes: Annotated[
        Path | None,
        typer.Option(
            "--attributes", help="CSV 'filename,attr1,...' of 0/1 values to store with the images."
        ),
    ] = None,
    count: CountOpt = None,
    seed: SeedOpt = 0,
    resize: ResizeOpt = "center-crop",
    allow_upscale: UpscaleOpt = False,
    strict: StrictOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pack images into one .h5 file at one resolution, streaming (memory stays flat).

    Corrupt images are skipped with a warning naming them (--strict stops instead).
    Example: gantk data pack images/ packs/faces64.h5 --resolution 64 --labels
    """
    from gantk.errors import GantkError
    from gantk.io.atomic import check_output
    from gantk.io.datasets import is_folder_spec
    from gantk.io.packs import write_pack

    out = Output(quiet, as_json)
    if is_folder_spec(images) and resolution is None:
        raise GantkError("packing a folder needs --resolution (a power of two, e.g. 64)")
    check_output(out_file, force, [] if images.startswith("builtin:") else [images])
    ds = _open(
        out, images, resolution, labels, count, seed, resize, allow_upscale, strict, attributes
    )
    with out.progress(len(ds), "packing") as advance:
        result = write_pack(ds, out_file, True, strict, force, out.warn, advance)
    out.say(
        f"packed {result.written} images at {result.resolution}px into {out_file}"
        + (f", skipped {len(result.skipped)}" if result.skipped else "")
    )
    out.result(vars(result))


@app.command("info")
@handle_errors
def data_info(
    dataset: DatasetArg,
    labels: LabelsOpt = False,
    resolution: ResolutionOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Describe a dataset: image count, resolution, classes and attribute rates."""
    out = Output(quiet, as_json)
    summary = _open(out, dataset, resolution, labels).summary()
    rows = [["images", summary["count"]], ["resolution", summary["resolution"] or "as stored"]]
    if "classes" in summary:
        classes = summary["classes"]
        shown = list(classes.items())[:20]
        rows.append(
            [
                "classes",
                f"{len(classes)}: "
                + ", ".join(f"{k} ({v})" for k, v in shown)
                + (", ..." if len(classes) > len(shown) else ""),
            ]
        )
    if "attributes" in summary:
        rows.append(
            [
                "attributes (rate of 1)",
                ", ".join(f"{k} {v:.3f}" for k, v in summary["attributes"].items()),
            ]
        )
    out.table(dataset, ["", ""], rows)
    out.result(summary)


@app.command("preview")
@handle_errors
def preview(
    dataset: DatasetArg,
    out_file: Annotated[
        Path,
        WRITES,
        typer.Argument(metavar="OUT.png", help="Grid image to write.", show_default=False),
    ],
    rows: Annotated[int, typer.Option("--rows", min=1, help="Grid rows.")] = 8,
    cols: Annotated[int, typer.Option("--cols", min=1, help="Grid columns.")] = 8,
    resolution: ResolutionOpt = None,
    labels: LabelsOpt = False,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a grid of randomly chosen images of a dataset.

    Folders are shown at 64 px unless --resolution is given.
    """
    from gantk.io.atomic import check_output
    from gantk.io.datasets import is_folder_spec
    from gantk.io.export import write_preview

    out = Output(quiet, as_json)
    check_output(out_file, force, [] if dataset.startswith("builtin:") else [dataset])
    if is_folder_spec(dataset) and resolution is None:
        resolution = 64
    ds = _open(out, dataset, resolution, labels, allow_upscale=True)
    result = write_preview(ds, out_file, rows, cols, seed, force)
    out.say(f"wrote a {result['rows']}x{result['cols']} grid to {out_file}")
    out.result(result)
