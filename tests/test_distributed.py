"""Two processes (gloo on the CPU) do what one does: the data-parallel trainers (stego, texture,
attributor) follow the one-process run to float rounding, resume included; the batch commands
split their files under torchrun and with --shard K/N, and the merges of N shards equal one run.

Processes are spawned with torch.multiprocessing (one spawn runs several scenarios, so the
start-up is paid once) or started by torchrun in a subprocess where the CLI is the subject.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_close_in_norm, error_line
from PIL import Image
from safetensors.torch import load_file

from gantk.errors import GantkError
from gantk.nn.distributed import Dist, Shard, check_parts, work_range

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Starting processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, fn: Callable[..., None], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")  # fmt: skip
    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def spawn_two(fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` in two processes joined as a torchrun job would be (gloo)."""
    torch.multiprocessing.spawn(_worker, (_free_port(), fn, args), nprocs=2, join=True)


def torchrun(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """``gantk ARGS`` under ``torchrun --nproc-per-node 2``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "gantk", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------------------------
# Helpers of the split itself


def test_shard_parsing_and_the_parts_tile_the_inputs() -> None:
    assert Shard.parse("1/3") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"
    assert Shard.parse(None).whole
    for bad, words in [("3/2", "K must be below N"), ("2/2", "K must be below N"),
                       ("0/0", "N must be at least 1"), ("1", "is not K/N"),
                       ("-1/2", "is not K/N")]:  # fmt: skip
        with pytest.raises(GantkError, match=words):
            Shard.parse(bad)
    # Shards of 10 items, each split again between two processes: contiguous, disjoint, all.
    pieces = [work_range(10, Shard(k, 3), Dist(r, 2)) for k in range(3) for r in range(2)]
    assert [i for p in pieces for i in p] == list(range(10))
    check_parts([(str(k), p.start, p.stop) for k, p in enumerate(pieces)], 10, "parts")
    with pytest.raises(GantkError, match=r"miss items 3\.\.5 of 10"):
        check_parts([("a", 0, 3), ("b", 6, 10)], 10, "parts")
    with pytest.raises(GantkError, match="b overlaps"):
        check_parts([("a", 0, 6), ("b", 5, 10)], 10, "parts")
    with pytest.raises(GantkError, match=r"miss items 8\.\.9 of 10"):
        check_parts([("a", 0, 8)], 10, "parts")


def test_an_uneven_batch_is_refused() -> None:
    with pytest.raises(GantkError, match="--batch-size 5 does not split evenly over 2 processes"):
        Dist(0, 2).check_batch(5)


# ----------------------------------------------------------------------------------------------
# Data-parallel trainers


def _stego_config(design: str, steps: int):
    from gantk.fingerprint.train_stego import StegoTrainConfig

    # Noise among the perturbations: its per-pixel draw is the one a split draw would get wrong.
    extra = ({"robust": ["noise"], "target_acc": 0.6, "chroma_weight": 1.0, "l2_delay": 0,
              "l2_ramp": 1} if design == "paper" else {"target_acc": 0.6, "canvas": 2})  # fmt: skip
    return StegoTrainConfig("builtin:photos?n=16", bits=8, resolution=32, batch_size=4,
                            steps=steps, snapshot_every=2, log_every=1, design=design,
                            **extra)  # fmt: skip


def _texture_config(data: Path, steps: int, mix: str = "blend"):
    from helpers import TINY_TEXTURE_MIXER

    from gantk.texture.train import TextureTrainConfig

    return TextureTrainConfig(data=str(data), **TINY_TEXTURE_MIXER, batch_size=2, steps=steps,
                              snapshot_every=2, log_every=1, mix=mix,
                              gram_net="random-vgg19")  # fmt: skip


def _attributor_config(data: Path, variant: str):
    from gantk.attribution.train import AttributorTrainConfig

    return AttributorTrainConfig(str(data), 16, variant=variant, steps=3, batch_size=4,
                                 channel_base=32, val_fraction=0.25, eval_every=3,
                                 augment=["noise", "jpeg"] if variant == "full" else [],
                                 augment_p=0.7)  # fmt: skip


def _train_everything(root: Path, textures: Path, sources: Path) -> None:
    """Every trainer, in this process (one) or in each of a spawned pair; runs in ROOT/<name>."""
    from gantk.attribution.train import AttributorTrainer
    from gantk.fingerprint.stego_runs import start_or_resume, trainer_for
    from gantk.texture.train import TextureTrainer
    from gantk.texture.train import start_or_resume as texture_resume

    for design in ("paper", "native"):
        trainer = trainer_for(_stego_config(design, 3), root / f"stego-{design}")
        trainer.accurate_since = 0  # the perturbations and the image loss from the first step
        trainer.run()
    # Stopped after 2 steps and resumed to 3: as the uninterrupted run.
    first = trainer_for(_stego_config("paper", 2), root / "stego-resumed")
    first.accurate_since = 0
    first.run()
    start_or_resume(_stego_config("paper", 3), root / "stego-resumed", resume=True).run()
    # Stopped after 2 steps, to be resumed with another number of processes.
    half = trainer_for(_stego_config("paper", 2), root / "stego-half")
    half.accurate_since = 0
    half.run()
    TextureTrainer(_texture_config(textures, 2), root / "texture").run()
    # The select task's regions are drawn for the whole batch too.
    TextureTrainer(_texture_config(textures, 2, "select"), root / "texture-select").run()
    TextureTrainer(_texture_config(textures, 1), root / "texture-resumed").run()
    texture_resume(_texture_config(textures, 2), root / "texture-resumed", resume=True).run()
    for variant in ("full", "visnet"):
        AttributorTrainer(_attributor_config(sources, variant), root / f"attr-{variant}").run()


def _initial(root: Path, textures: Path, sources: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Each run's weights before training (the trainers seed them: the same in every process)."""
    from gantk.attribution.train import AttributorTrainer
    from gantk.fingerprint.stego_runs import trainer_for
    from gantk.texture.train import TextureTrainer

    initial = {}
    for design in ("paper", "native"):
        t = trainer_for(_stego_config(design, 3), root / "unused")
        initial[f"stego-{design}"] = {
            **{f"encoder.{k}": v for k, v in t.encoder.state_dict().items()},
            **{f"decoder.{k}": v for k, v in t.decoder.state_dict().items()},
        }
    initial["stego-resumed"] = initial["stego-paper"]
    texture = TextureTrainer(_texture_config(textures, 2), root / "unused")
    initial["texture"] = initial["texture-resumed"] = dict(texture.model_ema.state_dict())
    initial["texture-select"] = initial["texture"]
    for variant in ("full", "visnet"):
        model = AttributorTrainer(_attributor_config(sources, variant), root / "unused").model
        initial[f"attr-{variant}"] = dict(model.state_dict())
    return {k: {n: t.clone() for n, t in v.items()} for k, v in initial.items()}


MODEL_FILES = {"stego-paper": "stego.safetensors", "stego-native": "stego.safetensors",
               "stego-resumed": "stego.safetensors", "texture": "latest.safetensors",
               "texture-resumed": "latest.safetensors", "texture-select": "latest.safetensors",
               "attr-full": "latest.safetensors",
               "attr-visnet": "latest.safetensors"}  # fmt: skip


def _texture_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for i in range(3):
        wave = 127 + 100 * np.sin(xx / (2 + i) + yy / (3 + 2 * i))
        arr = wave[..., None] * np.array([1.0, 0.4 + 0.2 * i, 0.3]) + rng.normal(0, 15, (48, 48, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / f"tex{i}.png")
    return root


def _sources_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for k, name in enumerate(("ganA", "real")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 256, (16, 16, 3)) // (1 + 3 * k)
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_two_processes_train_as_one(tmp_path: Path) -> None:
    textures = _texture_folder(tmp_path / "textures")
    sources = _sources_folder(tmp_path / "sources")
    _train_everything(tmp_path / "one", textures, sources)
    spawn_two(_train_everything, tmp_path / "two", textures, sources)
    initial = _initial(tmp_path, textures, sources)
    for run, name in MODEL_FILES.items():
        one = load_file(tmp_path / "one" / run / name)
        two = load_file(tmp_path / "two" / run / name)
        assert one.keys() == two.keys(), run
        # What training changed, compared: the weights themselves would hide a wrong update
        # behind their initial values. Rounding moves it by a fraction of its size.
        for key in one:
            if one[key].is_floating_point() and key in initial[run]:
                start = initial[run][key].float()
                moved = one[key].float() - start
                if moved.norm() > 0:
                    assert_close_in_norm(two[key].float() - start, moved, 1e-3, f"{run} {key}")
        # The logged losses and accuracies are the global batch's, step by step.
        log_one, log_two = _log(tmp_path / "one" / run), _log(tmp_path / "two" / run)
        assert [e["step"] for e in log_one] == [e["step"] for e in log_two], run
        for a, b in zip(log_one, log_two, strict=True):
            for key, value in a.items():
                if isinstance(value, float):
                    assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (run, key)
    # The state does not depend on the number of processes: two processes' run resumed by one.
    from gantk.fingerprint.stego_runs import start_or_resume

    start_or_resume(_stego_config("paper", 3), tmp_path / "two" / "stego-half", resume=True).run()
    resumed_by_one = load_file(tmp_path / "two" / "stego-half" / "stego.safetensors")
    for name, one in load_file(tmp_path / "one" / "stego-paper" / "stego.safetensors").items():
        resumed, start = resumed_by_one[name], initial["stego-paper"][name].float()
        if (one.float() - start).norm() > 0:
            assert_close_in_norm(resumed.float() - start, one.float() - start, 1e-3, name)
    # Only rank 0 wrote: the files of one run, no more.
    for run in MODEL_FILES:
        assert sorted(p.name for p in (tmp_path / "two" / run).iterdir()) == sorted(
            p.name for p in (tmp_path / "one" / run).iterdir()
        ), run


# ----------------------------------------------------------------------------------------------
# Batch commands: torchrun's processes, --shard K/N and the merges


def _run_cli(args: list[str]) -> str:
    """``gantk ARGS`` in this process (whichever rank it is): its stdout; a failure raises."""
    from typer.testing import CliRunner

    from gantk.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, (args, result.stderr)
    return result.stdout


def _batch_commands(commands: dict[str, list[str]], out: Path) -> None:
    """Each command in turn; rank 0 (or the one process) keeps its stdout in OUT/NAME.json."""
    for name, args in commands.items():
        stdout = _run_cli(args)
        if int(os.environ.get("RANK", "0")) == 0:
            (out / f"{name}.json").write_text(stdout)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory) -> dict[str, Path]:
    """Images of mixed sizes in sub-folders, a stego model, labeled sources and an attributor."""
    from gantk.attribution.networks import AttributorConfig
    from gantk.attribution.train import build_model, save_attributor
    from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
    from gantk.fingerprint.train_stego import save_stego

    root = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True)
    for i in range(7):
        where = "sub/" if i % 3 == 0 else ""
        size = (40, 48, 3) if i % 2 else (36, 36, 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(
            root / "images" / f"{where}im{i}.png"
        )
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "images/gray.png")
    torch.manual_seed(0)
    config = StegoConfig(8, 32)
    stego = save_stego(root / "stego.safetensors", StegoEncoder(config), StegoDecoder(config))
    sources = _sources_folder(root / "sources")
    model = build_model(AttributorConfig(16, ["ganA", "real"], "full", 32))
    attributor = save_attributor(root / "attributor.safetensors", model, {})
    sets = root / "setb"
    _run_cli(["data", "export", "builtin:shapes", sets, "-n", "10", "--seed", "5"])
    return {"root": root, "images": root / "images", "stego": stego, "sources": sources,
            "attributor": attributor, "setb": sets}  # fmt: skip


