"""Assertions shared by the test modules (imported as `from helpers import …`)."""

from __future__ import annotations


def error_line(result) -> str:
    """The CLI's contract for bad input: exit 2 and exactly one 'error:' line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# A Texture Mixer small enough for unit tests (16 px, a few thousand weights).
TINY_TEXTURE_MIXER = {
    "resolution": 16,
    "latent_channels": 4,
    "global_dim": 4,
    "channels": 8,
    "res_blocks": 1,
    "d_channels": 4,
}
