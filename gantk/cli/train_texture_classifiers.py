"""``gantk train texture-classifiers``: the seam and repetition classifiers of CSS and CRS."""

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
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    handle_errors,
    resolve_device,
    set_threads,
)

LOG_EVERY = 50  # steps between progress-bar loss updates


@handle_errors
def command(
    data: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="TEXTURES",
            help="Training textures: folder, image file or builtin:textures (those the Texture "
            "Mixer was trained on).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        WRITES,
        typer.Option(
            "--out", "-o", help="The classifiers file to write (.safetensors).", show_default=False
        ),
    ],
    resolution: Annotated[
        int,
        typer.Option(
            "--resolution",
            "-r",
            help="R, the resolution of the Texture Mixer to evaluate: the seam classifier "
            "sees R x R crops, the repetition classifier R x 2R (the thesis: 128).",
        ),
    ] = 64,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 3000,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=2, help="Examples per step and classifier, half real."),
    ] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 0.002,
    channels: Annotated[
        int, typer.Option("--channels", min=1, help="Width at full resolution, doubled per level.")
    ] = 8,
    max_channels: Annotated[
        int, typer.Option("--max-channels", min=1, help="Width cap of the deeper levels.")
    ] = 64,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Rows of the images used: train (the top 75%, what `gantk train texture` "
            "trains on) or all.",
        ),
    ] = "train",
    heldout: Annotated[
        str | None,
        READS,
        typer.Option(
            "--heldout",
            help="Textures never trained on to measure the accuracies on (default: fresh "
            "crops of TEXTURES).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the seam and repetition classifiers of `gantk evaluate texture`'s CSS and CRS
    (Texture Mixer, thesis §3.4.2): real crops of TEXTURES against two textures concatenated
    (a vertical seam) and against an R x R crop tiled twice. The network is the Mixer's critic,
    narrower, with a logistic loss; crops are augmented as the Mixer's. Writes both into one
    float16 file (kind texture-classifiers) with the accuracies measured after training.

    Example: gantk train texture-classifiers data/training/texture-train --heldout
    data/training/texture-heldout --out classifiers.safetensors
    """
    import json

    from gantk.errors import GantkError
    from gantk.io.atomic import check_output
    from gantk.texture import classifiers as tc
    from gantk.texture.data import load_texture_sources

    if split not in ("train", "all"):
        raise GantkError(f"--split {split!r} is not train or all")
    check_output(out, force)
    set_threads(threads)
    dev = resolve_device(device)
    config = tc.TextureClassifiersConfig(resolution, channels, max_channels).validate()
    train = tc.ClassifierTrainConfig(steps, batch_size, lr, seed).validate()
    output = Output(quiet, as_json)
    sources = load_texture_sources(data, split)
    eval_sources = load_texture_sources(heldout, "all") if heldout else None
    with output.progress(steps, "training") as advance:

        def on_step(step: int, losses: dict[str, float]) -> None:
            status = None
            if step % LOG_EVERY == 0 or step == steps:
                status = " ".join(f"{name} {loss:.3f}" for name, loss in losses.items())
            advance(1, status)

        model, report = tc.train_texture_classifiers(sources, config, train, dev, on_step,
                                                     eval_sources)  # fmt: skip
    if report["skipped_textures"]:
        output.warn(
            f"{report['skipped_textures']} textures smaller than {2 * resolution} px were "
            f"left out (the repetition classifier's real crops are {resolution}x{2 * resolution})"
        )
    metadata = {
        "gantk.data": data,
        "gantk.steps": str(steps),
        "gantk.accuracy": json.dumps({"eval_on": report["eval_on"], **report["accuracy"]}),
    }
    tc.save_texture_classifiers(out, model, metadata, force)
    output.table(
        f"texture classifiers: {steps} steps on {report['textures']} textures, "
        f"{report['seconds']:.0f} s; checked on {report['eval_on']}",
        ["classifier", "accuracy", "P(positive) on real", "P(positive) on positives"],
        [
            [name, f"{a['accuracy']:.3f}", f"{a['p_real']:.3f}", f"{a['p_positive']:.3f}"]
            for name, a in report["accuracy"].items()
        ],
    )
    output.say(f"saved {out}")
    output.result({"out": str(out), "config": vars(config), **report})
