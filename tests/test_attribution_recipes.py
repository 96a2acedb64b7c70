"""Attributor training recipes: what each name sets, what the trainer does with it, the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import error_line
from PIL import Image

from gantk.attribution.data import read_images, to_float
from gantk.attribution.recipes import RECIPES, get_recipe
from gantk.attribution.train import AttributorTrainConfig, AttributorTrainer
from gantk.errors import GantkError

pytestmark = pytest.mark.usefixtures("one_thread")


def upsampled_sources(root: Path, per_class: int, seed: int) -> Path:
    """Random 8x8 content brought to 16x16 by nearest or bilinear up-sampling: two sources that
    differ only in how their pixels were made (a miniature of examples/pixel_provenance.py)."""
    rng = np.random.default_rng(seed)
    for mode in ("bilinear", "nearest"):
        (root / mode).mkdir(parents=True)
        small = torch.from_numpy(rng.uniform(0, 255, (per_class, 3, 8, 8))).float()
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        big = F.interpolate(small, scale_factor=2, mode=mode, **kwargs).round().to(torch.uint8)
        for i, image in enumerate(big.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(image).save(root / mode / f"{i:03d}.png")
    return root


def test_recipe_names_and_defaults():
    assert get_recipe(None, "full").name == "fast"
    assert get_recipe(None, "postpool@8").name == "fast"
    assert get_recipe(None, "visnet").name == "paper"
    assert get_recipe("paper", "full") == RECIPES["paper"]
    with pytest.raises(GantkError, match="--recipe must be one of fast, paper, got 'quick'"):
        get_recipe("quick", "full")


@pytest.mark.parametrize(
    ("recipe", "resolution", "lr", "channel_base"),
    [("fast", 32, 1e-2, 512), ("fast", 128, 1e-2, 2048), ("paper", 32, 1e-3, 2048)],
)
def test_config_takes_unset_values_from_the_recipe(recipe, resolution, lr, channel_base):
    config = AttributorTrainConfig("d", resolution, recipe=recipe).validate()
    assert (config.lr, config.channel_base) == (lr, channel_base)
    # Values given by the user win over the recipe's.
    given = AttributorTrainConfig("d", resolution, recipe=recipe, lr=0.5, channel_base=64)
    assert (given.validate().lr, given.channel_base) == (0.5, 64)


@pytest.mark.parametrize("mirror", [True, False])
def test_trainer_applies_betas_and_mirroring(mirror, tmp_path):
    data = upsampled_sources(tmp_path / "s", 8, seed=0)
    config = AttributorTrainConfig(str(data), 16, channel_base=32, batch_size=64,
                                   val_fraction=0.0)  # fmt: skip
    trainer = AttributorTrainer(config, tmp_path / "run")
    assert trainer.optimizers[0].param_groups[0]["betas"] == RECIPES["fast"].betas
    trainer.recipe = dataclasses.replace(trainer.recipe, mirror=mirror)
    x, _ = trainer.batch()
    # Every batch image is a training image as it is, or (when mirroring) its mirror image.
    originals = to_float(trainer.train_set.images)
    same = (x[:, None] == originals[None]).flatten(2).all(2).any(1)
    mirrored = (x[:, None] == originals[None].flip(-1)).flatten(2).all(2).any(1)
    assert bool((same | mirrored).all())
    if mirror:
        assert 0 < int((mirrored & ~same).sum()) < len(x)
    else:
        assert bool(same.all())


def test_default_recipe_learns_pixel_provenance_faster_than_papers(tmp_path):
    """After 30 steps the default tells nearest from bilinear up-sampling on new content; the
    paper's recipe, same network width and batches, is still well behind."""
    train = upsampled_sources(tmp_path / "train", 64, seed=0)
    test = read_images(str(upsampled_sources(tmp_path / "test", 32, seed=1)), 16, labeled=True)
    accuracy = {}
    for recipe in ("fast", "paper"):
        config = AttributorTrainConfig(str(train), 16, recipe=recipe, steps=30, eval_every=30,
                                       val_fraction=0.0, channel_base=256)  # fmt: skip
        trainer = AttributorTrainer(config, tmp_path / recipe)
        trainer.run()
        with torch.no_grad():
            predicted = trainer.model.eval()(to_float(test.images)).argmax(1).numpy()
        accuracy[recipe] = (predicted == test.labels).mean()
    assert accuracy["fast"] >= 0.9, accuracy
    assert accuracy["paper"] <= accuracy["fast"] - 0.1, accuracy


def test_cli_records_the_recipe_and_refuses_unknown_ones(cli, tmp_path):
    data = upsampled_sources(tmp_path / "s", 6, seed=0)
    run = tmp_path / "run"
    result = cli("train", "attributor", data, "--out", run, "--recipe", "paper", "--steps",
                 "2", "--eval-every", "2", "--channel-base", "32", "--device", "cpu",
                 "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (saved["recipe"], saved["lr"], saved["channel_base"]) == ("paper", 1e-3, 32)

    bad = cli("train", "attributor", data, "--out", tmp_path / "bad", "--recipe", "quick")
    assert bad.exit_code == 2
    assert error_line(bad) == "error: --recipe must be one of fast, paper, got 'quick'"
    assert not (tmp_path / "bad").exists()


def test_pixel_provenance_sources(tmp_path):
    """examples/pixel_provenance.py: four sources of 32 px images that differ in their pixels'
    making: nearest has 2x2 blocks of equal pixels, the others do not; on flat content the
    transposed convolution leaves a 2-periodic pattern, the same at the borders as inside."""
    path = Path(__file__).parents[1] / "examples" / "pixel_provenance.py"
    spec = importlib.util.spec_from_file_location("pixel_provenance", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_split(tmp_path, 3, "china", seed=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(module.SOURCES)
    for source in module.SOURCES:
        images = [np.asarray(Image.open(p)) for p in sorted((tmp_path / source).iterdir())]
        assert len(images) == 3 and all(i.shape == (32, 32, 3) for i in images)
        blocky = all((i[::2, ::2] == i[1::2, 1::2]).all() for i in images)
        assert blocky == (source == "nearest"), source
    flat = module.upsample(torch.full((1, 3, 16, 16), 100.0), "tconv")[0, 0]
    assert torch.allclose(flat, flat[:2, :2].repeat(16, 16), atol=1e-4)
    assert flat.std() > 1  # a checkerboard, not a flat image
