"""Configs read from files are checked before anything is built from them: a checkpoint's
gantk.config and a run's train-config.json, edited by hand or forged, give a one-line error
naming the field, never a traceback or a runaway allocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import error_line
from PIL import Image
from safetensors.torch import save_file

from gantk.attribution.networks import AttributorConfig
from gantk.attribution.train import build_model
from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.gan.networks import GENERATOR_KIND, Generator, NetworkConfig
from gantk.io.config_schema import parse_config

NET = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                    channel_max=8)  # fmt: skip


def _write(path: Path, tensors: dict, kind: str, config_json: str) -> Path:
    """A checkpoint whose gantk.config is exactly ``config_json`` (any JSON, even a list)."""
    meta = {"gantk.kind": kind, "gantk.config": config_json, "gantk.version": "test"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def g_tensors() -> dict:
    torch.manual_seed(0)
    return Generator(NET).state_dict()


def _net(**changes) -> str:
    return json.dumps({"network": {**NET.to_dict(), **changes}})


@pytest.mark.parametrize(
    ("config_json", "message"),
    [
        (_net(w_dim=16), "does not match its own generator config"),
        (_net(resolution=32), "does not match its own generator config"),
        ("{}", "no 'network' section"),
        (json.dumps({"network": "big"}), "config is 'big', not an object of settings"),
        ("[1, 2]", "config is [1, 2], not an object of settings"),
        (_net(z_dim=-5), "--z-dim, --w-dim"),
        (_net(z_dim="8"), "config.z_dim is '8', not a whole number"),
        (_net(z_dim=True), "config.z_dim is True, not a whole number"),
        (_net(resolution=1048576), "--resolution 1048576 is not a power of two"),
        (_net(g_attn=7), "config.g_attn is 7"),
    ],
)
def test_forged_generator_configs(cli, tmp_path, g_tensors, config_json, message) -> None:
    path = _write(tmp_path / "g.safetensors", g_tensors, GENERATOR_KIND, config_json)
    out = tmp_path / "out"
    line = error_line(cli("generate", path, "-n", "1", "--out", out))
    assert message in line and str(path) in line
    assert not out.exists()


def test_the_untouched_config_loads(cli, tmp_path, g_tensors) -> None:
    path = _write(tmp_path / "g.safetensors", g_tensors, GENERATOR_KIND, _net())
    result = cli("generate", path, "-n", "1", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_forged_stego_and_attributor_configs(cli, tmp_path) -> None:
    config = StegoConfig(8, 32)
    tensors = {
        **{f"encoder.{k}": v for k, v in StegoEncoder(config).state_dict().items()},
        **{f"decoder.{k}": v for k, v in StegoDecoder(config).state_dict().items()},
    }
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (90, 120, 30)).save(images / "x.png")
    for forged, message in [
        ({"bits": "8", "resolution": 32}, "config.bits is '8', not a whole number"),
        ({"bits": 16, "resolution": 32}, "does not match its own stego encoder config"),
        ({"resolution": 32}, "reshaped tensors, e.g. secret.weight"),  # bits: default 100
        ({"bits": 8, "resolution": 48}, "power of two"),
    ]:
        path = _write(tmp_path / "s.safetensors", tensors, "stego", json.dumps(forged))
        line = error_line(cli("fingerprint-decode", images, "--decoder", path))
        assert message in line, line
    attributor = AttributorConfig(16, ["a", "b"], channel_base=64, channel_max=8)
    weights = build_model(attributor).state_dict()
    for forged, message in [
        ({"resolution": 16, "class_names": "ab"}, "config.class_names is 'ab', not a list"),
        ({"resolution": 16, "class_names": ["a"]}, "at least two classes"),
        ({"resolution": 16, "class_names": ["a", "b"], "channel_base": 64, "channel_max": 16},
         "does not match its own attributor config"),
    ]:  # fmt: skip
        path = _write(tmp_path / "a.safetensors", weights, "attributor", json.dumps(forged))
        line = error_line(cli("attribute", images, "--model", path))
        assert message in line, line


@pytest.fixture
def run(cli, tmp_path) -> Path:
    out = tmp_path / "run"
    result = cli("train", "gan", "builtin:shapes?n=32", "--resolution", "16", "--kimg", "0.016",
                 "--batch-size", "8", "--z-dim", "8", "--w-dim", "8", "--mapping-layers", "2",
                 "--channel-base", "64", "--channel-max", "8", "--device", "cpu", "--out", out,
                 "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "is damaged ("),  # a JSON error follows
        (lambda text: "[]", "holds list, not an object of settings"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "data"}),
         "train-config.data is missing"),
        (lambda text: json.dumps({**json.loads(text), "lr": "fast"}),
         "train-config.lr is 'fast', not a number"),
        (lambda text: json.dumps({**json.loads(text), "network": None}),
         "train-config.network is None"),
    ],
)  # fmt: skip
def test_damaged_train_config_on_resume(cli, run, edit, message) -> None:
    config = run / "train-config.json"
    config.write_text(edit(config.read_text()))
    state = (run / "latest-state.safetensors").read_bytes()
    line = error_line(cli("train", "gan", "--resume", run, "--kimg", "0.032", "--device", "cpu"))
    assert message in line and "train-config.json" in line
    assert (run / "latest-state.safetensors").read_bytes() == state


def test_parse_config_against_hand_built_values() -> None:
    data = {**NET.to_dict(), "unknown_future_key": 1}
    assert parse_config(NetworkConfig, data) == NET
    with pytest.raises(ValueError, match=r"where\.attn_kernel is 1\.5, not a whole number"):
        parse_config(NetworkConfig, {**data, "attn_kernel": 1.5}, "where")
