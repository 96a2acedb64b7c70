"""The one exception type for mistakes a user can fix.

Library code raises :class:`GantkError` with a one-line message that says what was wrong and
what to do about it. The command line catches it at the edge, prints the message and exits with
status 2; anything else is a bug and keeps its traceback.
"""

import re

# Control characters (a newline in a file name, a carriage return, an escape sequence): printed
# as they are, they would start a line of their own, e.g. a fake "error:" after a success.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: object) -> str:
    """``text`` as one printable line: control characters shown as escapes (``\\n``)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


class GantkError(Exception):
    """Bad input or environment that the user can correct (exit status 2 at the CLI)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message on one line: it is printed as-is to stderr by the CLI. Runs of
        # whitespace (a library's multi-line report, a newline in a file name) become one
        # space; other control characters are escaped.
        super().__init__(one_line(" ".join(str(message).split())))
