"""Augmentation for small data (gantk.nn.augment): ADA's transforms against independent
computations, p adapting in the right direction, DiffAugment's parts against naive loops, and
`train gan --aug` logging p and resuming it exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import error_line

from gantk.gan.config import TrainConfig
from gantk.gan.networks import NetworkConfig
from gantk.gan.run import resume_training, start_training
from gantk.nn import augment
from gantk.nn.augment import AdaController, AdaptiveAugment, diff_augment

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- ADA's transforms -----------------------------------------------------------------------


def test_p_zero_is_the_identity() -> None:
    x = _images()
    assert AdaptiveAugment(0.0)(x, _gen()) is x
    assert torch.equal(augment.colour_matrix(4, 0.0, _gen()), torch.eye(4).expand(4, 4, 4))
    assert torch.allclose(augment.geometric_matrix(4, (16, 16), 0.0, _gen()), torch.eye(3))


def test_warp_flips_rotates_and_shifts_like_torch() -> None:
    x = _images(2, 8)
    ones = torch.ones(2)
    flipped = augment.warp(x, augment.scale2d(-ones, ones))
    assert torch.allclose(flipped, x.flip(3), atol=1e-5)
    # Output pixel (i, j) reads input (j, -i) about the centre: torch.rot90 by -1 (clockwise).
    turned = augment.warp(x, augment.rotate2d(-ones * math.pi / 2))
    assert torch.allclose(turned, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    # Output (i, j) reads input (i, j - 2): content moves 2 pixels right; the border reflects.
    shifted = augment.warp(x, augment.translate2d(-2 * ones, 0 * ones))
    assert torch.allclose(shifted[..., 2:], x[..., :-2], atol=1e-5)
    assert torch.allclose(shifted[..., :2], x[..., :2].flip(3), atol=1e-5)


def test_colour_transforms_keep_their_invariants() -> None:
    theta = torch.tensor([0.7, -2.0])
    hue = augment._rotation_about(augment.LUMA_AXIS, theta)
    grey = torch.tensor([0.3, 0.3, 0.3, 1.0])
    colour = torch.tensor([0.9, -0.2, 0.1, 1.0])
    assert torch.allclose(hue @ grey, grey.expand(2, 4), atol=1e-6)  # greys keep their hue
    assert torch.allclose((hue @ colour)[:, :3].mean(1), colour[:3].mean().expand(2), atol=1e-6)
    assert torch.allclose((hue @ colour)[:, :3].norm(dim=1), colour[:3].norm().expand(2))
    # p = 1: every image gets a different, invertible colour map with the last row (0, 0, 0, 1).
    c = augment.colour_matrix(64, 1.0, _gen())
    assert torch.allclose(c[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(64, 4))
    assert (torch.linalg.det(c[:, :3, :3]).abs() > 0).all()


def test_p_one_changes_every_image_and_is_twice_differentiable() -> None:
    x = _images().requires_grad_(True)
    out = AdaptiveAugment(1.0)(x, _gen())
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert ((out - x).abs().flatten(1).amax(1) > 0.05).all()
    # R1 through the augmentation: a gradient of a gradient reaches a network behind it.
    conv = torch.nn.Conv2d(3, 1, 3)
    (grad,) = torch.autograd.grad(conv(out).square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_each_transform_fires_with_probability_p() -> None:
    # The x-flip gate alone: with p = 0.5 and a fair coin, about a quarter of images flip.
    m = augment.geometric_matrix(4000, (16, 16), 0.5, _gen())
    flipped = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0] < 0).float().mean()
    assert 0.22 < float(flipped) < 0.28


# --- the p controller -----------------------------------------------------------------------


@pytest.mark.parametrize(("sign", "direction"), [(1.0, 1), (-1.0, -1)])
def test_p_adapts_towards_the_target(sign: float, direction: int) -> None:
    aug = AdaptiveAugment(0.5)
    ada = AdaController(target=0.6, interval=4, speed_kimg=1.0)
    changes = []
    for _ in range(8):
        ada.accumulate(sign)  # D always right on reals (overfitting) or always wrong
        changes.append(ada.step(aug, batch_size=32))
    # Adjusted every 4th step by 4 steps x 32 images / 1000 images.
    assert changes[:3] == [None] * 3 and changes[4:7] == [None] * 3
    assert changes[3] == pytest.approx(0.5 + direction * 0.128)
    assert changes[7] == pytest.approx(0.5 + direction * 0.256)


def test_p_stays_in_zero_one() -> None:
    aug = AdaptiveAugment(0.01)
    ada = AdaController(speed_kimg=0.01)
    for sign in [-1.0] * 4 + [1.0] * 400:
        ada.accumulate(sign)
        ada.step(aug, 32)
        assert 0.0 <= float(aug.p) <= 1.0
    assert float(aug.p) == 1.0


# --- DiffAugment ----------------------------------------------------------------------------


def test_diff_augment_keeps_shape_and_passes_gradients() -> None:
    x = _images(3, 16).requires_grad_(True)
    out = diff_augment(x, _gen())
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and (x.grad != 0).any()
    # Cutout removes a 8x8 square (partly outside at the border): at least 4x4 zeros each.
    zeros = (out.detach() == 0).all(dim=1).flatten(1).sum(1)
    assert (zeros >= 16).all()


def test_translation_and_cutout_match_loops() -> None:
    x = _images(3, 8)
    got = augment._translate_zero_fill(x, 0.125, _gen(5))
    gen = _gen(5)
    dx = torch.randint(-1, 2, (3,), generator=gen)
    dy = torch.randint(-1, 2, (3,), generator=gen)
    want = torch.zeros_like(x)
    for b in range(3):
        for i in range(8):
            for j in range(8):
                si, sj = i - int(dy[b]), j - int(dx[b])
                if 0 <= si < 8 and 0 <= sj < 8:
                    want[b, :, i, j] = x[b, :, si, sj]
    assert torch.equal(got, want)

    got = augment._cutout(x, 0.5, _gen(6))
    gen = _gen(6)
    cy = torch.randint(0, 9, (3,), generator=gen)
    cx = torch.randint(0, 9, (3,), generator=gen)
    want = x.clone()
    for b in range(3):
        for i in range(8):
            for j in range(8):
                if int(cy[b]) - 2 <= i < int(cy[b]) + 2 and int(cx[b]) - 2 <= j < int(cx[b]) + 2:
                    want[b, :, i, j] = 0
    assert torch.equal(got, want)


# --- in training ----------------------------------------------------------------------------


def _config(out: Path, steps: int, **kw) -> TrainConfig:
    network = NetworkConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                            channel_base=64, channel_max=8)  # fmt: skip
    return TrainConfig(data="builtin:shapes?n=32", out=str(out), network=network,
                       kimg=steps * 0.008, batch_size=8, tick_kimg=0.008, snapshot_kimg=100.0,
                       sample_kimg=100.0, grid=2, device="cpu", r1_interval=2, **kw)  # fmt: skip


def _log(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "sec_per_kimg"} for line in lines]


@pytest.mark.parametrize("kind", ["ada", "diffaug"])
def test_training_logs_p_and_resumes_exactly(tmp_path: Path, kind: str) -> None:
    extra = {"aug": kind, "aug_p": 0.5, "ada_kimg": 0.1} if kind == "ada" else {"aug": kind}
    start_training(_config(tmp_path / "straight", 8, **extra), log=lambda _: None)
    start_training(_config(tmp_path / "resumed", 4, **extra), log=lambda _: None)
    resume_training(tmp_path / "resumed", {"kimg": 8 * 0.008}, log=lambda _: None)
    straight, resumed = _log(tmp_path / "straight"), _log(tmp_path / "resumed")
    assert straight == resumed
    if kind == "ada":
        # p moved every 4 steps by 4 x 8 images / 100 images, from 0.5.
        ps = [entry["aug_p"] for entry in straight]
        assert ps[:3] == [0.5] * 3 and ps[3] != 0.5 and abs(ps[3] - 0.5) == pytest.approx(0.32)
    else:
        assert "aug_p" not in straight[0]


def test_aug_options_are_checked(cli, tmp_path: Path) -> None:
    base = ["train", "gan", "builtin:shapes?n=32", "--out", str(tmp_path / "r"), "--kimg", "0.01"]
    assert "--aug must be one of none, ada, diffaug" in error_line(cli(*base, "--aug", "adaa"))
    assert "--aug-p is a probability" in error_line(cli(*base, "--aug", "ada", "--aug-p", "2"))
    assert not (tmp_path / "r").exists()
