"""Walk docs/bad-inputs.md: every row's command, run as written, gives one error line with the
expected words, exit status 2, writes nothing and leaves its inputs as they were."""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    error_line_after_warnings,
    nvidia_generator_record,
    write_corrupt_png,
    write_nvidia_pickle,
    write_png_bomb,
)
from PIL import Image

from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.fingerprint.train_stego import save_stego
from gantk.gan.networks import GENERATOR_KIND, Generator, NetworkConfig
from gantk.io.checkpoint import save_checkpoint, save_training_state

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
NET = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                    channel_max=8)  # fmt: skip


def rows() -> list[tuple[str, str, str]]:
    text = CATALOGUE.read_text()
    table = text.split("<!-- catalogue:")[1].split("<!-- end of catalogue -->")[0]
    found = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            found.append((cells[0], cells[1].strip("`"), cells[2]))
    return found


def _images(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
    return root


def _statistics_part(path: Path) -> Path:
    """Part 0/2 of a 4-image set's statistics, as `evaluate fid --shard 0/2 --save-stats`."""
    from gantk.metrics.frechet import GaussianStats
    from gantk.metrics.sources import ImageSource, save_partial_stats

    stats = GaussianStats(2048)
    stats.update(np.random.default_rng(0).normal(size=(2, 2048)))
    save_partial_stats(path, ImageSource("set", "dataset", 4, 32), {"inception": stats}, "0/2",
                       (0, 2), {"set": "set"})  # fmt: skip
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    f: dict[str, Path] = {"images": _images(root / "images")}
    f["bad_images"] = _images(root / "bad_images")
    write_corrupt_png(f["bad_images"] / "broken.png")
    write_png_bomb(f["bad_images"] / "bomb.png")
    f["bombs"] = root / "bombs"
    f["bombs"].mkdir()
    write_png_bomb(f["bombs"] / "bomb.png")
    f["cmyk"] = root / "cmyk"
    f["cmyk"].mkdir()
    Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(f["cmyk"] / "c.tif")
    torch.manual_seed(0)
    tensors = Generator(NET).state_dict()
    f["gen"] = save_checkpoint(root / "g.safetensors", tensors, GENERATOR_KIND,
                               {"network": NET.to_dict()})  # fmt: skip
    forged = {**NET.to_dict(), "z_dim": -5}
    f["forged"] = save_checkpoint(root / "forged.safetensors", tensors, GENERATOR_KIND,
                                  {"network": forged})  # fmt: skip
    f["pickle"] = root / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, f["pickle"])
    config = StegoConfig(8, 32)
    f["stego"] = save_stego(root / "stego.safetensors", StegoEncoder(config), StegoDecoder(config))
    f["damaged_run"] = root / "run"
    f["damaged_run"].mkdir()
    (f["damaged_run"] / "train-config.json").write_text('{"data": "builtin:shapes", "out')
    (f["damaged_run"] / "latest-state.safetensors").write_bytes(f["gen"].read_bytes())
    f["bad_csv"] = root / "attrs.csv"
    f["bad_csv"].write_bytes("filename,smile\na.png,1\nb\xe9.png,0\n".encode("latin-1"))
    _statistics(root, f)
    _safetensors_headers(root, f)
    _training_states(root, f)
    _nvidia_pickles(root, f)
    _fingerprint_records(root, f)
    _packs(root, f)
    _run_folders(root, f)
    _misc(root, f)
    return f


def _stats_file(path: Path, **arrays) -> Path:
    with path.open("wb") as out:  # compressed: 2048-d covariances of zeros and ones are tiny
        np.savez_compressed(out, **arrays)
    return path


