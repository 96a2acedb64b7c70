"""``gantk generate``: images, grids and latent walks from a trained generator."""

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
    QuietOpt,
    SeedOpt,
    handle_errors,
)

DEFAULT_COUNT = 16


@handle_errors
def generate(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CKPT",
            help="A generator checkpoint (e.g. runs/x/latest.safetensors).",
            show_default=False,
        ),
    ],
    count: Annotated[
        int | None,
        typer.Option(
            "-n", "--count", min=1, help="Number of images (seeds SEED … SEED+n-1; default 16)."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Explicit seeds instead of -n, e.g. 0-99,120.")
    ] = None,
    out: Annotated[
        Path | None,
        WRITES,
        typer.Option(
            "--out", "-o", help="Folder of PNGs, or with --interpolate a .gif or a frames folder."
        ),
    ] = None,
    grid: Annotated[
        Path | None,
        WRITES,
        typer.Option("--grid", help="Write one grid image here (rows x cols images)."),
    ] = None,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Grid rows.")] = 8,
    cols: Annotated[int, typer.Option("--cols", min=1, help="Grid columns.")] = 8,
    interpolate: Annotated[
        int | None,
        typer.Option("--interpolate", min=2, help="Latent walk through this many keyframes."),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Frames between keyframes of --interpolate.")
    ] = 30,
    fps: Annotated[int, typer.Option("--fps", min=1, help="GIF frame rate.")] = 24,
    truncation: Annotated[
        float,
        typer.Option(
            "--truncation",
            "--psi",
            help="Truncation psi (1: none; 0.7 trades variety for quality).",
        ),
    ] = 1.0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 32,
    label: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="The class to draw, for class-conditional models: a class name stored in the "
            "checkpoint (as `train gan --cond` names them) or an index from 0.",
        ),
    ] = None,
    latents: Annotated[
        Path | None,
        typer.Option(
            "--latents",
            help="Render the projections in this latents file of `gantk project` (styles and "
            "noise maps) into --out as NAME.png, instead of random seeds.",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate images with a trained GAN generator.

    Image i uses the latent of seed SEED+i, so any image can be regenerated alone.
    Examples: gantk generate runs/x/latest.safetensors -n 1000 --out fakes/ --truncation 0.7;
    --grid grid.png --rows 8 --cols 8; --interpolate 4 --steps 30 --out walk.gif
    """
    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.gan.generate import (
        class_index,
        load_generator,
        parse_seeds,
        write_grid,
        write_images,
        write_interpolation,
    )
    from gantk.gan.projector import render_latents
    from gantk.io.atomic import check_output
    from gantk.io.limits import check_count

    output = Output(quiet, as_json)
    if seeds is not None and count is not None:
        raise GantkError("--seeds and -n both say which images to make; give one of them")
    count = check_count("-n", count if count is not None else DEFAULT_COUNT, "use a smaller -n")
    if grid is not None:
        check_count(f"--rows {rows} --cols {cols}", rows * cols, "draw a smaller grid")
    if interpolate is not None:
        check_count(f"--interpolate {interpolate} --steps {steps}", interpolate * steps,
                    "use fewer keyframes or steps", noun="frames")  # fmt: skip
    if out is None and grid is None:
        raise GantkError(
            "say where to write: --out FOLDER (or .gif with --interpolate) and/or --grid FILE.png"
        )
    if interpolate is not None and out is None:
        raise GantkError("--interpolate writes to --out (a .gif file or a frames folder)")
    for target in (out, grid):
        if target is not None:
            check_output(target, force, [checkpoint])
    if out is not None and grid is not None:
        check_output(grid, True, [out])  # the grid may not go into (or be) the images' folder
    if latents is not None:
        if out is None or grid is not None or interpolate is not None or label is not None:
            raise GantkError("--latents renders into --out FOLDER; drop --grid, --interpolate "
                             "and --class")  # fmt: skip
        check_output(out, force, [checkpoint, latents])
        G = load_generator(checkpoint, resolve_device(device))
        count = render_latents(G, str(latents), out, force)
        output.say(f"rendered {count} projections to {out}")
        output.result({"checkpoint": str(checkpoint), "latents": str(latents), "out": str(out),
                       "images": count})  # fmt: skip
        return
    G = load_generator(checkpoint, resolve_device(device))
    label = class_index(G, label)
    summary: dict = {"checkpoint": str(checkpoint), "truncation": truncation}
    if out is not None:
        if interpolate is not None:
            first = list(range(seed, seed + interpolate))
            keys = parse_seeds(seeds) if seeds is not None else first
            frames = write_interpolation(G, keys, steps, out, truncation, fps, force, label)
            summary.update(interpolation=str(out), frames=frames, keyframes=keys)
            output.say(f"wrote a {frames}-frame latent walk to {out}")
        else:
            chosen = parse_seeds(seeds) if seeds is not None else list(range(seed, seed + count))
            with output.progress(len(chosen), "generating") as advance:
                names = write_images(G, chosen, out, truncation, batch_size, force, advance,
                                     label)  # fmt: skip
            summary.update(out=str(out), images=len(names), seeds=[chosen[0], chosen[-1]])
            output.say(f"wrote {len(names)} images to {out}")
    if grid is not None:
        grid_seeds = (
            parse_seeds(seeds)[: rows * cols]
            if seeds is not None
            else list(range(seed, seed + rows * cols))
        )
        write_grid(G, grid_seeds, grid, cols, truncation, batch_size, force, label)
        summary.update(grid=str(grid), rows=-(-len(grid_seeds) // cols), cols=cols)
        output.say(f"wrote a grid to {grid}")
    output.result(summary)
