"""CSS, CRS and CIS of `gantk evaluate texture` (thesis Table 3.1): the seam and repetition
classifiers, the Inception score, and `gantk train texture-classifiers`.

The toy textures are smooth horizontal waves, one colour, period and phase per texture, the
periods no divisor of the crop size: a real crop is continuous, two textures concatenated (a
seam) or one crop tiled twice (a repetition) jump at the join, so a classifier separates them
within a few hundred tiny steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.errors import GantkError
from gantk.metrics.inception_score import inception_score
from gantk.texture.classifiers import (
    KIND,
    ClassifierTrainConfig,
    ExampleSource,
    TextureClassifiers,
    TextureClassifiersConfig,
    load_texture_classifiers,
    save_texture_classifiers,
    tiled_twice,
    train_texture_classifiers,
    with_seams,
)
from gantk.texture.data import TextureSource
from gantk.texture.metrics import center_crop, classifier_scores

pytestmark = pytest.mark.usefixtures("one_thread")

R = 16
TINY = TextureClassifiersConfig(resolution=R, channels=8, max_channels=16)
PALETTE = [
    (60, 60, 190),
    (190, 60, 60),
    (60, 190, 60),
    (190, 190, 60),
    (60, 190, 190),
    (190, 60, 190),
]


def _wave(seed: int, height: int = 2 * R + 8, width: int = 12 * R) -> np.ndarray:
    """A texture that changes smoothly along x: a colour wave of its own period and phase."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float64)[None, :, None]
    period = rng.choice([36, 44, 52, 60, 68])  # none divides R: a tiled crop jumps at the join
    base = np.array(PALETTE[seed % len(PALETTE)])  # colours far apart: seams are colour jumps
    phase = rng.uniform(0, 2 * np.pi, 3)
    image = base + 30 * np.sin(2 * np.pi * x / period + phase) + np.zeros((height, 1, 1))
    return np.round(image).astype(np.uint8)


def _toy_sources(count: int = 6) -> list[TextureSource]:
    return [TextureSource(f"wave{i}", _wave(i)) for i in range(count)]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def toy_model() -> tuple[TextureClassifiers, dict]:
    # No augmentation: a rotated wave would run along y, with no jump at the join.
    train = ClassifierTrainConfig(steps=400, batch_size=16, lr=0.002, eval_count=64, augment=False)
    return train_texture_classifiers(_toy_sources(), TINY, train)


# --- the examples -----------------------------------------------------------------------------


def test_seams_join_two_crops_in_the_middle_half() -> None:
    left, right = torch.zeros(50, 3, R, R), torch.ones(50, 3, R, R)
    seams = with_seams(left, right, np.random.default_rng(0))
    rows = seams[:, 0, 0, :]  # one row per example: 0 ... 0 1 ... 1
    cuts = (rows == 0).sum(dim=1)
    assert torch.all(rows == (torch.arange(R)[None, :] >= cuts[:, None]).float())
    assert cuts.min() >= R // 4 and cuts.max() <= 3 * R // 4 and len(set(cuts.tolist())) > 3
    assert torch.equal(seams[:, :, 1:], seams[:, :, :1].expand(-1, -1, R - 1, -1))  # vertical


def test_repetitions_and_real_crops_have_the_classifiers_sizes() -> None:
    crops = torch.rand(2, 3, R, R)
    tiled = tiled_twice(crops)
    assert tiled.shape == (2, 3, R, 2 * R)
    assert torch.equal(tiled[..., :R], crops) and torch.equal(tiled[..., R:], crops)
    examples = ExampleSource(_toy_sources(), R)
    rng = np.random.default_rng(0)
    for name, width in (("seam", R), ("repetition", 2 * R)):
        batch, labels = examples.batch(name, 8, rng)
        assert batch.shape == (8, 3, R, width) and labels.tolist() == [0] * 4 + [1] * 4
    small = [TextureSource("small", _wave(0, height=R, width=4 * R))]
    with pytest.raises(GantkError, match=f"at least {2 * R}x{2 * R} px"):
        ExampleSource(small, R)


# --- learning and scoring ---------------------------------------------------------------------


def test_classifiers_learn_seams_and_repetitions_of_a_separable_toy(toy_model) -> None:
    _, report = toy_model
    for name in ("seam", "repetition"):
        result = report["accuracy"][name]
        assert result["accuracy"] >= 0.85, (name, result)
        assert result["p_real"] < 0.3 < 0.7 < result["p_positive"]
    assert report["textures"] == 6 and report["skipped_textures"] == 0