def _statistics(root: Path, f: dict[str, Path]) -> None:
    """FID statistics files, good (pytorch-fid's 2048-d mu and sigma) and bad."""
    mu, sigma = np.zeros(2048), np.eye(2048)
    f["stats"] = _stats_file(root / "stats.npz", mu=mu, sigma=sigma)
    nan_mu, inf_mu = mu.copy(), mu.copy()
    nan_mu[3], inf_mu[0] = np.nan, np.inf
    f["stats_nan_mu"] = _stats_file(root / "nan-mu.npz", mu=nan_mu, sigma=sigma)
    f["stats_inf_mu"] = _stats_file(root / "inf-mu.npz", mu=inf_mu, sigma=sigma)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = sigma.copy()
        bad[5, 5] = value
        f[f"stats_{name}_sigma"] = _stats_file(root / f"{name}-sigma.npz", mu=mu, sigma=bad)
    skew = sigma.copy()
    skew[0, 1] = 0.5
    f["stats_skew"] = _stats_file(root / "skew.npz", mu=mu, sigma=skew)
    negative = sigma.copy()
    negative[7, 7] = -1.0
    f["stats_negative"] = _stats_file(root / "negative.npz", mu=mu, sigma=negative)
    f["stats_complex"] = _stats_file(root / "complex.npz", mu=mu, sigma=sigma * (1 + 1j))
    f["stats_cut"] = root / "cut.npz"
    f["stats_cut"].write_bytes(f["stats"].read_bytes()[:200])
    f["stats_part"] = _statistics_part(root / "part-0.npz")
    f["stats_npy"] = root / "renamed.npz"
    np.save(root / "array.npy", mu)
    (root / "array.npy").rename(f["stats_npy"])
    f["stats_8d"] = _stats_file(root / "eight.npz", mu=np.zeros(8), sigma=np.eye(8))
    gantk_format = {"inception.mu": mu, "inception.cov": sigma, "inception.count": [1, 2]}
    f["stats_count"] = _stats_file(root / "count.npz", **gantk_format)
    f["stats_folder"] = root / "folder.npz"
    f["stats_folder"].mkdir()
    f["fifo_npz"] = root / "pipe.npz"
    os.mkfifo(f["fifo_npz"])


def _safetensors_with(path: Path, header: dict, data: bytes = bytes(16)) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _safetensors_headers(root: Path, f: dict[str, Path]) -> None:
    meta = {"gantk.kind": GENERATOR_KIND, "gantk.config": "{}"}
    for name, offsets in (("int", 5), ("one", [0]), ("text", ["0", "16"])):
        header = {
            "__metadata__": meta,
            "w": {"dtype": "F32", "shape": [4], "data_offsets": offsets},
        }
        f[f"st_offsets_{name}"] = _safetensors_with(root / f"offsets-{name}.safetensors", header)
    header = {"__metadata__": ["gantk.kind"], "w": {"dtype": "F32", "shape": [4],
                                                     "data_offsets": [0, 16]}}  # fmt: skip
    f["st_meta_list"] = _safetensors_with(root / "meta-list.safetensors", header)
    tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
               for k, v in Generator(NET).state_dict().items()}  # fmt: skip
    f["nan_gen"] = save_checkpoint(root / "nan.safetensors", tensors, GENERATOR_KIND,
                                   {"network": NET.to_dict()})  # fmt: skip


def _training_states(root: Path, f: dict[str, Path]) -> None:
    """--resume folders whose state file was edited: a stego run's config with a setting
    gantk does not know, or that is a list; a GAN run's state naming a tensor it lacks."""
    from safetensors.torch import save_file

    from gantk.fingerprint.train_stego import StegoTrainConfig
    from gantk.gan.config import TrainConfig
    from gantk.gan.trainer import STATE_KIND

    config = {**asdict(StegoTrainConfig(data="builtin:shapes")), "bogus": 1}
    f["stego_unknown"] = root / "stego-unknown"
    f["stego_unknown"].mkdir()
    save_training_state(f["stego_unknown"] / "state.safetensors", {"step": 0},
                        "stego-training-state", config)  # fmt: skip
    f["stego_list"] = root / "stego-list"
    f["stego_list"].mkdir()
    save_file({"x": torch.zeros(1)}, str(f["stego_list"] / "state.safetensors"),
              {"gantk.kind": "stego-training-state", "gantk.config": "[1, 2]",
               "gantk.state": "{}"})  # fmt: skip
    f["gan_missing"] = root / "gan-missing"
    f["gan_missing"].mkdir()
    run = TrainConfig(data="builtin:shapes?n=8", out=str(f["gan_missing"]), network=NET)
    (f["gan_missing"] / "train-config.json").write_text(json.dumps(run.to_dict()))
    skeleton = {"__dict__": [["G", {"__tensor__": "state.G.weight"}]]}
    save_checkpoint(f["gan_missing"] / "latest-state.safetensors", {"other": torch.zeros(1)},
                    STATE_KIND, {"network": NET.to_dict()},
                    {"gantk.state": json.dumps(skeleton)})  # fmt: skip


