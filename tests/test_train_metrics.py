"""Metrics while a GAN trains (`train gan --metrics`) and `gantk train report`: values logged at
the right kimg and equal to an independent evaluation of the same snapshot, best.safetensors
kept by the first metric across a resume, the data's features cached once, and bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.gan.config import TrainConfig
from gantk.gan.generate import load_generator
from gantk.gan.networks import NetworkConfig
from gantk.gan.run import resume_training, start_training
from gantk.gan.sampling import GeneratorSampler
from gantk.io.checkpoint import read_metadata
from gantk.io.datasets import open_dataset
from gantk.metrics import distribution
from gantk.metrics.features import load_feature_net
from gantk.metrics.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "builtin:shapes?n=24"
COUNT = 12
STEP_KIMG = 0.008


def _config(out: Path, steps: int, **kw) -> TrainConfig:
    network = NetworkConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                            channel_base=64, channel_max=8)  # fmt: skip
    base = dict(data=DATA, out=str(out), network=network, kimg=steps * STEP_KIMG, batch_size=8,
                tick_kimg=STEP_KIMG, snapshot_kimg=2 * STEP_KIMG, sample_kimg=2 * STEP_KIMG,
                grid=2, device="cpu", metrics=["fid", "kid"], metrics_count=COUNT,
                metrics_features="random-inception")  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _measures(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [e for e in lines if "fid[random-inception]" in e]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("metrics") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 12 images for 2048-d features: said, and fine here
        start_training(_config(out, 4), log=lambda _: None)
        resume_training(out, {"kimg": 6 * STEP_KIMG}, log=lambda _: None)
    return out


def test_measured_at_each_interval_and_equal_to_an_independent_evaluation(run: Path) -> None:
    measures = _measures(run)
    assert [m["step"] for m in measures] == [2, 4, 6]
    # The 4-step snapshot scored by the metrics library directly, same seeds and data.
    snapshot = load_generator(run / "snapshot-000000032img.safetensors")
    net = load_feature_net("random-inception")
    data = open_dataset(DATA, resolution=16)
    rows = sorted(np.random.RandomState(0).permutation(len(data))[:COUNT].tolist())
    real = ImageSource(DATA, "dataset", COUNT, None,
                       dataset=torch.utils.data.Subset(data, rows))  # fmt: skip
    fake = ImageSource("g", "generator", COUNT, 16, sampler=GeneratorSampler(snapshot))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real_stats, real_kept = distribution.feature_pass(real, [net], [net.name])
        fake_stats, fake_kept = distribution.feature_pass(fake, [net], [net.name])
        kid, _ = distribution.kid(real_kept[net.name], fake_kept[net.name], 100, 1000)
    fid = distribution.fid(real_stats[net.name], fake_stats[net.name])
    assert measures[1]["fid[random-inception]"] == pytest.approx(fid, rel=1e-6)
    assert measures[1]["kid[random-inception]"] == pytest.approx(kid, rel=1e-6)


def test_best_is_kept_by_the_first_metric_across_the_resume(run: Path) -> None:
    values = [m["fid[random-inception]"] for m in _measures(run)]
    meta = json.loads(read_metadata(run / "best.safetensors")["gantk.config"])
    best = int(np.argmin(values))
    assert meta["value"] == pytest.approx(values[best])
    assert meta["metric"] == "fid[random-inception]"
    assert meta["step"] == _measures(run)[best]["step"]
    # The best generator is the EMA generator of that step (the snapshot saved with it).
    best_g = load_generator(run / "best.safetensors").state_dict()
    snap = load_generator(run / f"snapshot-{meta['step'] * 8:09d}img.safetensors").state_dict()
    assert all(torch.equal(best_g[k], snap[k]) for k in snap)


def test_the_datas_features_are_computed_once(run: Path) -> None:
    cache = run / f"metrics-real-random-inception-{COUNT}.npz"
    with np.load(cache) as data:
        assert data["features"].shape == (COUNT, 2048) and int(data["count"]) == COUNT


def test_report_draws_losses_metrics_and_grids(cli, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.png"
    result = cli("train", "report", str(run), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["metrics"] == ["fid[random-inception]", "kid[random-inception]"]
    assert summary["measures"] == 3 and summary["ticks"] == 6 and len(summary["grids"]) == 4
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width >= 4 * 4 * 80
    again = cli("train", "report", str(run), "--out", str(out))
    assert again.exit_code == 2 and "--force" in error_line(again)
    missing = cli("train", "report", str(tmp_path), "--out", str(tmp_path / "r.png"))
    assert missing.exit_code == 2 and "holds no log.jsonl" in error_line(missing)
    assert not (tmp_path / "r.png").exists()


def test_bad_metrics_options(cli, tmp_path: Path) -> None:
    base = [
        "train",
        "gan",
        DATA,
        "--out",
        str(tmp_path / "r"),
        "--resolution",
        "16",
        "--batch-size",
        "8",
    ]
    assert "choose from fid, kid" in error_line(cli(*base, "--metrics", "fid,fdi"))
    # Offline without the Inception weights: said before anything is written.
    offline = cli(*base, "--metrics", "fid")
    assert offline.exit_code == 2 and "pt_inception" in error_line(offline)
    assert not (tmp_path / "r").exists()