def _commands(inputs: dict[str, Path], out: Path, shard: str | None = None) -> dict[str, list]:
    """The batch commands writing into ``out``; with ``shard`` each computes that part."""
    part = ["--shard", shard] if shard else []
    features = ["--features", "random-inception", "--batch-size", "4"]
    return {
        "embed": ["fingerprint-embed", inputs["images"], "--encoder", inputs["stego"],
                  "--fingerprint", "0xb2", "--out", out / "embed", "--json", *part],
        "embed-per-image": ["fingerprint-embed", inputs["images"], "--encoder", inputs["stego"],
                            "--per-image", "--seed", "7", "--out", out / "per-image", "--json",
                            *part],
        "decode": ["fingerprint-decode", inputs["root"] / "one" / "embed", "--decoder",
                   inputs["stego"], "--expect", inputs["root"] / "one" / "embed", "--csv",
                   out / "decode.csv", "--json", *part],
        "attribute": ["attribute", inputs["sources"], "--model", inputs["attributor"], "--eval",
                      "--attack", "all", "--out", out / "predictions.csv", "--json", *part],
        "stats": ["evaluate", "fid", "builtin:shapes", "-n", "10", *features, "--save-stats",
                  out / "shapes.npz", "--json", *part],
        **({} if shard else {
            "metrics": ["evaluate", "all", "builtin:shapes", inputs["setb"], "-n", "10",
                        "--metrics", "fid,kid,pr,prd", "--kid-subset-size", "5",
                        "--kid-subsets", "3", "--clusters", "3", "--runs", "2", "--angles", "11",
                        *features, "--json"],
        }),
    }  # fmt: skip


