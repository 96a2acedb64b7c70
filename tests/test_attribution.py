"""Attribution: the classifier and its variants, evaluation figures, attacks, the two commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.attribution.attribute import attacked, dihedral
from gantk.attribution.data import split
from gantk.attribution.evaluation import confusion_matrix, fd_ratio, report
from gantk.attribution.networks import Attributor, AttributorConfig
from gantk.attribution.variants import (
    band_limit,
    gaussian_downsample,
    laplacian_band,
    parse_variant,
)
from gantk.errors import GantkError
from gantk.perturb import parse_attacks, random_attack

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["ganA", "ganB", "real"]


def _source_image(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random scenes; the 'GANs' leave stationary traces a CNN can learn (a checkerboard
    of up-sampling artefacts, or blur), the way real GAN fingerprints are stationary."""
    coarse = rng.uniform(30, 225, (4, 4, 3))
    img = np.kron(coarse, np.ones((size // 4, size // 4, 1)))
    img += rng.normal(0, 12, img.shape)
    if kind == "ganA":
        checker = (np.indices((size, size)).sum(axis=0) % 2) * 2 - 1
        img += 30 * checker[..., None]
    elif kind == "ganB":
        img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
    return np.clip(img, 0, 255).astype(np.uint8)


def make_sources(root: Path, per_class: int, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_source_image(kind, rng, size)).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A small attributor trained through the CLI, and a labeled test folder."""
    from typer.testing import CliRunner

    from gantk.cli.app import app

    base = tmp_path_factory.mktemp("attr")
    sources = make_sources(base / "sources", 90)
    test = make_sources(base / "test", 15, seed=1)
    run = base / "run"
    result = CliRunner().invoke(app, [
        "train", "attributor", str(sources), "--out", str(run), "--steps", "1000",
        "--eval-every", "500", "--channel-base", "128", "--batch-size", "16", "--device", "cpu",
        "--json", "--quiet",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return {"sources": sources, "test": test, "run": run, "summary": json.loads(result.stdout)}


# -- the network ---------------------------------------------------------------------------------


def test_attributor_logits_are_features_times_model_fingerprints():
    torch.manual_seed(0)
    net = Attributor(AttributorConfig(16, CLASSES, channel_base=64))
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    feats = net.image_fingerprints(x)
    assert feats.shape == (5, 512)
    weights = net.model_fingerprints()
    assert weights.shape == (3, 512)
    bias = net.classify.bias * net.classify.bias_gain
    torch.testing.assert_close(net(x), feats @ weights.T + bias)


@pytest.mark.parametrize(
    ("variant", "first_conv_input"),
    [
        ("full", 16),
        ("predownsample@8", 8),
        ("residual@8", 8),
        ("residual@4", 4),
        ("postpool@8", 16),
    ],
)
def test_variants_start_where_they_say(variant, first_conv_input):
    net = Attributor(AttributorConfig(16, CLASSES, variant, channel_base=64))
    seen = {}
    net.convs[0].register_forward_pre_hook(lambda m, i: seen.update(size=i[0].shape[-1]))
    out = net(torch.zeros(2, 3, 16, 16))
    assert out.shape == (2, 3) and seen["size"] == first_conv_input
    # postpool@8 stops convolving at 8x8 and averages: no 4x4 stage, a pooled FC input
    if variant == "postpool@8":
        assert net.pooled and net.fc.weight.shape[1] == net.config.channels(8)


def test_band_limits():
    x = torch.rand(2, 3, 32, 32)
    low = gaussian_downsample(x, 8)
    assert low.shape == (2, 3, 8, 8)
    # the pyramid keeps the mean (a low-pass filter with unit DC gain)
    torch.testing.assert_close(low.mean(), x.mean(), atol=0.02, rtol=0)
    # a constant image has no high frequencies: its Laplacian band is zero away from the border
    band = laplacian_band(torch.full((1, 3, 32, 32), 0.7), 16)
    assert band.shape == (1, 3, 16, 16)
    assert band[..., 3:-3, 3:-3].abs().max() < 1e-5
    # and a checkerboard is all high frequency: the band keeps most of its energy
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1
    kept = laplacian_band(checker.expand(1, 3, 16, 16), 16)
    assert kept[..., 3:-3, 3:-3].abs().mean() > 0.5
    # Table 4.4's 4x4 row: the band between 4x4 and 2x2 exists and is what residual@4 sees.
    variant = parse_variant("residual@4", 32)
    band4 = band_limit(x, variant)
    assert band4.shape == (2, 3, 4, 4) and band4.abs().max() > 0
    torch.testing.assert_close(band4, laplacian_band(x, 4))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wavelet@8", "unknown variant"),
        ("predownsample", "needs a size"),
        ("residual@2", "power of two from 4"),
        ("predownsample@32", "from 4 to 16"),
        ("postpool@12", "power of two"),
        ("full@8", "takes no @N"),
    ],
)
def test_bad_variants(text, message):
    with pytest.raises(GantkError, match=message):
        parse_variant(text, 32)


# -- data, evaluation ----------------------------------------------------------------------------


def test_split_is_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [10, 20, 3])
    train, val = split(labels, 0.2, seed=3)
    assert not set(train) & set(val) and len(train) + len(val) == 33
    assert np.bincount(labels[val]).tolist() == [2, 4, 1]


def test_confusion_and_report_against_sklearn():
    from sklearn.metrics import average_precision_score
    from sklearn.metrics import confusion_matrix as sk_confusion

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    predicted = probs.argmax(1)
    np.testing.assert_array_equal(
        confusion_matrix(labels, predicted, 3), sk_confusion(labels, predicted, labels=[0, 1, 2])
    )
    rep = report(labels, predicted, probs, ["0_real", "ganA", "ganB"])
    assert rep["accuracy"] == pytest.approx((labels == predicted).mean())
    fake = labels != 0
    assert rep["real_vs_fake"]["accuracy"] == pytest.approx(((predicted != 0) == fake).mean())
    assert rep["real_vs_fake"]["average_precision"] == pytest.approx(
        average_precision_score(fake, 1 - probs[:, 0])
    )
    per_class = [(predicted[labels == c] == c).mean() for c in range(3)]
    assert list(rep["per_class_accuracy"].values()) == pytest.approx(per_class)
    assert "real_vs_fake" not in report(labels, predicted, probs, ["a", "b", "c"])


def test_fd_ratio_separates_separated_classes():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(200, 5))
    labels = np.repeat([0, 1], 100)
    mixed = fd_ratio(same, labels)
    apart = fd_ratio(same + labels[:, None] * 3.0, labels)
    assert mixed < 3 and apart > 20 * mixed
    # raw-pixel-wide features go through PCA and still separate
    wide = rng.normal(size=(80, 600)) + np.repeat([0, 1], 40)[:, None] * 0.5
    assert fd_ratio(wide, np.repeat([0, 1], 40)) > 2


# -- attacks and test-time augmentation ----------------------------------------------------------


def test_random_attack_draws_per_image_and_keeps_size():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    for name in ("noise", "blur", "jpeg", "crop", "combo"):
        y1 = random_attack(name, x, torch.Generator().manual_seed(1))
        y2 = random_attack(name, x, torch.Generator().manual_seed(1))
        assert y1.shape == x.shape and torch.equal(y1, y2)
    # noise strengths are drawn per image within 5-20 of 255 (std on the [0, 1] scale)
    y = random_attack("noise", torch.zeros(40, 1, 64, 64), torch.Generator().manual_seed(0))
    stds = (y / 2).flatten(1).std(1)
    assert stds.min() > 4.5 / 255 and stds.max() < 21 / 255 and stds.max() - stds.min() > 5 / 255
    with pytest.raises(GantkError, match="unknown attack 'gamma'"):
        random_attack("gamma", x, torch.Generator())
    assert parse_attacks("all") == ["noise", "blur", "crop", "jpeg", "combo"]
    with pytest.raises(GantkError, match="choose from"):
        parse_attacks("jpeg,rotate")


def test_attacked_arrays_stay_uint8_and_sized():
    arrays = [np.full((20, 24, 3), 128, np.uint8), np.zeros((16, 16, 3), np.uint8)]
    out = attacked(arrays, "combo", seed=0)
    assert [a.shape for a in out] == [(20, 24, 3), (16, 16, 3)]
    assert all(a.dtype == np.uint8 for a in out)
    assert arrays[0].max() == 128  # inputs untouched


def test_dihedral_gives_eight_distinct_invertible_views():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = [dihedral(x, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x)


# -- the commands --------------------------------------------------------------------------------


def test_train_learns_and_stores_class_names(trained):
    from gantk.io.checkpoint import read_metadata

    summary = trained["summary"]
    assert summary["classes"] == CLASSES  # sorted subfolder names
    assert summary["val_acc"] >= 0.8, summary
    meta = read_metadata(trained["run"] / "latest.safetensors")
    assert json.loads(meta["gantk.config"])["class_names"] == CLASSES
    log = [json.loads(line) for line in (trained["run"] / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [500, 1000]
    assert (trained["run"] / "best.safetensors").is_file()


def test_attribute_eval_csv_and_confusion(trained, cli, tmp_path):
    model = trained["run"] / "latest.safetensors"
    csv_path, png = tmp_path / "pred.csv", tmp_path / "confusion.png"
    result = cli("attribute", trained["test"], "--model", model, "--eval", "--attack",
                 "clean,jpeg", "--out", csv_path, "--confusion", png, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    clean = doc["results"]["clean"]
    assert clean["accuracy"] >= 0.8 and clean["images"] == 45
    assert sum(map(sum, clean["confusion"])) == 45
    assert set(doc["results"]) == {"clean", "jpeg"}
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "file,predicted,p_ganA,p_ganB,p_real" and len(rows) == 46
    # the CSV's predictions are the ones the accuracy was computed from
    right = sum(r.split(",")[1] == r.split("/")[0] for r in rows[1:])
    assert right / 45 == pytest.approx(clean["accuracy"])
    assert Image.open(png).format == "PNG"


def test_attribute_unlabeled_with_tta(trained, cli, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in sorted((trained["test"] / "ganA").iterdir())[:5]:
        (loose / path.name).write_bytes(path.read_bytes())
    result = cli("attribute", loose, "--model", trained["run"] / "latest.safetensors", "--tta",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["method"] == "attributor[full]+tta" and sum(doc["results"]["clean"]["counts"]) == 5


def test_finetune_with_attacks_keeps_classes(trained, cli, tmp_path):
    out = tmp_path / "immune"
    base = trained["run"] / "latest.safetensors"
    result = cli("train", "attributor", trained["sources"], "--finetune", base, "--augment",
                 "jpeg,combo", "--steps", "20", "--eval-every", "20", "--out", out,
                 "--device", "cpu", "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["classes"] == CLASSES and doc["step"] == 20
    saved = json.loads((out / "config.json").read_text())
    assert saved["augment"] == ["jpeg", "combo"]
    assert (saved["channel_base"], saved["recipe"]) == (128, "fast")  # the model's width


def test_baseline_through_the_cli(trained, cli):
    result = cli("attribute", trained["test"], "--baseline", "eigenface", "--fit",
                 trained["sources"], "--eval", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    clean = json.loads(result.stdout)["results"]["clean"]
    assert clean["accuracy"] > 0.5 and clean["fd_ratio"] is not None


# -- bad input -----------------------------------------------------------------------------------


def test_one_class_is_refused(cli, tmp_path):
    make_sources(tmp_path / "s", 4)
    for kind in CLASSES[1:]:
        for f in (tmp_path / "s" / kind).iterdir():
            f.unlink()
        (tmp_path / "s" / kind).rmdir()
    line = error_line(cli("train", "attributor", tmp_path / "s", "--out", tmp_path / "r"))
    assert "holds one class (ganA)" in line
    assert not (tmp_path / "r").exists()


def test_empty_class_is_refused(cli, tmp_path):
    make_sources(tmp_path / "s", 4)
    (tmp_path / "s" / "ganC").mkdir()
    line = error_line(cli("train", "attributor", tmp_path / "s", "--out", tmp_path / "r"))
    assert "ganC has no images" in line


def test_mixed_sizes_are_resized_and_said(cli, tmp_path):
    src = make_sources(tmp_path / "s", 6)
    Image.new("RGB", (40, 24), (9, 9, 9)).save(src / "real" / "wide.png")
    result = cli("train", "attributor", src, "--out", tmp_path / "r", "--resolution", "16",
                 "--steps", "2", "--eval-every", "2", "--channel-base", "64",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "1 of 19 images" in result.stderr and "40x24" in result.stderr
    assert "resized to 16x16" in result.stderr


def test_class_mismatch_lists_both(trained, cli, tmp_path):
    other = tmp_path / "other"
    make_sources(other, 2)
    (other / "ganB").rename(other / "ganZ")
    line = error_line(cli("attribute", other, "--model", trained["run"] / "latest.safetensors",
                          "--eval"))  # fmt: skip
    assert "classes ganA, ganZ, real" in line and "model knows ganA, ganB, real" in line


def test_eval_on_one_source(trained, cli, tmp_path):
    only = tmp_path / "only"
    (only / "ganB").mkdir(parents=True)
    for path in sorted((trained["test"] / "ganB").iterdir()):
        (only / "ganB" / path.name).write_bytes(path.read_bytes())
    result = cli("attribute", only, "--model", trained["run"] / "latest.safetensors", "--eval",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    clean = json.loads(result.stdout)["results"]["clean"]
    assert clean["images"] == 15 and clean["per_class_accuracy"]["ganA"] is None
    assert clean["accuracy"] == pytest.approx(clean["per_class_accuracy"]["ganB"])


def test_command_line_misuse(trained, cli, tmp_path):
    model = trained["run"] / "latest.safetensors"
    test = trained["test"]
    assert "needs --fit" in error_line(cli("attribute", test, "--baseline", "knn"))
    assert "works at its own size" in error_line(
        cli("attribute", test, "--model", model, "--resolution", "32")
    )
    assert "either --model" in error_line(cli("attribute", test))
    assert "unknown baseline 'svm'" in error_line(
        cli("attribute", test, "--baseline", "svm", "--fit", trained["sources"])
    )
    assert "give --model" in error_line(
        cli(
            "attribute",
            test,
            "--baseline",
            "knn",
            "--fit",
            trained["sources"],
            "--visualize",
            tmp_path / "v.png",
        )
    )
    assert "needs a visNet attributor" in error_line(
        cli("attribute", test, "--model", model, "--visualize", tmp_path / "v.png")
    )
    assert "unknown variant 'wavelet'" in error_line(
        cli(
            "train",
            "attributor",
            trained["sources"],
            "--variant",
            "wavelet",
            "--out",
            tmp_path / "r",
        )
    )
    existing = tmp_path / "exists.csv"
    existing.write_text("keep")
    assert "already exists" in error_line(cli("attribute", test, "--model", model, "--out",
                                              existing))  # fmt: skip
    assert existing.read_text() == "keep"
    assert "already holds an attributor" in error_line(
        cli("train", "attributor", trained["sources"], "--out", trained["run"])
    )


def test_visnet_trains_and_visualizes(trained, cli, tmp_path):
    run, png = tmp_path / "vis", tmp_path / "fig.png"
    result = cli("train", "attributor", trained["sources"], "--variant", "visnet", "--steps", "6",
                 "--eval-every", "6", "--channel-base", "64", "--out", run, "--device", "cpu",
                 "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert {"l1", "adv", "ce", "gp"} <= set(json.loads(result.stdout))
    result = cli("attribute", trained["test"], "--model", run / "latest.safetensors", "--eval",
                 "--visualize", png, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "attributor[visnet]"
    assert Image.open(png).size[0] > 400
