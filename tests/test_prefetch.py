"""prefetch: same items in order, errors where they happened, producer stopped on early exit."""

from __future__ import annotations

import threading
import time

import pytest

from gantk.io.prefetch import prefetch


def test_items_arrive_in_order_and_are_produced_ahead() -> None:
    produced: list[int] = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=2)
    assert next(stream) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # 1 and 2 made while we wait
        time.sleep(0.01)
    assert produced == [0, 1, 2]
    assert list(stream) == [1, 2, 3, 4]


def test_a_producer_error_is_raised_at_its_item() -> None:
    def items():
        yield "a"
        raise ValueError("unreadable file x.png")

    stream = prefetch(items())
    assert next(stream) == "a"
    with pytest.raises(ValueError, match=r"unreadable file x\.png"):
        next(stream)


def test_closing_early_stops_the_producer() -> None:
    produced: list[int] = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(items())
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "gantk-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10