def test_batch_commands_split_among_processes_and_shards(batch_inputs) -> None:
    root = batch_inputs["root"]
    one, two = root / "one", root / "two"
    one.mkdir()
    two.mkdir()
    _batch_commands(_commands(batch_inputs, one), one)
    spawn_two(_batch_commands, _commands(batch_inputs, two), two)

    # fingerprint-embed: the same images and the same record, byte for byte.
    for name in ("embed", "per-image"):
        assert _tree(two / name) == _tree(one / name), name
    for name in ("embed", "embed-per-image"):
        a, b = (json.loads((d / f"{name}.json").read_text()) for d in (one, two))
        assert _without(a, "out") == _without(b, "out")
    # fingerprint-decode and attribute: the report and the per-image rows of one process.
    assert (two / "decode.csv").read_bytes() == (one / "decode.csv").read_bytes()
    assert json.loads((two / "decode.json").read_text()) == json.loads(
        (one / "decode.json").read_text()
    )
    assert (two / "predictions.csv").read_bytes() == (one / "predictions.csv").read_bytes()
    a, b = (json.loads((d / "attribute.json").read_text()) for d in (one, two))
    assert _without(a, "predictions") == _without(b, "predictions")
    # The feature pass: statistics summed across processes, features joined in order.
    _assert_same_stats(two / "shapes.npz", one / "shapes.npz")
    a, b = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (one, two))
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-6), key

    # The same split without torchrun: three shards, then the merges.
    shards = [root / f"shard-{k}" for k in range(3)]
    for k, folder in enumerate(shards):
        folder.mkdir()
        _batch_commands(_commands(batch_inputs, folder, f"{k}/3"), folder)
    for name in ("embed", "per-image"):
        _run_cli(["fingerprint-merge", *(s / name for s in reversed(shards)), "--out",
                  root / f"merged-{name}"])  # fmt: skip
        assert _tree(root / f"merged-{name}") == _tree(one / name), name
    _run_cli(["evaluate", "merge-stats", *(s / "shapes.npz" for s in shards), "--out",
              root / "merged.npz"])  # fmt: skip
    _assert_same_stats(root / "merged.npz", one / "shapes.npz")
    whole = _fid(one / "shapes.npz", batch_inputs["setb"])
    assert _fid(root / "merged.npz", batch_inputs["setb"]) == pytest.approx(whole, rel=1e-6)
    # Decoding and attribution in parts: their CSV rows, in shard order, are one run's.
    for name in ("decode.csv", "predictions.csv"):
        lines = [(s / name).read_text().splitlines() for s in shards]
        joined = [lines[0][0]] + [row for part in lines for row in part[1:]]
        assert joined == (one / name).read_text().splitlines(), name


