"""What every command shares: options, output streams, error handling.

Conventions (DESIGN.md): results go to files named by ``--out``; ``--json`` prints one JSON
document on stdout; tables, progress and warnings go to stderr (progress only on a terminal, none
with ``--quiet``); a :class:`~gantk.errors.GantkError` becomes one ``error:`` line on stderr and
exit status 2, with the traceback only under ``--debug``.

Only typer and rich are imported here, so ``gantk --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
import typer.core

from gantk.errors import GantkError, one_line

F = TypeVar("F", bound=Callable[..., Any])

# Set by the global --debug flag (or GANTK_DEBUG=1): show tracebacks of user errors too.
DEBUG = {"enabled": os.environ.get("GANTK_DEBUG", "") not in ("", "0")}


class PathRole:
    """``Annotated`` metadata telling :func:`handle_errors` what a parameter names: READS on a
    ``str`` option that names a file or folder the command reads (``Path`` ones count without
    it), WRITES on every parameter that names a file or folder the command writes."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __repr__(self) -> str:
        return self.role.upper()


READS = PathRole("reads")
WRITES = PathRole("writes")


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or tables on stderr.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, max=2**62, help="Random seed (same seed, same result).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (bf16 autocast where the CPU or GPU has native bf16, else fp32), fp32, "
        "bf16, or fp16 (CUDA). Recorded in the run; --resume keeps it.",
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="CPU threads for torch (default: all).")
]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict", help="Stop at the first unreadable image instead of skipping it."),
]
CountOpt = Annotated[
    int | None,
    typer.Option(
        "-n",
        "--count",
        min=1,
        help="Number of images (default: all, or the built-in's default size).",
    ),
]
ResolutionOpt = Annotated[
    int | None,
    typer.Option("--resolution", "-r", help="Square output size in pixels, a power of two."),
]
ResizeOpt = Annotated[
    str, typer.Option("--resize", help="How images become square: center-crop, stretch or pad.")
]
UpscaleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-upscale", help="Enlarge images smaller than --resolution instead of refusing them."
    ),
]
LabelsOpt = Annotated[
    bool,
    typer.Option(
        "--labels",
        help="Treat each subfolder of a folder as one class (sorted; 0_real/1_fake work).",
    ),
]
DatasetArg = Annotated[
    str,
    READS,
    typer.Argument(
        metavar="DATASET",
        help="Folder of images, .h5 pack, or builtin:NAME (see `gantk data list`).",
        show_default=False,
    ),
]