def test_scores_of_known_strips(toy_model) -> None:
    model, _ = toy_model
    # A real strip: one texture, continuous over the whole length.
    smooth = _to_tensor(_wave(1, height=R, width=8 * R))
    # Two textures concatenated in the middle: a seam at the strip's centre.
    seamed = smooth.clone()
    seamed[..., 4 * R :] = _to_tensor(_wave(2, height=R, width=8 * R))[..., 4 * R :]
    # The central R x 2R crop an R x R crop tiled twice: a repetition.
    repeated = smooth.clone()
    repeated[..., 3 * R : 5 * R] = tiled_twice(center_crop(smooth, R))
    real, seam, repetition = (classifier_scores(model, s, R) for s in (smooth, seamed, repeated))
    assert real["css"] < 0.3 < 0.7 < seam["css"]
    assert real["crs"] < 0.3 < 0.7 < repetition["crs"]
    # Each score is the classifier's probability on the strip's central crop of its size.
    expected = torch.sigmoid(model.seam(center_crop(seamed, R)))
    assert seam["css"] == pytest.approx(float(expected), abs=1e-6)
    expected = torch.sigmoid(model.repetition(repeated[..., 3 * R : 5 * R]))
    assert repetition["crs"] == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(GantkError, match="takes 16x32 crops"):
        model.probability("repetition", smooth[..., :R])


def test_classifiers_file_round_trip_in_float16(toy_model, tmp_path: Path) -> None:
    from gantk.io.checkpoint import read_metadata

    model, _ = toy_model
    path = save_texture_classifiers(tmp_path / "c.safetensors", model, {"gantk.steps": "250"})
    loaded, metadata = load_texture_classifiers(path)
    assert read_metadata(path)["gantk.kind"] == KIND and metadata["gantk.steps"] == "250"
    assert loaded.config == TINY
    crops = _to_tensor(_wave(3, height=R, width=2 * R))
    for name, part in (("seam", crops[..., :R]), ("repetition", crops)):
        # fp16 weights move the probability by far less than the classes are apart.
        assert float(loaded.probability(name, part)) == pytest.approx(
            float(model.probability(name, part)), abs=1e-2
        )


def test_classifiers_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    from gantk.io.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(1)}, "texture-mixer")
    with pytest.raises(GantkError, match="holds a texture-mixer, not a texture-classifiers"):
        load_texture_classifiers(other)


# --- the Inception score ----------------------------------------------------------------------


