"""``gantk weights``: the standard pretrained weight files, where they are, and fetching them."""

from __future__ import annotations

from typing import Annotated

import typer

from gantk.cli.common import JsonOpt, Output, QuietOpt, handle_errors

app = typer.Typer(
    help="Standard pretrained weights (FID Inception, LPIPS AlexNet/VGG, VGG-19 for style "
    "losses).\n\nCommands fetch a missing file on first use into torch's hub cache "
    "($TORCH_HOME/hub/checkpoints), checking its SHA-256; GANTK_WEIGHTS_URL names a mirror and "
    "GANTK_OFFLINE=1 never downloads. `fetch` gets them ahead of time, e.g. before going "
    "offline.",
    no_args_is_help=True,
)


@app.command("list")
@handle_errors
def list_weights(as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the standard weight files: what uses each, and where it was found (or not)."""
    from gantk.io.weights import hub_dir, search_dirs, weights_report

    out = Output(quiet, as_json)
    report = weights_report()
    out.table(
        "standard weights",
        ["name", "file", "used by", "found"],
        [[w["key"], w["file"], w["used_by"], w["found"] or "-"] for w in report],
    )
    out.say(f"searched: {'; '.join(str(d) for d in search_dirs())}; downloads go to {hub_dir()}")
    out.result({"weights": report, "search_path": [str(d) for d in search_dirs()]})


@app.command("fetch")
@handle_errors
def fetch(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[NAME...]", help="Weights to fetch (see `gantk weights list`); default all."
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download the standard weight files not found yet (all, or the NAMEs given)."""
    from gantk.errors import GantkError
    from gantk.io.weights import STANDARD_WEIGHTS, find_weights, locate

    wanted = list(names or STANDARD_WEIGHTS)
    unknown = [n for n in wanted if n not in STANDARD_WEIGHTS]
    if unknown:
        raise GantkError(
            f"no standard weights named {unknown[0]!r}; choose from {', '.join(STANDARD_WEIGHTS)}"
        )
    out = Output(quiet, as_json)
    rows = []
    for name in wanted:
        had = locate(name)
        path = find_weights(name)
        rows.append({"key": name, "path": str(path), "downloaded": had is None})
    out.table("weights", ["name", "path", "status"],
              [[r["key"], r["path"], "downloaded" if r["downloaded"] else "already here"]
               for r in rows])  # fmt: skip
    out.result({"weights": rows})
