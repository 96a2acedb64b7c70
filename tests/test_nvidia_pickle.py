"""Reading NVIDIA network pickles with a restricted unpickler: the fixtures made with NVIDIA's
code are read as plain data, and pickles that would run code are refused with nothing run."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from gantk.errors import GantkError
from gantk.io.nvidia_pickle import PersistentRecord, module_tensors, read_network_pickle

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2-ada"


class MakesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


class RunsAShell:
    def __init__(self, path: Path) -> None:
        self.command = f"touch {path}"

    def __reduce__(self):
        return (os.system, (self.command,))


class Evaluates:
    def __init__(self, path: Path) -> None:
        self.code = f"open({str(path)!r}, 'w').write('pwned')"

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("payload", [MakesAFile, RunsAShell, Evaluates])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, payload) -> None:
    marker = tmp_path / "created-by-the-pickle"
    path = tmp_path / "network.pkl"
    # Buried in what looks like a snapshot, as an attacker would ship it.
    path.write_bytes(pickle.dumps({"G_ema": payload(marker), "D": None}))
    with pytest.raises(GantkError, match="refused without running it"):
        read_network_pickle(path)
    assert not marker.exists()


def test_other_files_are_refused(tmp_path) -> None:
    text = tmp_path / "notes.pkl"
    text.write_text("not a pickle")
    with pytest.raises(GantkError, match="not a readable network pickle"):
        read_network_pickle(text)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(GantkError, match="not a StyleGAN2-ADA snapshot"):
        read_network_pickle(plain)
    with pytest.raises(GantkError, match="does not exist"):
        read_network_pickle(tmp_path / "missing.pkl")


def test_tensors_and_numpy_values_are_rebuilt_as_data(tmp_path, monkeypatch) -> None:
    """A snapshot-shaped pickle written here with the same opcodes NVIDIA's carry."""
    weight = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    state = {"_parameters": {"weight": weight}, "_buffers": {"w_avg": torch.ones(3)},
             "_modules": {}, "z_dim": 3}  # fmt: skip
    record = {"type": "class", "version": 4, "module_src": "import os; os.system('x')",
              "class_name": "Generator", "module_name": "_imported_module_1",
              "state": state}  # fmt: skip
    # pickle names functions by module: give it NVIDIA's module name to write.
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)
    path = tmp_path / "snap.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _PersistentStandIn(record), "scale": np.float32(0.5)}))
    data = read_network_pickle(path)
    assert isinstance(data["G_ema"], PersistentRecord)
    assert data["G_ema"].module_src.startswith("import os")  # kept as text, never run
    tensors = module_tensors(data["G_ema"])
    assert torch.equal(tensors["weight"], weight.detach()) and torch.equal(
        tensors["w_avg"], torch.ones(3)
    )
    assert data["scale"] == np.float32(0.5)


class _PersistentStandIn:
    """Pickles as NVIDIA's persistent objects do: a call of
    torch_utils.persistence._reconstruct_persistent_obj(meta)."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def _reconstruct_persistent_obj(meta):  # pickled by reference under NVIDIA's name
    raise AssertionError("never called by gantk's reader")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent (a bare clone)")
@pytest.mark.parametrize("name", ["sg2ada-tiny-32", "sg2ada-tiny-32-cond"])
def test_nvidia_fixtures_read_as_data(name) -> None:
    data = read_network_pickle(FIXTURES / f"{name}.pkl")
    assert {"G", "D", "G_ema"} <= set(data)
    g = module_tensors(data["G_ema"])
    assert g["synthesis.b4.const"].shape == (64, 4, 4)
    assert g["mapping.w_avg"].shape == (64,)
    assert ("mapping.embed.weight" in g) == name.endswith("cond")
    assert data["G_ema"].state["z_dim"] == 64 and data["G_ema"].state["img_resolution"] == 32
    d = module_tensors(data["D"])
    assert any(k.startswith("b32.") for k in d)