def _numpy_inception_score(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    kl = (p * (np.log(p) - np.log(marginal))).sum(axis=1)
    return float(np.exp(kl.mean()))


def test_inception_score_matches_the_formula() -> None:
    logits = np.random.default_rng(0).normal(0, 3, (40, 1008))
    mean, std = inception_score(torch.from_numpy(logits))
    assert mean == pytest.approx(_numpy_inception_score(logits), rel=1e-10) and std == 0.0
    parts = [_numpy_inception_score(part) for part in np.array_split(logits, 4)]
    mean, std = inception_score(torch.from_numpy(logits), splits=4)
    assert mean == pytest.approx(np.mean(parts), rel=1e-10)
    assert std == pytest.approx(np.std(parts), rel=1e-10)
    # The bounds: one class for every image gives 1; N confident distinct classes give N.
    same = torch.zeros(5, 10)
    same[:, 3] = 50
    assert inception_score(same)[0] == pytest.approx(1.0)
    assert inception_score(torch.eye(5, 10) * 50)[0] == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(GantkError, match="into 6 parts"):
        inception_score(same, splits=6)


def test_inception_logits_are_pool3_times_the_classifier_without_bias() -> None:
    from gantk.metrics.features import (
        fid_inception_architecture,
        load_feature_net,
        load_inception_logits,
    )

    images = torch.randint(0, 256, (2, 3, R, R), dtype=torch.uint8)
    logits = load_inception_logits("random-inception")
    assert logits.name == "random-inception" and logits.dim == 1008
    pool3 = load_feature_net("random-inception")(images)
    weight = fid_inception_architecture().state_dict()["fc.weight"]
    torch.testing.assert_close(logits(images), pool3 @ weight.T, rtol=1e-4, atol=1e-5)
    with pytest.raises(GantkError, match=r"pt_inception-2015-12-05-6726825d\.pth"):
        load_inception_logits("inception")  # offline, no weight file: named, not downloaded


# --- the commands -----------------------------------------------------------------------------


def _texture_folder(path: Path, count: int = 4) -> Path:
    path.mkdir()
    for i, source in enumerate(_toy_sources(count)):
        Image.fromarray(source.image).save(path / f"t{i}.png")
    return path


@pytest.fixture(scope="module")
def tiny_mixer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import TINY_TEXTURE_MIXER

    from gantk.texture.networks import TextureMixer, TextureMixerConfig
    from gantk.texture.train import save_texture_mixer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mixer") / "mixer.safetensors"
    return save_texture_mixer(path, TextureMixer(TextureMixerConfig(**TINY_TEXTURE_MIXER)), "x")


def test_cli_trains_classifiers_into_one_file(cli, tmp_path: Path) -> None:
    textures = _texture_folder(tmp_path / "textures")
    out = tmp_path / "classifiers.safetensors"
    args = ("train", "texture-classifiers", textures, "--out", out, "--resolution", R,
            "--steps", 2, "--channels", 8, "--max-channels", 16, "--split", "all")  # fmt: skip
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["config"] == {"resolution": R, "channels": 8, "max_channels": 16}
    assert set(summary["accuracy"]) == {"seam", "repetition"} and summary["textures"] == 4
    model, metadata = load_texture_classifiers(out)
    assert model.config == TINY and metadata["gantk.steps"] == "2"
    assert json.loads(metadata["gantk.accuracy"])["eval_on"].startswith("fresh crops")
    assert "exists" in error_line(cli(*args))  # never overwritten without --force


def test_cli_reports_css_crs_and_cis(cli, tiny_mixer: Path, toy_model, tmp_path: Path) -> None:
    classifiers = save_texture_classifiers(tmp_path / "c.safetensors", toy_model[0])
    textures = _texture_folder(tmp_path / "textures")
    result = cli("evaluate", "texture", tiny_mixer, textures, "--pairs", "2", "--json",
                 "--device", "cpu", "--classifiers", classifiers)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "random-inception (reported as cis[random-inception])" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["metrics"][3:6] == ["css", "crs", "cis[random-inception]"]
    assert summary["networks"]["cis"] == {"network": "random-inception", "weights": None}
    assert summary["networks"]["classifiers"]["file"] == str(classifiers)
    for values in summary["methods"].values():
        assert 0 <= values["css"] <= 1 and 0 <= values["crs"] <= 1
        assert {"css_std", "crs_std"} <= set(values)
        assert 1 <= values["cis[random-inception]"] <= 2  # at most the number of crops


def test_cli_bundled_classifiers_skip_a_model_of_another_size(cli, tiny_mixer, tmp_path) -> None:
    textures = _texture_folder(tmp_path / "textures")
    args = ("evaluate", "texture", tiny_mixer, textures, "--pairs", "1", "--device", "cpu",
            "--cis-net", "none")  # fmt: skip
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    assert "builtin:texture-classifiers are for 64 px textures" in result.stderr
    assert "--resolution 16" in result.stderr
    summary = json.loads(result.stdout)
    assert not {"css", "crs"} & set(summary["metrics"])
    assert not any(m.startswith("cis") for m in summary["metrics"])
    # A file given explicitly must fit: then it is an error, not a skipped metric.
    other = TextureClassifiers(TextureClassifiersConfig(resolution=32, channels=4, max_channels=8))
    wrong = save_texture_classifiers(tmp_path / "c32.safetensors", other)
    line = error_line(cli(*args, "--classifiers", wrong))
    assert "for 32 px textures" in line and "--resolution 16" in line
    line = error_line(cli(*args[:-2], "--cis-net", "inception"))
    assert "pt_inception-2015-12-05-6726825d.pth" in line


def test_cis_with_the_standard_file_is_named_after_it(cli, torch_hub, tiny_mixer, tmp_path) -> None:
    from gantk.metrics.features import fid_inception_architecture, load_inception_logits

    # The FID architecture under its usual name: the real loading path, file weights used.
    state = fid_inception_architecture().state_dict()
    state["fc.weight"] = state["fc.weight"] * 50  # a classifier confident enough to matter
    torch.save(state, torch_hub / "pt_inception-2015-12-05-6726825d.pth")
    net = load_inception_logits("inception")
    assert net.name == "inception" and net.weights.endswith("6726825d.pth")
    images = torch.randint(0, 256, (2, 3, R, R), dtype=torch.uint8)
    assert not torch.allclose(net(images), load_inception_logits("random-inception")(images))
    del state["fc.weight"]  # a file without the classifier cannot give an Inception score
    bad = tmp_path / "no-fc.pth"
    torch.save(state, bad)
    with pytest.raises(GantkError, match="no 1008-class classifier"):
        load_inception_logits("inception", bad)
    textures = _texture_folder(tmp_path / "textures")
    args = ("--pairs", "2", "--json", "--device", "cpu", "--classifiers", "none")
    result = cli("evaluate", "texture", tiny_mixer, textures, *args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "cis[inception]" in summary["metrics"]  # auto found the file; never a plain "cis"
    assert summary["networks"]["cis"]["network"] == "inception"
