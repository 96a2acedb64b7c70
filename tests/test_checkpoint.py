"""gantk.io.checkpoint: safetensors checkpoints with metadata, and resumable training state."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import gantk
from gantk.errors import GantkError
from gantk.io.checkpoint import (
    flatten_state,
    load_checkpoint,
    load_training_state,
    read_metadata,
    rng_state,
    save_checkpoint,
    save_training_state,
    set_rng_state,
    unflatten_state,
)


def _reason(exc: Exception, path: Path) -> str:
    """The message without the file's path (tmp_path holds the test's name)."""
    return str(exc).replace(str(path), "<path>")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(4, 3, generator=g),
        "b": torch.arange(5, dtype=torch.int64),
        "flag": torch.tensor([True, False]),
        "half": torch.randn(2, 2, generator=g).half(),
    }


def test_round_trip(tmp_path: Path) -> None:
    tensors = _tensors()
    config = {"resolution": 32, "channels": [64, 32], "name": "tiny", "nested": {"a": 1.5}}
    path = save_checkpoint(tmp_path / "g.safetensors", tensors, "gan-generator", config)
    assert path == tmp_path / "g.safetensors"

    ckpt = load_checkpoint(path, "gan-generator")

    assert ckpt.kind == "gan-generator"
    assert ckpt.config == config
    assert ckpt.version == gantk.__version__
    assert set(ckpt.tensors) == set(tensors)
    for key, value in tensors.items():
        assert ckpt.tensors[key].dtype == value.dtype
        assert torch.equal(ckpt.tensors[key], value)
    assert ckpt.metadata["gantk.kind"] == "gan-generator"
    assert read_metadata(path)["gantk.version"] == gantk.__version__
    # Several acceptable kinds, and no kind check at all.
    assert load_checkpoint(path, ["gan-discriminator", "gan-generator"]).kind == "gan-generator"
    assert load_checkpoint(path).kind == "gan-generator"
    # Nothing left beside it.
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors"]


def test_extra_metadata_is_kept(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.safetensors", {"x": torch.zeros(1)}, "thing", metadata={"step": 12}
    )
    assert load_checkpoint(path).metadata["step"] == "12"


def test_views_sharing_storage_save_fine(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"all": base, "row": base[1], "col": base[:, 2], "t": base.t()}
    path = save_checkpoint(tmp_path / "v.safetensors", tensors, "views")
    ckpt = load_checkpoint(path, "views")
    for key, value in tensors.items():
        assert torch.equal(ckpt.tensors[key], value)


def test_overwrite_requires_force(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"x": torch.zeros(2)}, "k")
    with pytest.raises(GantkError, match="--force"):
        save_checkpoint(path, {"x": torch.ones(2)}, "k", force=False)
    assert torch.equal(load_checkpoint(path).tensors["x"], torch.zeros(2))
    save_checkpoint(path, {"x": torch.ones(2)}, "k")  # force is the default
    assert torch.equal(load_checkpoint(path).tensors["x"], torch.ones(2))


def test_wrong_kind_names_both(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "d.safetensors", {"x": torch.zeros(1)}, "gan-discriminator")
    with pytest.raises(GantkError, match="gan-discriminator") as info:
        load_checkpoint(path, "gan-generator")
    assert "gan-generator" in str(info.value)


def test_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(GantkError, match="not a safetensors"):
        load_checkpoint(path)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(GantkError, match="not a safetensors"):
        load_checkpoint(raw)


class _Trap:
    """Unpickling this creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_never_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    if writer == "torch":
        torch.save({"payload": _Trap(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(_Trap(str(marker))))
    assert not marker.exists()
    with pytest.raises(GantkError, match="not a safetensors"):
        load_checkpoint(path)
    with pytest.raises(GantkError):
        load_training_state(path)
    assert not marker.exists()


def test_truncated_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "t.safetensors", {"w": torch.randn(64, 64)}, "k")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(GantkError) as info:
        load_checkpoint(path, "k")
    assert "truncated" in _reason(info.value, path)


@pytest.mark.parametrize("content", [b"", b"\x01\x02", b"1234567"])
def test_too_short_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(content)
    with pytest.raises(GantkError, match="too short"):
        load_checkpoint(path)


def test_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    header = b"{not json!"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    with pytest.raises(GantkError) as info:
        load_checkpoint(path)
    assert "header" in _reason(info.value, path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_plain_safetensors_is_not_a_gantk_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path))
    with pytest.raises(GantkError, match="not a gantk checkpoint"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(GantkError, match="not a gantk checkpoint"):
        load_checkpoint(path, "gan-generator")


# --------------------------------------------------------------------------- training state


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(8, 4)
        loss = (model(x) - torch.randn(8, 2)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.5, 0.9))


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    saved = rng_state()
    try:
        torch.manual_seed(0)
        model, opt = _fresh()
        _train(model, opt, 3)
        path = save_training_state(
            tmp_path / "state.safetensors",
            {
                "optimizer": opt.state_dict(),
                "step": 3,
                "rng": rng_state(),
                "model": model.state_dict(),
            },
            config={"lr": 0.05},
        )
        _train(model, opt, 3)
        uninterrupted = [p.detach().clone() for p in model.parameters()]

        torch.manual_seed(1234)  # scramble the RNG and the weights
        resumed_model, resumed_opt = _fresh()
        state, config = load_training_state(path)
        assert config == {"lr": 0.05}
        assert state["step"] == 3
        resumed_model.load_state_dict(state["model"])
        resumed_opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        _train(resumed_model, resumed_opt, 3)
    finally:
        set_rng_state(saved)

    resumed = [p.detach() for p in resumed_model.parameters()]
    assert len(resumed) == len(uninterrupted) == 2
    for a, b in zip(uninterrupted, resumed, strict=True):
        assert torch.equal(a, b)
    # And the run really moved: resuming from scratch would not give the same weights.
    torch.manual_seed(0)
    untrained, _ = _fresh()
    assert not torch.equal(untrained.weight, resumed_model.weight)


