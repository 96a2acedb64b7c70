"""Assertions shared by the test modules (imported as `from helpers import …`)."""

from __future__ import annotations


def error_line(result) -> str:
    """The CLI's contract for bad input: exit 2 and exactly one 'error:' line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def error_line_after_warnings(result) -> str:
    """Like error_line, for commands that first warn about each input file they skipped."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("warning: ") for ln in lines[:-1]), result.stderr
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


# A Texture Mixer small enough for unit tests (16 px, a few thousand weights).
TINY_TEXTURE_MIXER = {
    "resolution": 16,
    "latent_channels": 4,
    "global_dim": 4,
    "channels": 8,
    "res_blocks": 1,
    "d_channels": 4,
}


def write_png_bomb(path, width: int = 100_000, height: int = 100_000) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header;
    no pixel data follows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def write_corrupt_png(path) -> None:
    """A file named .png that is not an image."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
