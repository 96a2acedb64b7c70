"""Stacked-MNIST mode coverage: the digit classifier, its cache, and the metric."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gantk.errors import GantkError
from gantk.gan.networks import Generator, NetworkConfig
from gantk.gan.sampling import GeneratorSampler
from gantk.io.checkpoint import read_metadata, save_checkpoint
from gantk.io.datasets import open_dataset
from gantk.metrics import modes
from gantk.metrics.modes import (
    CLASSIFIER_KIND,
    DigitClassifier,
    classify_stacked,
    digit_classifier,
    evaluate_modes,
    load_digit_classifier,
    mode_coverage,
)

CACHE_NAME = "digit-classifier-32.safetensors"


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, DigitClassifier, dict]]:
    """Train the classifier once for the module, through the cache, in a private cache dir."""
    cache = tmp_path_factory.mktemp("gantk_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTK_CACHE_DIR", str(cache))
        model, info = digit_classifier()
    yield cache, model, info


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to train fails the test: the classifier must come from a file."""

    def refuse(*args, **kwargs):
        raise AssertionError("the digit classifier was retrained")

    monkeypatch.setattr(modes, "train_digit_classifier", refuse)


@pytest.fixture
def fake_training(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[Path, DigitClassifier, dict]
) -> list[int]:
    """Count retrainings, handing back the module's model instead of spending ~10 s again."""
    _, model, info = trained
    calls: list[int] = []

    def fake(*args, **kwargs):
        calls.append(1)
        return model, dict(info)

    monkeypatch.setattr(modes, "train_digit_classifier", fake)
    return calls


def _stacked(count: int, resolution: int = 32) -> tuple[np.ndarray, np.ndarray]:
    data = open_dataset("builtin:stacked-digits", count=count, resolution=resolution)
    images = np.stack([data[i][0].numpy() for i in range(len(data))])
    return images, data.labels


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# --- the classifier and its cache ------------------------------------------------------------


def test_classifier_is_accurate_on_held_out_digits(trained) -> None:
    cache, model, info = trained
    # Measured: 0.9967 (299 of 300) with seed 0.
    assert info["test_accuracy"] >= 0.97
    assert model.info["test_accuracy"] == info["test_accuracy"]
    assert info["train_images"] == 1497 and info["test_images"] == 300
    assert info["train_images"] + info["test_images"] == 1797
    assert info["resolution"] == 32 and info["seed"] == 0
    assert read_metadata(cache / CACHE_NAME)["gantk.kind"] == CLASSIFIER_KIND
    assert not model.training


def test_classifier_accepts_other_sizes(trained) -> None:
    _, model, _ = trained
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


def test_second_call_loads_the_cache(trained, no_training, monkeypatch) -> None:
    cache, model, info = trained
    monkeypatch.setenv("GANTK_CACHE_DIR", str(cache))
    loaded, loaded_info = digit_classifier()
    assert _same_weights(loaded, model)
    assert loaded_info == info and loaded.info == info