def _nvidia_pickles(root: Path, f: dict[str, Path]) -> None:
    """NVIDIA snapshots whose records are of the wrong shape, and pickles whose opcodes claim
    more than they hold or nest without end (written opcode by opcode)."""
    records = {
        "nv_no_resolution": nvidia_generator_record(img_resolution=None),
        "nv_modules_list": nvidia_generator_record(_modules=[1, 2]),
        "nv_parameters_text": nvidia_generator_record(_parameters="weights"),
        "nv_c_dim_text": nvidia_generator_record(c_dim="3"),
        "nv_mapping_list": nvidia_generator_record(mapping_kwargs=[["num_layers", 2]]),
    }
    for name, record in records.items():
        f[name] = write_nvidia_pickle(root / f"{name}.pkl", {"G_ema": record})

    def key(text: str) -> bytes:  # BINUNICODE
        return b"X" + struct.pack("<I", len(text)) + text.encode()

    opcodes = {
        # EMPTY_LIST 3000 times, APPEND 2999 times: a list in a list ... 3000 deep
        "nv_deep": b"\x80\x02}" + key("G_ema") + b"]" * 3000 + b"a" * 2999 + b"s.",
        # BINBYTES8 claiming 2^45 and 2^63 bytes, followed by two
        "nv_huge": b"\x80\x04}" + key("G_ema") + b"\x8e" + struct.pack("<Q", 2**45) + b"xxs.",
        "nv_huger": b"\x80\x04}" + key("G_ema") + b"\x8e" + struct.pack("<Q", 2**63) + b"xxs.",
        # torch.storage._load_from_bytes(b"hello"): a tensor's data that is no storage
        "nv_storage": b"\x80\x02}" + key("G_ema") + b"ctorch.storage\n_load_from_bytes\n"
        + b"C\x05hello\x85R" + b"s.",
    }  # fmt: skip
    for name, data in opcodes.items():
        f[name] = root / f"{name}.pkl"
        f[name].write_bytes(data)


def _fingerprint_records(root: Path, f: dict[str, Path]) -> None:
    """fingerprint.json records and JSON registries that are not what gantk writes."""
    good = {"bits": 8, "fingerprint": "0xb2", "per_image": False,
            "encoder": {"resolution": 32}, "design": "paper"}  # fmt: skip
    records = {
        "rec_list": [1, 2],
        "rec_no_fingerprint": {"bits": 8},
        "rec_encoder_text": {**good, "encoder": "stego.safetensors"},
        "record": good,
    }
    for name, record in records.items():
        f[name] = root / f"{name}.json"
        f[name].write_text(json.dumps(record))
    per_image = {**good, "fingerprint": None, "per_image": True, "map": "fingerprints.csv"}
    f["rec_no_map"] = root / "rec-no-map"
    f["rec_no_map"].mkdir()
    (f["rec_no_map"] / "fingerprint.json").write_text(json.dumps(per_image))
    f["rec_bad_map"] = root / "rec-bad-map"
    f["rec_bad_map"].mkdir()
    (f["rec_bad_map"] / "fingerprint.json").write_text(json.dumps(per_image))
    (f["rec_bad_map"] / "fingerprints.csv").write_text("file,code\na.png,0xb2\n")
    f["damaged_embedding"] = root / "damaged-embedding"
    f["damaged_embedding"].mkdir()
    (f["damaged_embedding"] / "fingerprint.json").write_text('{"bits": 8, "finger')
    entry = {"name": "alice", "fingerprint": "0xb2", "bits": 8}
    registries = {
        "reg_bits_text": {**entry, "bits": "abc"},
        "reg_bits_null": {**entry, "bits": None},
        "reg_fingerprint_number": {**entry, "fingerprint": 178},
    }
    for name, bad in registries.items():
        f[name] = root / f"{name}.json"
        f[name].write_text(json.dumps({"fingerprints": [entry, bad]}))
    f["reg_binary"] = root / "registry.json"
    f["reg_binary"].write_bytes(bytes(range(256)))
    f["fifo"] = root / "pipe.json"
    os.mkfifo(f["fifo"])


def _pack(path: Path, images: np.ndarray | None, **parts) -> Path:
    import h5py

    with h5py.File(path, "w") as h5:
        if images is None:
            h5.create_group("images")
        else:
            h5.create_dataset("images", data=images)
        if "labels" in parts:
            labels = h5.create_dataset("labels", data=np.asarray(parts["labels"]))
            labels.attrs["class_names"] = parts.get("class_names", '["a", "b"]')
    return path


