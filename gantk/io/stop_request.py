"""Ctrl-C (SIGINT) as a request to stop a training loop cleanly.

The first SIGINT only sets a flag that the loop reads between steps, so it saves a consistent
model and state (an interrupt in the middle of an optimizer step would not) and returns; a second
one aborts at once. `make gpu-check` and batch schedulers stop runs at their time budget this way.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


class StopRequest:
    """``with StopRequest() as stop: ... if stop.requested: save; break``; ``log`` says that the
    stop was heard (default: a line on stderr)."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.requested = False
        self._log = log or _to_stderr
        self._previous: object = None
        # signal handlers can only be installed from the main thread (not, e.g., in a worker).
        self._active = threading.current_thread() is threading.main_thread()

    def request(self) -> None:
        """What the first Ctrl-C does; a second one aborts at once (KeyboardInterrupt)."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log("stopping after this step (Ctrl-C again to abort without saving)")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request()

    def __enter__(self) -> StopRequest:
        if self._active:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