def _assert_same_stats(path: Path, expected: Path) -> None:
    """Statistics files holding the same set: counts equal, mean and covariance up to the
    rounding of sums added in another order."""
    a, b = np.load(path), np.load(expected)
    assert int(a["random-inception.count"]) == int(b["random-inception.count"])
    for key in ("random-inception.mu", "random-inception.cov"):
        assert_close_in_norm(a[key], b[key], 1e-12, key)


def _fid(stats: Path, other: Path) -> float:
    doc = json.loads(_run_cli(["evaluate", "fid", stats, other, "-n", "10", "--features",
                               "random-inception", "--batch-size", "4", "--json"]))  # fmt: skip
    return doc["metrics"]["fid[random-inception]"]


# ----------------------------------------------------------------------------------------------
# Bad input: parts that do not make one whole


def _parts_of_statistics(root: Path, job: str = "a", shards: int = 3) -> list[Path]:
    """Part files of a set of 9 made-up 2048-d features, as `--shard k/3 --save-stats` writes."""
    from gantk.metrics.frechet import GaussianStats
    from gantk.metrics.sources import ImageSource, save_partial_stats

    features = np.random.default_rng(0).normal(size=(9, 2048))
    paths = []
    for k in range(shards):
        first, stop = k * 9 // shards, (k + 1) * 9 // shards
        stats = GaussianStats(2048)
        stats.update(features[first:stop])
        path = root / f"{job}-{k}.npz"
        save_partial_stats(path, ImageSource("set", "dataset", 9, 32),
                           {"random-inception": stats}, f"{k}/{shards}", (first, stop),
                           {"set": job})  # fmt: skip
        paths.append(path)
    return paths


