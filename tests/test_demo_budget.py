"""The demo's time budget (issue: `make demo` takes half an hour): every step of
examples/demo.sh has a budget in examples/demo-budget.tsv, in the same order, and the budgets
add up to at most five minutes. The demo itself prints measured seconds against these budgets;
this test keeps a new step from arriving without one."""

from __future__ import annotations

import csv
import re
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIVE_MINUTES = 300


def demo_steps() -> list[str]:
    text = (EXAMPLES / "demo.sh").read_text()
    return re.findall(r"^step ([a-z][a-z0-9-]*) ", text, flags=re.MULTILINE)


def budget() -> dict[str, float]:
    with (EXAMPLES / "demo-budget.tsv").open() as f:
        return {row["step"]: float(row["seconds"]) for row in csv.DictReader(f, delimiter="\t")}


def test_every_demo_step_has_a_budget_in_order() -> None:
    steps = demo_steps()
    assert len(steps) >= 10 and len(set(steps)) == len(steps)  # unique step names
    assert list(budget()) == steps


def test_the_budget_fits_in_five_minutes() -> None:
    seconds = budget()
    assert all(value > 0 for value in seconds.values())
    assert sum(seconds.values()) <= FIVE_MINUTES
