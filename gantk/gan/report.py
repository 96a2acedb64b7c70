"""One picture of a GAN run (``gantk train report RUN --out report.png``): losses, the metrics
measured while training, ADA's p, and sample grids over time, all read from the run folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gantk.errors import GantkError
from gantk.io.atomic import atomic_file, check_output
from gantk.io.runlog import LOG_FILE

METRIC_PREFIXES = ("fid", "kid")
MAX_GRIDS = 4


# Keys of a log entry the report draws: each must be a number where present (NaN stays: a
# loss that diverged is what the report must show).
PLOTTED = ("kimg", "loss_d", "loss_g", "aug_p")
MAX_LOG_BYTES = 1024 * 2**20


def read_log(run: Path) -> list[dict]:
    """The entries of a run's log that the report draws, each checked: an object whose
    ``kimg`` and drawn values (losses, ADA's p, metrics) are numbers."""
    from gantk.io.files import describe, parse_json, read_text

    path = run / LOG_FILE
    if not path.exists():
        raise GantkError(f"{run} holds no {LOG_FILE}: give the folder of a `gantk train gan` run")
    entries = []
    text = read_text(path, "run log", MAX_LOG_BYTES)
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_json(line, "line", allow_nan=True)
        except GantkError:
            raise GantkError(
                f"{path} line {number} is not JSON: the log is damaged; remove the line"
            ) from None
        if not isinstance(entry, dict) or "kimg" not in entry:
            continue
        for key, value in entry.items():
            drawn = key in PLOTTED or key.startswith(METRIC_PREFIXES)
            if drawn and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise GantkError(
                    f"{path} line {number}: {key} is {describe(value)}, not a number: the log "
                    "is damaged; remove or fix the line"
                )
        entries.append(entry)
    if not entries:
        raise GantkError(f"{path} has no entries yet; let the run log its first tick")
    return entries


def sample_grids(run: Path) -> list[tuple[float, Path]]:
    """Up to MAX_GRIDS sample grids, evenly spread from the first to the last, with their kimg."""
    found = []
    for path in run.glob("samples-*.png"):
        match = re.fullmatch(r"samples-(\d+)(kimg|img)\.png", path.name)
        if match:
            count = int(match.group(1))
            found.append((count if match.group(2) == "kimg" else count / 1000, path))
    found.sort()
    if len(found) <= MAX_GRIDS:
        return found
    picks = np.linspace(0, len(found) - 1, MAX_GRIDS).round().astype(int)
    return [found[i] for i in sorted(set(picks.tolist()))]


def write_report(run: Path, out: Path, force: bool = False) -> dict:
    """Draw the report of ``run`` into ``out`` (PNG); returns what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gantk.io.images import UnreadableImage, load_rgb

    entries = read_log(run)  # the input first: a folder that is no run says so
    check_output(out, force, kind="file")  # before the work: an existing report needs --force
    ticks = [e for e in entries if "loss_d" in e]
    measured = [e for e in entries if any(k.startswith(METRIC_PREFIXES) for k in e)]
    metric_names = sorted({k for e in measured for k in e if k.startswith(METRIC_PREFIXES)})
    has_p = any("aug_p" in e for e in ticks)
    grids = sample_grids(run)

    panels = 2 + has_p
    columns = max(panels, len(grids), 1)
    fig = plt.figure(figsize=(4 * columns, 7.5 if grids else 3.5))
    rows = 2 if grids else 1
    ax = fig.add_subplot(rows, columns, 1)
    for key in ("loss_d", "loss_g"):
        ax.plot([e["kimg"] for e in ticks], [e.get(key, np.nan) for e in ticks], label=key)
    ax.set(title="losses", xlabel="kimg")
    ax.legend()
    ax = fig.add_subplot(rows, columns, 2)
    for i, name in enumerate(metric_names):
        rows_with = [e for e in measured if name in e]
        # FID and KID differ by orders of magnitude: the second gets its own axis.
        axis = ax if i == 0 else ax.twinx()
        axis.plot([e["kimg"] for e in rows_with], [e[name] for e in rows_with], "o-",
                  color=f"C{i}", label=name)  # fmt: skip
        axis.set_ylabel(name, color=f"C{i}")
    if metric_names:
        ax.set(title="metrics (lower is better)", xlabel="kimg")
    else:
        ax.set_title("metrics")
        ax.text(0.5, 0.5, "none measured\n(train with --metrics fid)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
    if has_p:
        ax = fig.add_subplot(rows, columns, 3)
        with_p = [e for e in ticks if "aug_p" in e]
        ax.plot([e["kimg"] for e in with_p], [e["aug_p"] for e in with_p])
        ax.set(title="ADA p", xlabel="kimg", ylim=(0, max(0.05, *(e["aug_p"] for e in with_p))))
    for i, (kimg, path) in enumerate(grids):
        ax = fig.add_subplot(rows, columns, columns + i + 1)
        try:
            ax.imshow(load_rgb(path))
        except UnreadableImage as exc:
            raise GantkError(
                f"cannot read the sample grid {exc}; remove it or re-copy the run"
            ) from None
        ax.set_title(f"samples at {kimg:g} kimg")
        ax.axis("off")
    fig.suptitle(str(run))
    fig.tight_layout()
    with atomic_file(out, force) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return {
        "out": str(out),
        "ticks": len(ticks),
        "metrics": metric_names,
        "measures": len(measured),
        "aug_p": has_p,
        "grids": [p.name for _, p in grids],
        "last_kimg": entries[-1]["kimg"],
    }