def _packs(root: Path, f: dict[str, Path]) -> None:
    """h5 packs that are not what `gantk data pack` writes."""
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    f["pack_names"] = _pack(root / "names.h5", pixels, labels=[0, 1, 0], class_names="[a, b")
    f["pack_group"] = _pack(root / "group.h5", None)
    f["pack_float"] = _pack(root / "float.h5", pixels / 255.0)
    f["pack_uint16"] = _pack(root / "uint16.h5", pixels.astype(np.uint16) * 257)
    f["pack_few_labels"] = _pack(root / "few-labels.h5", pixels, labels=[0])
    f["pack_label_beyond"] = _pack(root / "beyond.h5", pixels, labels=[0, 5, 1])


def _run_folders(root: Path, f: dict[str, Path]) -> None:
    """A GAN run with a log (one whose loss is no number), a fingerprinted run to mint
    generators from, and a labeled folder of two sources."""
    from gantk.fingerprint.scalable.networks import (
        FINGERPRINTED_KIND,
        FingerprintedGenerator,
        make_decoder,
    )

    f["run"] = root / "gan-run"
    f["run"].mkdir()
    (f["run"] / "log.jsonl").write_text('{"kimg": 0.5, "loss_d": 1.2, "loss_g": 0.7}\n')
    (f["run"] / "latest.safetensors").write_bytes(f["gen"].read_bytes())
    f["bad_log"] = root / "bad-log"
    f["bad_log"].mkdir()
    (f["bad_log"] / "log.jsonl").write_text('{"kimg": 0.5, "loss_d": "abc", "loss_g": 0.7}\n')
    config = NetworkConfig(**{**NET.to_dict(), "fingerprint_bits": 8})
    tensors = {f"G.{k}": v for k, v in FingerprintedGenerator(config).state_dict().items()}
    tensors.update({f"F.{k}": v for k, v in make_decoder(config).state_dict().items()})
    f["fp_run_dir"] = root / "fp-run"
    f["fp_run"] = save_checkpoint(f["fp_run_dir"] / "latest.safetensors", tensors,
                                  FINGERPRINTED_KIND, {"network": config.to_dict(),
                                                       "run_id": "run-1"})  # fmt: skip
    f["labeled"] = root / "labeled"
    for source in ("real", "fake"):
        _images(f["labeled"] / source)


def _misc(root: Path, f: dict[str, Path]) -> None:
    f["long_csv"] = root / "long.csv"
    f["long_csv"].write_text("filename,smile\na.png,1\nb.png,0\nc.png," + "1" * 200_000 + "\n")
    f["png_folder"] = root / "shots.png"
    f["png_folder"].mkdir()
    (f["png_folder"] / "holiday.jpg").write_bytes(b"someone's photo")
    f["animated"] = root / "animated"
    f["animated"].mkdir()
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    frames[0].save(f["animated"] / "a.png", save_all=True, append_images=frames[1:])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_catalogue_has_every_class() -> None:
    cases = [case for case, _, _ in rows()]
    assert len(cases) >= 19 and len(set(cases)) == len(cases)


@pytest.mark.parametrize(("case", "command", "expected"), rows(), ids=[r[0] for r in rows()])
def test_catalogue_row(cli, files, tmp_path, case, command, expected) -> None:
    out = tmp_path / "out"
    out.mkdir()
    places = {name: str(path) for name, path in files.items()}
    places["tmp"] = str(out)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    places["link"] = str(out / "link.png")
    Path(places["link"]).symlink_to(precious)
    places["dangling"] = str(out / "dangling")
    Path(places["dangling"]).symlink_to(tmp_path / "nowhere")
    args = [re.sub(r"\{(\w+)\}", lambda m: places[m.group(1)], a) for a in shlex.split(command)]
    before = _snapshot(files["images"].parent)
    line = error_line_after_warnings(cli(*args))
    assert expected in line, (case, line)
    assert sorted(p.name for p in out.iterdir()) == ["dangling", "link.png"]  # nothing written
    assert precious.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    assert _snapshot(files["images"].parent) == before


def test_catalogue_commands_name_real_files(files) -> None:
    names = {m for _, command, _ in rows() for m in re.findall(r"\{(\w+)\}", command)}
    assert names <= {*files, "tmp", "link", "dangling"}, names
