"""gantk: a toolkit for building, evaluating and policing deep generative models.

Importing the package stays cheap (no torch, no numpy) so that `gantk --help` is instant;
each subpackage imports its heavy dependencies itself.
"""

__version__ = "0.1.0"

# Fixed date written into generated man pages, so that regenerating them is reproducible.
MAN_DATE = "2026-11"
