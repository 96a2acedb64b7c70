"""Options of the Texture Mixer commands that more than one command shares (`texture-mix`,
`train texture`, `evaluate texture`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Shared by `train texture` and `evaluate texture`.
GramNetOpt = Annotated[
    str,
    typer.Option(
        "--gram-net",
        help="Gram-matrix features: vgg19 (ImageNet weights, vgg19-dcbb9e9d.pth), random-vgg19 "
        "(fixed random weights), or auto (vgg19 when its weight file is found).",
    ),
]
GramWeightsOpt = Annotated[
    Path | None,
    typer.Option("--gram-weights", help="The VGG-19 weight file, instead of the search path."),
]
# Shared by `texture-mix` and `evaluate texture`.
CoverOpt = Annotated[
    str,
    typer.Option(
        "--cover",
        help="How a texture's latent fills the canvas: patches (random patches of it; the "
        "default), rows (the paper's: tiled, rows and columns shuffled) or none (tiled as it "
        "is).",
    ),
]
MixOpt = Annotated[
    str,
    typer.Option(
        "--mix",
        help="How textures meet: select (each point one texture, in organic regions whose "
        "share follows the interpolation weight; the default: on 48 held-out pairs nearer the "
        "textures than blend, docs/models.md) or blend (the paper's weighted average of "
        "latents, which averages textures into grey mush where a small model cannot decode "
        "the average).",
    ),
]
DeblockOpt = Annotated[
    bool,
    typer.Option(
        "--deblock/--no-deblock",
        help="Remove the faint grid the generator draws at its latent-cell period (4 px) by "
        "subtracting the local periodic pattern (the default: on 96 held-out pairs the grid's "
        "power 5.9 -> 0.16 of the neighbouring frequencies', sharpness 0.88 -> 0.86, "
        "docs/models.md). "
        "--no-deblock: the generator's output as it is (the paper's; no such step).",
    ),
]
MixPrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (bf16 autocast where the CPU or GPU has native bf16, else fp32), fp32, "
        "bf16 or fp16 (CUDA): how the mix is decoded (bf16: a third faster on such a CPU, "
        "pixels within about 0.2 grey levels of fp32) and how --adapt fine-tunes.",
    ),
]
