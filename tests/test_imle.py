"""Inclusive GAN: IMLE-GAN matching, schedule, minority inclusion, resume and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import error_line
from test_gan_train import assert_same_tensors, config, quiet

from gantk.errors import GantkError
from gantk.gan.imle import ImleTrainer, minority_indices
from gantk.gan.run import resume_training, start_training
from gantk.io.datasets import open_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

MINORITY = "builtin:shapes?n=32&minority=triangle:0.25"


def imle_config(out: Path, steps: int, **kw):
    base = dict(imle=True, imle_features="pixel", imle_pool=64, imle_staleness=0.25,
                style_mixing=0.0, pl_weight=0.0)  # fmt: skip
    base.update(kw)
    return config(out, steps, **base)


def test_refresh_finds_the_exact_nearest_latents(tmp_path):
    trainer = ImleTrainer(imle_config(tmp_path / "r", 1), log=quiet)
    trainer.refresh()
    # independent brute force: every pool image against every real image, in pixel space
    with torch.no_grad():
        fakes = trainer.G(trainer.pool, noise_mode="const").flatten(1)
        reals = torch.stack([trainer.dataset[i][0] for i in range(32)]).float() / 127.5 - 1
        dist = ((reals.flatten(1)[:, None, :] - fakes[None]) ** 2).sum(-1)
    torch.testing.assert_close(
        dist[torch.arange(32), trainer.matched], dist.min(dim=1).values, rtol=1e-4, atol=1e-4
    )


def test_refresh_schedule_doubles_and_losses_are_logged(tmp_path):
    out = tmp_path / "run"
    messages: list[str] = []
    start_training(imle_config(out, 8, imle_interp=True), log=messages.append)
    refreshes = [m for m in messages if m.startswith("IMLE refresh")]
    # 32 images, batch 8: 0.25 epochs per step (steps start at epochs 0 … 1.75); staleness
    # 0.25 doubling: refreshes at 0, 0.25, 0.25 + 0.5 and 0.75 + 1
    epochs = [m.split(" epoch ")[1].split(":")[0] for m in refreshes]
    assert epochs == ["0.00", "0.25", "0.75", "1.75"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("imle_rec" in e and "imle_itp" in e for e in log)
    assert sum("imle_refresh_sec" in e for e in log) == 4


def test_minority_subgroups():
    data = open_dataset(MINORITY)
    chosen = minority_indices(data, "builtin", MINORITY)
    triangle = data.attribute_names.index("triangle")
    assert len(chosen) == 8 and (data.attributes[chosen, triangle] == 1).all()
    assert len(minority_indices(data, None, MINORITY)) == 32
    with pytest.raises(GantkError, match="no minority= option"):
        minority_indices(open_dataset("builtin:shapes?n=8"), "builtin", "builtin:shapes?n=8")


def test_minority_from_csv(tmp_path):
    data = open_dataset("builtin:shapes?n=12")
    csv = tmp_path / "attrs.csv"
    rows = ["filename,Rare,Never"] + [f"{name},{int(i % 4 == 0)},0"
                                      for i, name in enumerate(data.filenames)]  # fmt: skip
    csv.write_text("\n".join(rows) + "\n")
    assert minority_indices(data, f"{csv}:Rare", "x").tolist() == [0, 4, 8]
    with pytest.raises(GantkError, match=r"no image of .* has Never"):
        minority_indices(open_dataset("builtin:shapes?n=12"), f"{csv}:Never", "x")
    with pytest.raises(GantkError, match="'Bald' is not among"):
        minority_indices(open_dataset("builtin:shapes?n=12"), f"{csv}:Bald", "x")


def test_minority_run_reconstructs_only_the_subgroup(tmp_path):
    trainer = ImleTrainer(imle_config(tmp_path / "r", 1, data=MINORITY, imle_minority="builtin",
                                      imle_pool=16), log=quiet)  # fmt: skip
    assert len(trainer.matched) == 8 and trainer.pool_size == 16


def test_imle_resume_equals_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    start_training(imle_config(straight, 6), log=quiet)
    start_training(imle_config(resumed, 3), log=quiet)
    resume_training(resumed, {"kimg": 6 * 0.008}, log=quiet)
    assert_same_tensors(straight / "latest-state.safetensors", resumed / "latest-state.safetensors")


def test_imle_bad_input(cli, tmp_path):
    base = ["train", "gan", "builtin:shapes?n=32", "--resolution", "16", "--out", tmp_path / "r",
            "--z-dim", "8", "--w-dim", "8", "--mapping-layers", "1", "--channel-base", "64",
            "--channel-max", "8", "--kimg", "0.008", "--batch-size", "8"]  # fmt: skip
    assert "smaller than the 32 images" in error_line(cli(*base, "--imle", "--imle-pool", "10",
                                                           "--imle-features", "pixel"))  # fmt: skip
    assert "pick one" in error_line(cli(*base, "--imle", "--fingerprint-bits", "8"))
    assert "add --imle" in error_line(cli(*base, "--minority", "builtin"))
    assert "reference attention" in error_line(
        cli(*base, "--imle", "--imle-features", "d", "--d-attn", "reference@8")
    )
    assert "no minority= option" in error_line(
        cli(*base, "--imle", "--imle-features", "pixel", "--minority", "builtin")
    )
    missing = tmp_path / "attrs.csv"  # covers 5 of the 32 images
    names = open_dataset("builtin:shapes?n=32").filenames[:5]
    missing.write_text("filename,Rare\n" + "".join(f"{n},1\n" for n in names))
    assert "add a row for every image" in error_line(
        cli(*base, "--imle", "--imle-features", "pixel", "--minority", f"{missing}:Rare")
    )
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_metrics_per_subgroup(cli):
    """--subset restricts dataset sets to one subgroup (the minority IMLE was told to include)."""
    result = cli("evaluate", "pr", MINORITY + "&resolution=16", "builtin:shapes?n=40&resolution=16",
                 "--subset", "triangle",
                 "--features", "random-vgg16", "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    sets = json.loads(result.stdout)["sets"]
    data_a, data_b = open_dataset(MINORITY), open_dataset("builtin:shapes?n=40")
    expected = [
        int((d.attributes[:, d.attribute_names.index("triangle")] == 1).sum())
        for d in (data_a, data_b)
    ]
    assert [s["count"] for s in sets] == expected == [8, expected[1]]
    assert "not among" in error_line(
        cli(
            "evaluate",
            "pr",
            MINORITY,
            "builtin:shapes?n=40",
            "--subset",
            "Bald",
            "--features",
            "random-vgg16",
            "--device",
            "cpu",
        )
    )


def test_subset_reads_an_exported_folders_attributes(cli, tmp_path):
    folder = tmp_path / "shapes"
    assert cli("data", "export", MINORITY, folder, "-r", "16", "--flat", "-q").exit_code == 0
    result = cli("evaluate", "pr", folder, "builtin:shapes?n=40&resolution=16", "--subset",
                 "triangle", "--features", "random-vgg16", "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sets"][0]["count"] == 8  # the folder's 8 triangles
