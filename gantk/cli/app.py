"""The ``gantk`` Typer application: global options and command registration.

Each command module imports its library code inside the command function, so building this app
(and ``gantk --help``) never imports torch or numpy.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gantk import __version__
from gantk.cli import (
    attribution,
    convert,
    data,
    evaluate,
    fingerprint,
    generate,
    info,
    ops,
    project,
    texture,
    train,
    weights,
)
from gantk.cli.common import DEBUG, OneLineErrors, show_warnings_as_lines

app = typer.Typer(
    name="gantk",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gantk {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Build, evaluate and police deep generative models: GAN training, texture mixing,
    attribution of fake images and fingerprinting of generators.

    Datasets are folders of images, .h5 packs (`gantk data pack`) or built-ins (`builtin:NAME`,
    see `gantk data list`). Results go to files named by --out; --json prints a summary on
    stdout; progress and tables go to stderr. User errors exit with status 2.
    """
    if debug:
        DEBUG["enabled"] = True
    show_warnings_as_lines()


app.command("info", help=info.info.__doc__)(info.info)
app.add_typer(train.app, name="train")
app.command("generate", help=generate.generate.__doc__)(generate.generate)
app.command("fingerprint-embed", help=fingerprint.fingerprint_embed.__doc__)(
    fingerprint.fingerprint_embed
)
app.command("fingerprint-decode", help=fingerprint.fingerprint_decode.__doc__)(
    fingerprint.fingerprint_decode
)
app.command("fingerprint-merge", help=fingerprint.fingerprint_merge.__doc__)(
    fingerprint.fingerprint_merge
)
app.command("attribute", help=attribution.attribute.__doc__)(attribution.attribute)
app.command("convert", help=convert.convert.__doc__)(convert.convert)
app.command("project", help=project.project.__doc__)(project.project)
app.command("texture-mix", help=texture.texture_mix.__doc__)(texture.texture_mix)
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(data.app, name="data")
app.add_typer(ops.app, name="ops")
app.add_typer(weights.app, name="weights")
