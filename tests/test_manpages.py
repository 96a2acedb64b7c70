"""The committed man pages must match the command line (regenerate with `make man`)."""

from __future__ import annotations

from pathlib import Path

from gantk.cli.manpages import build_man_pages

MAN = Path(__file__).resolve().parent.parent / "man"


def test_committed_man_pages_are_current() -> None:
    pages = build_man_pages()
    committed = {p.name: p.read_text() for p in MAN.glob("gantk*.1")}
    assert sorted(committed) == sorted(pages), "man/ is stale: run `make man`"
    stale = [name for name, text in pages.items() if committed[name] != text]
    assert not stale, f"man pages out of date: {stale}; run `make man`"


def test_pages_document_every_option() -> None:
    pack = build_man_pages()["gantk-data-pack.1"]
    for option in (
        "\\-\\-resolution",
        "\\-\\-labels",
        "\\-\\-attributes",
        "\\-\\-strict",
        "\\-\\-force",
        "\\-\\-json",
    ):
        assert option in pack
    assert ".SH EXIT STATUS" in pack
    top = build_man_pages()["gantk.1"]
    assert "\\fBgantk\\-data\\fR(1)" in top and "\\fBgantk\\-info\\fR(1)" in top
