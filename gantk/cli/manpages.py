"""Generate the man pages in ``man/`` from the command line itself (``make man``).

One page for ``gantk`` and one per command and subcommand (``gantk-data-pack.1``, …), built
from the same objects that print ``--help``, with a fixed date so that regenerating them is
reproducible; a test fails when the committed pages differ from what this produces.

(click-man cannot be used: Typer 0.2x ships its own copy of click, whose parameter classes
click-man does not recognise, so it silently drops every option.)
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, leading dots/quotes, hyphens and backticks."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("`", "")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _paragraphs(text: str) -> list[str]:
    return [
        " ".join(p.split()) if not p.lstrip().startswith(("gantk ", "Example")) else p.strip()
        for p in re.split(r"\n\s*\n", inspect.cleandoc(text or ""))
        if p.strip()
    ]


def render_page(command: Any, path: list[str], version: str, date: str) -> str:
    from typer._click import Context

    ctx = Context(command, info_name=path[-1])
    name = " ".join(path)
    help_text = command.help or ""
    short = _paragraphs(help_text)[0] if help_text else name
    lines = [
        f'.TH "{name.upper()}" "1" "{date}" "gantk {version}" "gantk manual"',
        ".SH NAME",
        f"{_roff('-'.join(path))} \\- {_roff(short)}",
        ".SH SYNOPSIS",
        f".B {_roff(name)}",
        _roff(" ".join(command.collect_usage_pieces(ctx)).replace("{", "").replace("}", "")),
        ".SH DESCRIPTION",
    ]
    for i, para in enumerate(_paragraphs(help_text)):
        if i:
            lines.append(".PP")
        lines.append(_roff(para))
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    for title, params in (("ARGUMENTS", arguments), ("OPTIONS", options)):
        records = [p.get_help_record(ctx) for p in params]
        records = [r for r in records if r]
        if records:
            lines.append(f".SH {title}")
            for term, desc in records:
                lines += [".TP", f"\\fB{_roff(term)}\\fR", _roff(" ".join(desc.split()))]
    subcommands = getattr(command, "commands", {})
    if subcommands:
        lines.append(".SH COMMANDS")
        for sub_name, sub in subcommands.items():
            if sub.hidden:
                continue
            sub_short = _paragraphs(sub.help or "")[0] if sub.help else ""
            lines += [
                ".TP",
                f"\\fB{_roff(sub_name)}\\fR",
                _roff(sub_short) + f"\nSee \\fB{_roff('-'.join([*path, sub_name]))}\\fR(1).",
            ]
    lines += [
        ".SH EXIT STATUS",
        "0 on success; 2 for a usage error or bad input (a one-line message on stderr "
        "says what to do); 130 when interrupted.",
        ".SH SEE ALSO",
        "\\fBgantk\\fR(1); the README of the gantk project.",
        "",
    ]
    return "\n".join(lines)


def iter_commands(command: Any, path: list[str]):
    yield path, command
    for sub_name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from iter_commands(sub, [*path, sub_name])


def build_man_pages() -> dict[str, str]:
    """File name -> page text for every command of the app."""
    import typer

    from gantk import MAN_DATE, __version__
    from gantk.cli.app import app

    root = typer.main.get_command(app)
    return {
        "-".join(path) + ".1": render_page(cmd, path, __version__, MAN_DATE)
        for path, cmd in iter_commands(root, ["gantk"])
    }


def write_man_pages(target: str | Path) -> list[Path]:
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    pages = build_man_pages()
    for old in target.glob("gantk*.1"):
        if old.name not in pages:
            old.unlink()
    for name, text in pages.items():
        (target / name).write_text(text)
    return sorted(target / n for n in pages)


if __name__ == "__main__":
    written = write_man_pages(sys.argv[1] if len(sys.argv) > 1 else "man")
    print(f"wrote {len(written)} man pages")
