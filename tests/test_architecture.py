"""The structure docs/architecture.md describes is the structure of the code.

- The import contracts of pyproject.toml (layers, no cycles, no method importing another
  method's trainer, generator loading without trainers, metrics without gan) hold.
- Every module of gantk has its line in docs/architecture.md, and every module the document
  names exists.
- No module is over 600 lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gantk"
MAX_LINES = 600


def _modules() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}


def test_import_contracts_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is a dev dependency")
    monkeypatch.chdir(ROOT)
    code = cli.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    assert code == 0, "an import contract is broken: run `lint-imports` for the offending chain"


def test_contracts_cover_every_top_level_package() -> None:
    # A new package outside the layers would escape every contract but the cycle one.
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("layers = [") : text.index("]", text.index("layers = ["))]
    named = set(re.findall(r"[a-z_]+", block)) - {"layers"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    packages |= {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    assert packages - {"models"} <= named, packages - named


def test_architecture_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"^\| `([a-z_/]+\.py)` \|", text, flags=re.MULTILINE))
    modules = _modules()
    assert not modules - named, f"modules without a line in docs/architecture.md: {modules - named}"
    assert not named - modules, (
        f"docs/architecture.md names modules that are gone: {named - modules}"
    )


def test_no_module_over_the_limit() -> None:
    sizes = {m: len((PACKAGE / m).read_text().splitlines()) for m in _modules()}
    big = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not big, f"split these along what they do (limit {MAX_LINES} lines): {big}"