class Output:
    """Where a command's words go: JSON to stdout, everything for people to stderr. Under
    torchrun only rank 0 speaks (the others would repeat it); warnings come from every rank,
    since each names the inputs of its own share."""

    def __init__(self, quiet: bool = False, as_json: bool = False) -> None:
        from rich.console import Console

        if process_rank() > 0:
            quiet, as_json = True, False
        # With --json the output is for a program: people's tables and messages stay out of it.
        self.quiet, self.as_json = quiet or as_json, as_json
        self.console = Console(stderr=True, quiet=self.quiet, highlight=False)
        self._warnings = Console(stderr=True, highlight=False)

    def say(self, message: str) -> None:
        # one_line: a file name holding a newline must not start a line of its own.
        self.console.print(one_line(message), markup=False)

    def warn(self, message: str) -> None:
        # Warnings stay visible under --quiet: they tell of skipped input.
        self._warnings.print(
            f"warning: {one_line(message)}", markup=False, highlight=False, soft_wrap=True
        )

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table on stderr; all-empty column names mean a two-column fact sheet, no header."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title), title_justify="left", show_header=any(columns))
        for i, col in enumerate(columns):
            table.add_column(col, no_wrap=i == 0)  # the key column stays readable and greppable
        for row in rows:
            # Escape: cell text like 'fid[random-inception]' is data, not rich markup.
            table.add_row(*[escape("-" if v is None else one_line(v)) for v in row])
        self.console.print(table)

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[..., None]]:
        """Yield ``advance(k, status=None)``; draws a bar only on an interactive stderr.
        ``status`` replaces the text after the description (e.g. the latest losses)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=self.quiet or not self.console.is_terminal,
        )
        with bar:
            task = bar.add_task(description, total=total)

            def advance(k: int = 1, status: str | None = None) -> None:
                bar.advance(task, k)
                if status is not None:
                    bar.update(task, description=f"{description} {status}")

            yield advance

    def result(self, document: dict[str, Any]) -> None:
        if self.as_json:
            text = json.dumps(json_safe(document), indent=2, default=str, allow_nan=False)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


def process_rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    return int(os.environ.get("RANK", "0"))


ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="K/N: do part K (counting from 0) of N of the work, for a cluster's job array; "
        "the N partial outputs are merged afterwards (see README, 'Bigger than one machine').",
        show_default=False,
    ),
]


def process_device(device: str) -> str:
    """--device resolved for this process: under torchrun each takes the GPU of its
    LOCAL_RANK (``cuda`` -> ``cuda:N``)."""
    rank_gpu = os.environ.get("LOCAL_RANK") if os.environ.get("WORLD_SIZE", "1") != "1" else None
    resolved = resolve_device(device)
    return f"cuda:{rank_gpu}" if resolved == "cuda" and rank_gpu is not None else resolved


def json_safe(value: Any) -> Any:
    """``value`` with every float that is not finite as None: NaN and Infinity are not JSON,
    and a pipeline's parser (jq, JSON.parse) would fail on the whole document. Metrics refuse
    to compute from non-finite inputs; what remains (a training loss that diverged, a metric
    with no value) is reported as null."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return json_safe(value.item())
    return value


def show_warnings_as_lines() -> None:
    """Library warnings (few samples, resized inputs, …) become 'warning: …' lines on stderr,
    like the CLI's own, instead of Python's two-line file:line format."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {one_line(message)}", file=sys.stderr)

    warnings.showwarning = show


def _one_line(message: str) -> str:
    """A GantkError raised in a DataLoader worker comes back with the worker's whole traceback
    folded into its message; keep only the original one-line message."""
    marker = "gantk.errors.GantkError: "
    if "Original Traceback" in message and marker in message:
        return message.rsplit(marker, 1)[1].strip()
    return message


def _flag(func: Callable[..., Any], name: str) -> str:
    """The command-line spelling of ``func``'s parameter ``name`` (e.g. preset -> --config)."""
    import typing

    try:
        hint = typing.get_type_hints(func, include_extras=True).get(name)
    except (NameError, TypeError):
        hint = None
    for meta in getattr(hint, "__metadata__", ()):
        # In Annotated form typer takes the first name from OptionInfo.default.
        names = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]
        flags = [d for d in names if isinstance(d, str) and d.startswith("--")]
        if flags:
            return " / ".join(flags)
    return "--" + name.replace("_", "-")