def test_explicit_path_is_loaded(trained, no_training, tmp_path) -> None:
    cache, model, _ = trained
    copy = tmp_path / "mine.safetensors"
    copy.write_bytes((cache / CACHE_NAME).read_bytes())
    loaded, _ = digit_classifier(path=copy)
    assert _same_weights(loaded, model)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_retrained_with_a_warning(
    trained, fake_training, tmp_path, monkeypatch, damage
) -> None:
    cache, model, _ = trained
    monkeypatch.setenv("GANTK_CACHE_DIR", str(tmp_path))
    good = (cache / CACHE_NAME).read_bytes()
    bad = b"not a safetensors file at all" if damage == "garbage" else good[: len(good) // 2]
    (tmp_path / CACHE_NAME).write_bytes(bad)
    with pytest.warns(UserWarning, match="retraining") as record:
        loaded, _ = digit_classifier()
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert fake_training == [1]
    assert _same_weights(loaded, model)
    # The damaged file was replaced by a good one.
    assert _same_weights(load_digit_classifier(tmp_path / CACHE_NAME)[0], model)


def test_cache_of_another_kind_is_retrained(trained, fake_training, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GANTK_CACHE_DIR", str(tmp_path))
    save_checkpoint(tmp_path / CACHE_NAME, {"w": torch.zeros(1)}, "gan-generator", {})
    with pytest.warns(UserWarning, match="gan-generator"):
        digit_classifier()
    assert fake_training == [1]
    assert read_metadata(tmp_path / CACHE_NAME)["gantk.kind"] == CLASSIFIER_KIND


def test_explicit_file_of_another_kind_is_refused(trained, no_training, tmp_path) -> None:
    other = tmp_path / "generator.safetensors"
    save_checkpoint(other, {"w": torch.zeros(1)}, "gan-generator", {"network": {}})
    before = other.read_bytes()
    with pytest.raises(GantkError, match="holds a gan-generator, not a digit-classifier"):
        digit_classifier(path=other)
    assert other.read_bytes() == before  # a user's file is never overwritten


def test_retrain_never_replaces_a_file_of_another_kind(no_training, tmp_path) -> None:
    other = tmp_path / "generator.safetensors"
    save_checkpoint(other, {"w": torch.zeros(1)}, "gan-generator", {"network": {}})
    with pytest.raises(GantkError, match="holds a gan-generator"):
        digit_classifier(path=other, retrain=True)
    assert read_metadata(other)["gantk.kind"] == "gan-generator"


def test_missing_explicit_path_is_trained_and_written(fake_training, tmp_path) -> None:
    target = tmp_path / "new" / "classifier.safetensors"
    digit_classifier(path=target)
    assert fake_training == [1]
    assert read_metadata(target)["gantk.kind"] == CLASSIFIER_KIND


def test_retrain_replaces_a_good_cache(trained, fake_training, tmp_path, monkeypatch) -> None:
    cache, _, _ = trained
    monkeypatch.setenv("GANTK_CACHE_DIR", str(tmp_path))
    (tmp_path / CACHE_NAME).write_bytes((cache / CACHE_NAME).read_bytes())
    digit_classifier(retrain=True)
    assert fake_training == [1]


def test_unwritable_cache_only_warns(fake_training, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("GANTK_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not cache"):
        model, info = digit_classifier()
    assert info["test_accuracy"] >= 0.97 and isinstance(model, DigitClassifier)


# --- classifying stacked digits --------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_classify_stacked_agrees_with_known_modes(trained, resolution) -> None:
    _, model, _ = trained
    images, labels = _stacked(300, resolution)
    predicted = classify_stacked(model, images)
    assert predicted.shape == (300,) and predicted.dtype == np.int64
    # Measured: 300 of 300 at both sizes.
    assert (predicted == labels).mean() >= 0.9


def test_classify_stacked_reads_each_channel(trained) -> None:
    _, model, _ = trained
    images, labels = _stacked(20)
    swapped = images[:, [2, 0, 1]]  # B, R, G in the R, G, B slots
    expected = (labels % 10) * 100 + (labels // 100) * 10 + (labels // 10) % 10
    agree_plain = classify_stacked(model, images) == labels
    agree_swapped = classify_stacked(model, swapped) == expected
    assert np.array_equal(agree_plain, agree_swapped)


def test_classify_stacked_refuses_grayscale(trained) -> None:
    _, model, _ = trained
    with pytest.raises(GantkError, match="uint8 RGB"):
        classify_stacked(model, np.zeros((2, 1, 32, 32), dtype=np.uint8))
    with pytest.raises(GantkError, match="uint8 RGB"):
        classify_stacked(model, np.zeros((2, 3, 32, 32), dtype=np.float32))


# --- the metric ------------------------------------------------------------------------------


def test_uniform_histogram() -> None:
    result = mode_coverage(np.repeat(np.arange(1000), 3))
    assert result["modes_covered"] == 1000
    assert abs(result["kl_to_uniform"]) < 1e-12
    assert result["count"] == 3000 and result["histogram_max"] == 3


def test_single_mode() -> None:
    result = mode_coverage(np.full(50, 7))
    assert result["modes_covered"] == 1
    assert result["kl_to_uniform"] == pytest.approx(math.log(1000), abs=1e-12)
    assert result["histogram_max"] == 50 and result["histogram_min"] == 0


def test_three_modes_by_hand() -> None:
    # p = (1/2, 1/4, 1/4) on 3 of 1000 modes:
    # KL = 1/2 log(500) + 1/4 log(250) + 1/4 log(250) = 1/2 log(125000) ≈ 5.868
    result = mode_coverage(np.array([5, 5, 999, 0]))
    assert result["modes_covered"] == 3
    assert result["kl_to_uniform"] == pytest.approx(0.5 * math.log(125000), abs=1e-12)
    assert result["kl_to_uniform"] == pytest.approx(5.86803, abs=1e-5)
    assert result["count"] == 4 and result["histogram_max"] == 2
    small = mode_coverage(np.array([0, 0, 1, 2]), num_modes=3)
    # p = (1/2, 1/4, 1/4) against 1/3: 1/2 log(3/2) + 1/2 log(3/4)
    assert small["kl_to_uniform"] == pytest.approx(0.5 * math.log(9 / 8), abs=1e-12)


def test_mode_ids_are_checked() -> None:
    with pytest.raises(GantkError, match="0…999"):
        mode_coverage(np.array([0, 1000]))
    with pytest.raises(GantkError, match="non-empty"):
        mode_coverage(np.array([], dtype=np.int64))
    with pytest.raises(GantkError, match="integers"):
        mode_coverage(np.array([0.5]))


def test_dataset_covers_most_modes(trained) -> None:
    _, model, info = trained
    data = open_dataset("builtin:stacked-digits", count=3000)
    result = evaluate_modes(data, count=3000, classifier=model)
    # 3000 uniform draws from 1000 modes cover 1000 (1 - e^-3) ≈ 950 on average.
    assert result["modes_covered"] > 900
    assert result["count"] == 3000
    assert result["classifier_test_accuracy"] == info["test_accuracy"]
    assert result["source"] == "builtin:stacked-digits"
    assert 0 < result["kl_to_uniform"] < 0.6


def test_dataset_spec_and_progress(trained, no_training, monkeypatch) -> None:
    cache, model, _ = trained
    monkeypatch.setenv("GANTK_CACHE_DIR", str(cache))  # classifier=None: loaded from the cache
    seen: list[int] = []
    by_spec = evaluate_modes(
        "builtin:stacked-digits", count=300, batch_size=128, advance=seen.append
    )
    by_object = evaluate_modes(open_dataset("builtin:stacked-digits", count=300), classifier=model)
    assert seen == [128, 128, 44]
    assert by_spec["source"] == "builtin:stacked-digits"
    assert {k: v for k, v in by_spec.items() if k != "source"} == {
        k: v for k, v in by_object.items() if k != "source"
    }


def test_untrained_generator_covers_fewer_modes_than_data(trained) -> None:
    _, model, _ = trained
    config = NetworkConfig(
        resolution=32, z_dim=16, w_dim=16, mapping_layers=1, channel_base=128, channel_max=8
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(config).eval()
    fake = evaluate_modes(GeneratorSampler(G), count=500, seed=5, classifier=model)
    real = evaluate_modes(open_dataset("builtin:stacked-digits", count=500), classifier=model)
    assert set(fake) == set(real)
    assert fake["count"] == 500 and fake["source"] == "generator (seeds 5-504)"
    # Measured: the untrained generator hits 153 modes, the data 398 (of 500 samples).
    assert 1 <= fake["modes_covered"] < real["modes_covered"]
    assert 0 <= fake["kl_to_uniform"] <= math.log(1000) + 1e-12
    assert fake["kl_to_uniform"] > real["kl_to_uniform"]
    # Seeds fix the samples: the same call gives the same answer.
    again = evaluate_modes(GeneratorSampler(G), count=40, seed=5, classifier=model)
    assert evaluate_modes(GeneratorSampler(G), count=40, seed=5, classifier=model) == again
