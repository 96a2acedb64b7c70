"""gantk evaluate: feature networks loaded offline, FID/KID/precision-recall, statistics cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.errors import GantkError
from gantk.metrics.distribution import kid, precision_recall
from gantk.metrics.features import fid_inception_architecture, load_feature_net, metric_name

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def test_inception_loads_the_standard_file_from_the_hub_cache(torch_hub) -> None:
    """The real loading path, with a state dict of the FID architecture under its usual name."""
    state = {
        k: (v + 0.01 if v.is_floating_point() else v)
        for k, v in fid_inception_architecture().state_dict().items()
    }
    torch.save(state, torch_hub / INCEPTION_FILE)
    net = load_feature_net("inception")
    assert net.weights == str(torch_hub / INCEPTION_FILE)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    feats = net(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    # The file's weights are used, not the seeded random ones.
    with torch.no_grad():
        assert not torch.allclose(feats, load_feature_net("random-inception")(images))


def test_vgg16_loads_from_an_explicit_path(tmp_path) -> None:
    import torchvision

    torch.manual_seed(3)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "my-vgg.pth"
    torch.save(state, path)
    net = load_feature_net("vgg16", weights=path)
    assert torch.equal(net.module.features[0].weight, state["features.0.weight"])
    assert net(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1, 4096)


def test_missing_and_wrong_weights(torch_hub) -> None:
    with pytest.raises(GantkError, match=INCEPTION_FILE.replace(".", r"\.")):
        load_feature_net("inception")
    torch.save({"conv.weight": torch.zeros(1)}, torch_hub / INCEPTION_FILE)
    with pytest.raises(GantkError, match="does not fit"):
        load_feature_net("inception")
    (torch_hub / INCEPTION_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(GantkError, match="not a readable weight file"):
        load_feature_net("inception")


def test_metric_names_carry_non_standard_features() -> None:
    assert metric_name("fid", "inception") == "fid"
    assert metric_name("fid", "random-inception") == "fid[random-inception]"
    assert metric_name("pr", "vgg16") == "pr"
    assert metric_name("kid", "vgg16") == "kid[vgg16]"


def test_precision_recall_on_known_sets() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=gen)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # Fakes as dense as the reals but covering only the strip x < 0.2 of the unit square:
    # all of them are realistic (precision 1) while recall is about the strip's share.
    square = torch.rand(2000, 2, generator=gen)
    strip = square[square[:, 0] < 0.2]
    precision, recall = precision_recall(square, strip)
    assert precision == 1.0
    assert 0.18 < recall < 0.3
    with pytest.raises(GantkError, match="more than 3"):
        precision_recall(real[:3], real[:3])


def test_kid_is_near_zero_for_one_distribution_and_seeded() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 16, generator=gen), torch.randn(400, 16, generator=gen)
    mean, std = kid(a, b, subsets=20, subset_size=200, seed=0)
    assert abs(mean) < 3 * std + 1e-3
    assert kid(a, b, subsets=20, subset_size=200, seed=0) == (mean, std)
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=200, seed=0)
    assert shifted > 10 * abs(mean)


def test_kid_matches_a_direct_unbiased_mmd() -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(30, 4, generator=gen).double(),
        torch.randn(30, 4, generator=gen).double() + 0.5,
    )
    k = lambda p, q: (p @ q.T / 4 + 1) ** 3  # noqa: E731
    m = 30
    expected = (
        (k(x, x).sum() - k(x, x).trace()) / (m * (m - 1))
        + (k(y, y).sum() - k(y, y).trace()) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    # One subset holding every image (permutations do not change the statistic).
    assert kid(x, y, subsets=1, subset_size=30)[0] == pytest.approx(float(expected), rel=1e-10)


def test_cli_all_metrics_with_random_features(cli) -> None:
    result = cli(
        "evaluate",
        "all",
        "builtin:shapes?n=40",
        "builtin:shapes?n=40&seed=9",
        "--features",
        "random-inception",
        "--kid-subsets",
        "5",
        "--kid-subset-size",
        "20",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    names = set(summary["metrics"])
    assert {
        "fid[random-inception]",
        "kid[random-inception]",
        "precision[random-inception]",
        "recall[random-inception]",
    } <= names
    assert "fid" not in names  # never printed as the standard number
    assert summary["features"]["random-inception"]["weights"] is None
    assert [s["count"] for s in summary["sets"]] == [40, 40]
    assert "singular" in result.stderr  # 40 samples for 2048-d features


def test_fid_between_two_statistics_files_needs_no_weights(cli, tmp_path, monkeypatch) -> None:
    from scipy import linalg

    # The tests run offline with an empty hub: loading the Inception weights would fail.
    monkeypatch.setenv("GANTK_OFFLINE", "1")
    rng = np.random.default_rng(0)
    stats = {}
    for name, shift in (("a", 0.0), ("b", 0.3)):
        features = rng.normal(shift, 1.0, (200, 2048))
        stats[name] = (features.mean(0), np.cov(features, rowvar=False))
        np.savez(tmp_path / f"{name}.npz", mu=stats[name][0], sigma=stats[name][1])
    result = cli("evaluate", "fid", tmp_path / "a.npz", tmp_path / "b.npz", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    (mu1, s1), (mu2, s2) = stats["a"], stats["b"]
    root = linalg.sqrtm(s1 @ s2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))
    assert report["metrics"]["fid"] == pytest.approx(expected, rel=1e-6)
    assert report["features"]["inception"]["weights"] == "statistics files"


def test_cli_saved_stats_give_the_same_fid(cli, tmp_path) -> None:
    stats = tmp_path / "real.npz"
    common = ["--features", "random-inception", "--device", "cpu", "--json"]
    assert (
        cli("evaluate", "fid", "builtin:digits?n=30", "--save-stats", stats, *common).exit_code == 0
    )
    direct = json.loads(
        cli(
            "evaluate", "fid", "builtin:digits?n=30", "builtin:shapes?n=30&resolution=32", *common
        ).stdout
    )["metrics"]["fid[random-inception]"]
    cached = json.loads(
        cli("evaluate", "fid", stats, "builtin:shapes?n=30&resolution=32", *common).stdout
    )["metrics"]["fid[random-inception]"]
    assert cached == pytest.approx(direct, rel=1e-9)
    line = error_line(
        cli(
            "evaluate",
            "fid",
            stats,
            "builtin:shapes?n=30",
            "--features",
            "random-vgg16",
            "--device",
            "cpu",
        )
    )
    assert "random-inception" in line


def test_cli_evaluates_a_generator_on_the_fly(cli, tmp_path) -> None:
    from gantk.gan.networks import Generator, NetworkConfig
    from gantk.gan.trainer import GENERATOR_KIND
    from gantk.io.checkpoint import save_checkpoint

    config = NetworkConfig(
        resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=4
    )
    ckpt = tmp_path / "g.safetensors"
    save_checkpoint(
        ckpt, Generator(config).state_dict(), GENERATOR_KIND, {"network": config.to_dict()}
    )
    result = cli(
        "evaluate",
        "kid",
        ckpt,
        "builtin:shapes?n=20&resolution=16",
        "-n",
        "20",
        "--features",
        "random-inception",
        "--kid-subset-size",
        "10",
        "--kid-subsets",
        "3",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sets"][0]["kind"] == "generator" and summary["sets"][0]["count"] == 20


def test_cli_bad_input(cli, tmp_path, torch_hub) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no files" in error_line(
        cli("evaluate", "fid", empty, "builtin:digits", "--features", "random-inception")
    )
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(one / "a.png")
    assert "at least 2" in error_line(
        cli("evaluate", "fid", one, "builtin:digits", "--features", "random-inception")
    )
    # Standard features without their weight file: says which file and where it comes from.
    line = error_line(cli("evaluate", "fid", "builtin:digits?n=5", "builtin:digits?n=5"))
    assert INCEPTION_FILE in line and "github.com/mseitzer" in line
    assert "--save-stats" in error_line(cli("evaluate", "fid", "builtin:digits?n=5"))
    assert "not one of" in error_line(cli("evaluate", "all", "a", "b", "--metrics", "fid,is"))
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert "statistics file" in error_line(
        cli(
            "evaluate",
            "fid",
            tmp_path / "bad.npz",
            "builtin:digits?n=5",
            "--features",
            "random-inception",
        )
    )


def test_pytorch_fid_statistics_both_ways(cli, torch_hub, tmp_path) -> None:
    """pytorch-fid's .npz (mu, sigma) is read wherever gantk takes statistics, and gantk's
    --save-stats file is read by pytorch-fid; same weight file, same images: the same Gaussian."""
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    torch.manual_seed(5)
    state = {k: (v + 0.01 if v.is_floating_point() else v)
             for k, v in fid_inception_architecture().state_dict().items()}  # fmt: skip
    torch.save(state, torch_hub / INCEPTION_FILE)
    images = tmp_path / "images"
    assert cli("data", "export", "builtin:shapes", images, "-n", "12", "--resolution", "32",
               "--flat", "--quiet").exit_code == 0  # fmt: skip
    ours, theirs = tmp_path / "ours.npz", tmp_path / "theirs.npz"
    result = cli("evaluate", "fid", images, "--save-stats", ours, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    fid_score.save_fid_stats([str(images), str(theirs)], 4, "cpu", 2048, num_workers=0)

    mu_t, sigma_t = fid_score.compute_statistics_of_path(str(theirs), None, 4, 2048, "cpu")
    mu_o, sigma_o = fid_score.compute_statistics_of_path(str(ours), None, 4, 2048, "cpu")
    np.testing.assert_allclose(mu_o, mu_t, rtol=1e-3, atol=1e-4)  # two pipelines, one network
    np.testing.assert_allclose(sigma_o, sigma_t, rtol=1e-3, atol=1e-4)

    # pytorch-fid files where gantk takes statistics. Diagonal covariances have a closed form
    # (12 images give a singular 2048-d covariance, where pytorch-fid's own sqrtm gives up).
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=2048), rng.normal(size=2048)
    var1, var2 = rng.uniform(0.5, 2, 2048), rng.uniform(0.5, 2, 2048)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    np.savez(one, mu=mu1, sigma=np.diag(var1))
    np.savez(two, mu=mu2, sigma=np.diag(var2))
    result = cli("evaluate", "fid", one, two, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    closed_form = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert summary["metrics"]["fid"] == pytest.approx(closed_form, rel=1e-9)
    assert summary["sets"][0]["count"] is None  # pytorch-fid does not record it
    other = two

    narrow = tmp_path / "dims64.npz"
    np.savez(narrow, mu=np.zeros(64), sigma=np.eye(64))
    line = error_line(cli("evaluate", "fid", narrow, other, "--device", "cpu"))
    assert "64-d features (--dims 64)" in line