def check_finite(func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Every float a command receives must be a number: nan and inf pass the options' ranges
    (every comparison with nan is false) and would reach the maths as silent garbage."""
    import math

    for name, value in kwargs.items():
        values = value if isinstance(value, list | tuple) else [value]
        bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise GantkError(f"{_flag(func, name)} must be a finite number, got {bad[0]}")


@functools.cache
def _path_roles(func: Callable[..., Any]) -> dict[str, str]:
    """``{parameter: "reads" | "writes"}`` for the parameters of ``func`` naming paths: as
    marked, else "reads" for those typed ``Path`` (or ``Path | None``, ``list[Path]``)."""
    import typing

    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError):  # an annotation that does not resolve: no paths known
        return {}
    roles = {}
    for name, hint in hints.items():
        marks = [m.role for m in getattr(hint, "__metadata__", ()) if isinstance(m, PathRole)]
        base = typing.get_args(hint)[0] if hasattr(hint, "__metadata__") else hint
        if marks:
            roles[name] = marks[0]
        elif "pathlib.Path" in str(base):
            # Unmarked: an input, unless named as outputs are (an output taken for an input
            # would refuse its own --force).
            roles[name] = "writes" if name == "out" or name.startswith("out_") else "reads"
    return roles


def _given_paths(func: Callable[..., Any], kwargs: dict[str, Any], role: str) -> list[str]:
    """The values of ``func``'s parameters with ``role`` that name an existing path (or, for
    outputs, any path), lists flattened; ``builtin:`` names are not paths."""
    found = []
    for name, kind in _path_roles(func).items():
        value = kwargs.get(name)
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is None or str(item).startswith("builtin:") or not str(item):
                continue
            exists = os.path.lexists(os.path.expanduser(str(item)))
            if kind == role and (role == "writes" or exists):
                found.append(str(item))
    return found


def check_paths(
    func: Callable[..., Any], kwargs: dict[str, Any]
) -> contextlib.AbstractContextManager[None]:
    """The one check of outputs against inputs, for every command: the files and folders the
    command was given to read become the inputs every output is checked against, wherever in
    the library it is checked (:func:`gantk.io.atomic.command_inputs`); two outputs naming the
    same path (or one inside the other) are refused here. Returns the context to run in."""
    from gantk.io.atomic import command_inputs

    outputs = _given_paths(func, kwargs, "writes")
    absolute = [os.path.abspath(os.path.expanduser(o)) for o in outputs]
    for i, a in enumerate(absolute):
        for j, b in enumerate(absolute):
            if i != j and (a == b or b.startswith(a.rstrip(os.sep) + os.sep)):
                raise GantkError(
                    f"two outputs name {outputs[j]}; give each output a path of its own"
                )
    return command_inputs(_given_paths(func, kwargs, "reads"))


def handle_errors(func: F) -> F:
    """Turn user errors into one stderr line and exit status 2; Ctrl-C into status 130.
    Non-finite float options are refused here, and outputs checked against inputs
    (:func:`check_paths`), for every command at once."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_finite(func, kwargs)
            with check_paths(func, kwargs):
                return func(*args, **kwargs)
        except GantkError as exc:
            if DEBUG["enabled"]:
                import traceback

                traceback.print_exc()
            print(f"error: {one_line(_one_line(str(exc)))}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except OSError as exc:  # the machine's refusal (disk full, permissions), not a bug
            if DEBUG["enabled"]:
                import traceback

                traceback.print_exc()
            where = f" {exc.filename}" if exc.filename else ""
            reason = exc.strerror or str(exc).splitlines()[0]
            print(one_line(f"error: cannot go on:{where} ({reason}); free space or fix "
                           "permissions and run again"), file=sys.stderr)  # fmt: skip
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _is_usage_error(exc: BaseException) -> bool:
    # By name: typer >= 0.2x vendors click, older versions use click itself.
    return any(k.__name__ == "UsageError" for k in type(exc).__mro__)


class OneLineErrors(typer.core.TyperGroup):
    """The top-level group: usage errors (an unknown option, a value out of range, a missing
    argument) become one ``error:`` line and exit status 2, like gantk's own errors, instead of
    click's usage box. Help, --version and every command's exit status are unchanged."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except Exception as exc:
            if not _is_usage_error(exc):
                if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's other errors
                    exc.show()
                    sys.exit(exc.exit_code)
                if type(exc).__name__ == "Abort":
                    print("aborted", file=sys.stderr)
                    sys.exit(1)
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `gantk` alone prints its help
                exc.show()
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print(f"error: {exc.format_message().rstrip('.')}{hint}", file=sys.stderr)
            sys.exit(2)
        sys.exit(status if isinstance(status, int) else 0)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is usable, else ``cpu``; others are validated."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GantkError(
                f"--device {device} asked for, but no CUDA device is usable here; use --device cpu"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise GantkError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0; pick one of them"
            )
        return device
    raise GantkError(f"--device {device!r} is not auto, cpu, cuda or cuda:N")


def set_threads(threads: int | None) -> None:
    """Apply --threads (torch's intra-op CPU threads)."""
    if threads is None:
        return
    from gantk.errors import GantkError

    if threads < 1:
        raise GantkError("--threads must be positive")
    import torch

    torch.set_num_threads(threads)
