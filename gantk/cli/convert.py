"""``gantk convert``: NVIDIA StyleGAN2-ADA network pickles as gantk checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import WRITES, ForceOpt, JsonOpt, Output, QuietOpt, handle_errors


@handle_errors
def convert(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL.pkl",
            help="A stylegan2-ada-pytorch network pickle (a training snapshot).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        WRITES,
        typer.Option("--out", "-o", help="The generator checkpoint to write (.safetensors)."),
    ],
    discriminator: Annotated[
        Path | None,
        WRITES,
        typer.Option("--discriminator", help="Also write the discriminator to this file."),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert an NVIDIA StyleGAN2-ADA network pickle into a gantk generator checkpoint.

    The pickle is read as data only: its networks' code is never run, and anything but tensors,
    containers and NVIDIA's persistent-class records is refused. The generator (G_ema) becomes
    an ordinary gantk checkpoint for `gantk generate` and `gantk evaluate`; it computes what
    NVIDIA's code computes (within 1e-4), and `--seeds` draws NVIDIA's latents
    (np.random.RandomState(seed)), so seed 42 is the same image in both tools. The file's
    SHA-256 and training arguments are recorded in the checkpoint. Supported: unconditional and
    class-conditional models (`gantk generate --class K`), any resolution 4-1024, the skip,
    resnet and orig architectures of G and D, any mapping depth, conv_clamp, fp16 layers
    (computed in float32).
    """
    from gantk.errors import GantkError
    from gantk.gan.nvidia import convert as convert_model
    from gantk.gan.nvidia import save_converted
    from gantk.io.atomic import check_output

    if model.suffix.lower() == ".safetensors":
        raise GantkError(f"{model} is already a safetensors file; gantk commands take it directly")
    # Against every input of the command, and --out against --discriminator (check_paths).
    check_output(out, force, kind="file")
    if discriminator is not None:
        check_output(discriminator, force, kind="file")
    output = Output(quiet, as_json)
    converted = convert_model(model, discriminator=discriminator is not None)
    save_converted(converted, out, discriminator, force)
    config = converted.config
    output.table(
        "convert",
        ["", ""],
        [
            ["source", f"{model} (sha256 {converted.source['sha256'][:16]}…)"],
            ["resolution", config.resolution],
            ["z / w", f"{config.z_dim} / {config.w_dim}"],
            ["mapping layers", config.mapping_layers],
            ["channels", f"base {config.channel_base}, max {config.channel_max}"],
            ["conv clamp", config.conv_clamp if config.conv_clamp is not None else "none"],
            ["generator", str(out)],
            ["discriminator", str(discriminator) if discriminator else "-"],
        ],
    )
    output.result({"generator": str(out), "discriminator": str(discriminator) if discriminator
                   else None, "network": config.to_dict(), "source": converted.source})  # fmt: skip
