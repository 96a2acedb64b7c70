"""Options and helpers shared by several ``gantk evaluate`` metric families."""

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import READS, Output

SetArg = Annotated[
    str,
    READS,
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
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
TruncOpt = Annotated[
    float, typer.Option("--truncation", help="Truncation psi when sampling a generator.")
]
SubsetOpt = Annotated[
    str | None,
    typer.Option(
        "--subset",
        help="Only the images of dataset sets having any of these attributes (comma list, "
        "e.g. Eyeglasses): metrics per subgroup.",
    ),
]
LpipsNetOpt = Annotated[str, typer.Option("--net", help="LPIPS backbone: alex or vgg.")]
LpipsWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--lpips-weights",
        help="Path of the backbone's torchvision weights "
        "(alexnet-owt-7be5be79.pth or vgg16-397923af.pth).",
    ),
]


def is_path(spec: str) -> bool:
    """Whether a SET names a file or folder (not builtin:NAME), i.e. can clash with an output."""
    return not spec.startswith("builtin:")


def subset_names(subset: str | None) -> list[str] | None:
    """The attribute names of --subset's comma list (None when not given)."""
    return [a.strip() for a in subset.split(",") if a.strip()] if subset else None


def report_metrics(out: Output, title: str, summary: dict) -> None:
    """Print a summary's metrics and sets as a table, then emit the summary (JSON)."""
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
