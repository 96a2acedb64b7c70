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


def assert_close_in_norm(actual, expected, rel: float, what: str = "") -> None:
    """``actual`` equals ``expected`` up to ``rel`` times the size of the whole quantity:
    ‖actual − expected‖ ≤ rel · ‖expected‖ (2-norms, in float64). For float32 results computed
    in another order (slices of a batch, folded weights, another CPU's kernels): rounding moves
    each element by a fraction of the quantity's scale, not of the element's own value, so an
    element-wise tolerance fails on small elements on one machine and not on another."""
    import torch

    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    error, size = (actual - expected).norm().item(), expected.norm().item()
    assert error <= rel * size, f"{what}: |difference| {error:.3g} > {rel:g} x |size| {size:.3g}"


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


def write_nvidia_pickle(path, snapshot: dict):
    """A pickle shaped as stylegan2-ada-pytorch writes its snapshots: each value that is a
    ``{"_nvidia_record": state}`` dict becomes a persistent object (a call of
    ``torch_utils.persistence._reconstruct_persistent_obj`` with the record), as NVIDIA's
    networks pickle; nothing of NVIDIA's code is needed to write or read it."""
    import pickle
    import sys
    import types

    def _reconstruct_persistent_obj(meta):  # pickled by reference under NVIDIA's name
        raise AssertionError("never called by gantk's reader")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"

    class Persistent:
        def __init__(self, state: dict) -> None:
            self.meta = {"type": "class", "version": 4, "module_src": "", "state": state,
                         "class_name": "Generator", "module_name": "_imported_module"}  # fmt: skip

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"] = types.ModuleType("torch_utils")
    sys.modules["torch_utils.persistence"] = fake
    try:
        data = {k: Persistent(v["_nvidia_record"]) if isinstance(v, dict) and "_nvidia_record"
                in v else v for k, v in snapshot.items()}  # fmt: skip
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return path


def nvidia_generator_record(**changes) -> dict:
    """The state of a tiny NVIDIA generator record (no tensors): construction arguments as
    stylegan2-ada-pytorch stores them, with ``changes`` applied (a value None removes a key)."""
    kwargs = {"z_dim": 8, "w_dim": 8, "c_dim": 0, "img_resolution": 16, "img_channels": 3,
              "mapping_kwargs": {"num_layers": 2},
              "synthesis_kwargs": {"channel_base": 64, "channel_max": 8}}  # fmt: skip
    state = {"_init_kwargs": kwargs, "_parameters": {}, "_buffers": {}, "_modules": {}}
    for key, value in changes.items():
        target = kwargs if key in kwargs or key == "img_resolution" else state
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return {"_nvidia_record": state}
