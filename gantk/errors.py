"""The one exception type for mistakes a user can fix.

Library code raises :class:`GantkError` with a one-line message that says what was wrong and
what to do about it. The command line catches it at the edge, prints the message and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class GantkError(Exception):
    """Bad input or environment that the user can correct (exit status 2 at the CLI)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message on one line: it is printed as-is to stderr by the CLI.
        super().__init__(" ".join(str(message).split()))