def test_statistics_parts_that_are_no_whole_are_refused(cli, tmp_path: Path) -> None:
    parts = _parts_of_statistics(tmp_path)
    other = _parts_of_statistics(tmp_path, job="b")
    out = tmp_path / "merged.npz"
    cases = [
        (parts[:2], r"miss items 6\.\.8 of 9"),
        ([parts[0], parts[2]], r"miss items 3\.\.5 of 9"),
        ([*parts, parts[1]], "overlaps another of the parts"),
        ([parts[0], other[1], parts[2]], "is a part of another job"),
    ]
    for given, words in cases:
        line = error_line(cli("evaluate", "merge-stats", *given, "--out", out))
        assert re.search(words, line), line
        assert not out.exists()
    # A part is not a set's statistics, and a set's statistics are not a part.
    assert cli("evaluate", "merge-stats", *parts, "--out", out).exit_code == 0
    line = error_line(cli("evaluate", "fid", parts[0], out))
    assert "holds the statistics of part 0/3 of a set" in line and "merge-stats" in line
    line = error_line(cli("evaluate", "merge-stats", out, "--out", tmp_path / "again.npz"))
    assert "is not a part of a set's statistics" in line
    # The merged statistics are the whole set's.
    from gantk.metrics.sources import load_stats

    merged = load_stats(out).stats["random-inception"]
    features = np.random.default_rng(0).normal(size=(9, 2048))
    mu, cov = merged.mean_cov()
    assert_close_in_norm(mu, features.mean(axis=0), 1e-12, "mean")
    assert_close_in_norm(cov, np.cov(features, rowvar=False), 1e-12, "covariance")