def test_training_state_kind_is_checked(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "g.safetensors", {"x": torch.zeros(1)}, "gan-generator")
    with pytest.raises(GantkError, match="training-state"):
        load_training_state(path)
    path = save_checkpoint(
        tmp_path / "s.safetensors", {"x": torch.zeros(1)}, "training-state", force=True
    )
    with pytest.raises(GantkError, match="no readable training state"):
        load_training_state(path)


def test_flatten_unflatten_round_trip(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint32).reshape(2, 3)
    state = {
        "state": {
            0: {"exp_avg": torch.ones(3), "step": torch.tensor(4.0)},
            7: {"m": torch.zeros(2)},
        },
        "groups": [{"params": [0, 7], "betas": (0.5, 0.999), "lr": 1e-3, "extra": None}],
        "numpy": ("MT19937", arr, 624, 0, 0.0),
        "flags": [True, False, None, "text", -3, 2.5],
        "nested": ((1, 2), [3, (4,)]),
    }
    tensors, skeleton = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert len(tensors) == 3
    json.dumps(skeleton)  # the skeleton is plain JSON

    # Through a real checkpoint file: JSON and safetensors both in the loop.
    path = save_training_state(tmp_path / "s.safetensors", state)
    restored, _ = load_training_state(path)
    for result in (unflatten_state(tensors, json.loads(json.dumps(skeleton))), restored):
        assert set(result["state"]) == {0, 7}
        assert all(isinstance(k, int) for k in result["state"])
        assert torch.equal(result["state"][0]["exp_avg"], torch.ones(3))
        assert torch.equal(result["state"][0]["step"], torch.tensor(4.0))
        assert torch.equal(result["state"][7]["m"], torch.zeros(2))
        assert result["groups"] == [
            {"params": [0, 7], "betas": (0.5, 0.999), "lr": 1e-3, "extra": None}
        ]
        assert isinstance(result["groups"][0]["betas"], tuple)
        name, restored_arr, pos, has_gauss, cached = result["numpy"]
        assert (name, pos, has_gauss, cached) == ("MT19937", 624, 0, 0.0)
        assert restored_arr.dtype == np.uint32
        np.testing.assert_array_equal(restored_arr, arr)
        assert result["flags"] == [True, False, None, "text", -3, 2.5]
        assert result["nested"] == ((1, 2), [3, (4,)])


def test_flatten_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match="object"):
        flatten_state({"bad": object()})


def test_rng_state_round_trip() -> None:
    import random

    saved = rng_state()
    try:
        first = (random.random(), np.random.rand(), torch.rand(1).item())
        tensors, skeleton = flatten_state(saved)
        set_rng_state(unflatten_state(tensors, json.loads(json.dumps(skeleton))))
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    finally:
        set_rng_state(saved)