def test_embedding_parts_that_are_no_whole_are_refused(cli, batch_inputs, tmp_path) -> None:
    from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
    from gantk.fingerprint.train_stego import save_stego

    images, stego = batch_inputs["images"], batch_inputs["stego"]
    torch.manual_seed(1)
    config = StegoConfig(8, 32)
    other = save_stego(tmp_path / "other.safetensors", StegoEncoder(config), StegoDecoder(config))

    def part(name: str, shard: str, *extra: str) -> Path:
        out = tmp_path / name
        result = cli("fingerprint-embed", images, "--encoder", extra[0] if extra else stego,
                     "--fingerprint", extra[1] if len(extra) > 1 else "0xb2", "--shard", shard,
                     "--out", out, "-q")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        return out

    first, second = part("p0", "0/2"), part("p1", "1/2")
    out = tmp_path / "merged"
    cases = [
        ([first], r"miss items 4\.\.7 of 8"),
        ([first, first, second], "overlaps another of the parts"),
        ([first, part("fp", "1/2", str(stego), "0x4d")], "parts of different embeddings"),
        ([first, part("enc", "1/2", str(other))], "embedded with another encoder"),
        ([first, part("thirds", "1/3")], r"miss items 4\.\.5 of 8|overlaps"),
        ([images], "fingerprint.json"),
    ]
    for given, words in cases:
        line = error_line(cli("fingerprint-merge", *given, "--out", out))
        assert re.search(words, line), line
        assert not out.exists()
    whole = tmp_path / "whole"
    assert cli("fingerprint-embed", images, "--encoder", stego, "--fingerprint", "0xb2",
               "--out", whole, "-q").exit_code == 0  # fmt: skip
    line = error_line(cli("fingerprint-merge", whole, second, "--out", out))
    assert "holds a whole embedding, not a part of one" in line


def test_attribute_refuses_to_visualize_a_part(cli, batch_inputs, tmp_path) -> None:
    line = error_line(cli("attribute", batch_inputs["sources"], "--model",
                          batch_inputs["attributor"], "--shard", "0/2", "--visualize",
                          tmp_path / "v.png"))  # fmt: skip
    assert "--visualize picks its images from the whole folder" in line


def test_train_stego_under_torchrun_resumes_as_one_process_trains(cli, tmp_path: Path) -> None:
    """The command itself under torchrun: one JSON document, rank 0's files, --resume."""
    args = ["builtin:photos?n=16", "--bits", "8", "--resolution", "32", "--batch-size", "4",
            "--snapshot-every", "1", "--target-acc", "0.6", "--precision", "fp32",
            "--device", "cpu"]  # fmt: skip
    single = tmp_path / "single"
    assert cli("train", "stego", *args, "--steps", "2", "--out", single).exit_code == 0
    assert cli("train", "stego", "--resume", "--out", single, "--steps", "3").exit_code == 0
    run = tmp_path / "run"
    first = torchrun(["train", "stego", *args, "--steps", "2", "--out", run, "--json"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["step"] == 2  # one document: rank 1 printed nothing
    resumed = torchrun(["train", "stego", "--resume", "--out", run, "--steps", "3", "--json"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["step"] == 3
    # The command logs every 50 steps and where it stops: steps 2 and 3, each the mean of
    # the steps since the line before.
    a, b = _log(single), _log(run)
    assert [e["step"] for e in a] == [e["step"] for e in b] == [2, 3]
    for x, y in zip(a, b, strict=True):
        for key in ("bce", "visibility", "bit_acc", "psnr", "budget_db"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-5), key
    one = load_file(single / "stego.safetensors")
    two = load_file(run / "stego.safetensors")
    for key in one:
        assert_close_in_norm(two[key], one[key], 1e-4, key)
