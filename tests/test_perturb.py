"""Image perturbations: values against independent computations, shapes, gradients, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gantk import perturb
from gantk.errors import GantkError


def _images(shape=(2, 3, 20, 24), seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_blur_matches_torchvision() -> None:
    from torchvision.transforms.functional import gaussian_blur

    x = _images()
    for k in (3, 5, 9):
        torch.testing.assert_close(
            perturb.gaussian_blur(x, k), gaussian_blur(x, [k, k]), rtol=0, atol=1e-5
        )
    assert torch.equal(perturb.gaussian_blur(x, 1), x)
    with pytest.raises(GantkError, match="odd"):
        perturb.gaussian_blur(x, 4)


def test_jpeg_is_a_real_round_trip_with_straight_through_gradient() -> None:
    x = _images((1, 3, 16, 16))
    arr = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=50)
    expected = np.asarray(Image.open(buffer))
    got = ((perturb.jpeg(x, 50)[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8)
    np.testing.assert_array_equal(got.numpy(), expected)
    leaf = x.clone().requires_grad_(True)
    perturb.jpeg_straight_through(leaf, 50).sum().backward()
    assert torch.equal(leaf.grad, torch.ones_like(x))
    with pytest.raises(GantkError, match=r"1\.\.100"):
        perturb.jpeg(x, 0)


def test_noise_crop_resize_brightness() -> None:
    x = _images()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    noisy = perturb.gaussian_noise(x, 0.05, g1)
    assert torch.equal(noisy, perturb.gaussian_noise(x, 0.05, g2))
    assert float((noisy - x).std()) < 0.2 and noisy.abs().max() <= 1
    crop = perturb.center_crop(x, 0.5)
    assert crop.shape[-2:] == (10, 12) and torch.equal(crop, x[..., 5:15, 6:18])
    assert perturb.resize(x, 0.5).shape[-2:] == (10, 12)
    bright = perturb.brightness(x, 2.0)
    torch.testing.assert_close(bright, ((x + 1) * 2 - 1).clamp(-1, 1))
    assert perturb.combined(x, 1.0).shape[-2:] == (14, 17)
    assert torch.equal(perturb.combined(x, 0.0), x)


def test_apply_names_and_sweeps() -> None:
    x = _images()
    for name, strengths in perturb.SWEEPS.items():
        out = perturb.apply(name, x, strengths[0])
        assert out.shape[:2] == x.shape[:2]
    assert perturb.parse_names("all") == list(perturb.PERTURBATIONS)
    assert perturb.parse_names("jpeg, blur") == ["jpeg", "blur"]
    with pytest.raises(GantkError, match="unknown perturbation"):
        perturb.apply("sharpen", x, 1)
    with pytest.raises(GantkError, match="sharpen"):
        perturb.parse_names("jpeg,sharpen")


def test_random_perturbation_keeps_size_and_gradients() -> None:
    x = _images().requires_grad_(True)
    augment = perturb.RandomPerturbation(list(perturb.PERTURBATIONS), p_clean=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        out = augment(x, generator)
        assert out.shape == x.shape
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0


def test_random_crop_falls_anywhere_inside_the_image() -> None:
    x = torch.arange(20 * 20, dtype=torch.float32).reshape(1, 1, 20, 20)
    gen = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(200):
        crop = perturb.random_crop(x, 0.8, gen)
        assert crop.shape[-2:] == (16, 16)
        top, left = divmod(int(crop[0, 0, 0, 0]), 20)
        # The crop is the contiguous window at that corner.
        assert torch.equal(crop, x[..., top : top + 16, left : left + 16])
        corners.add((top, left))
    # Every offset 0-4 on both axes is reachable (25 windows), not only the centred (2, 2).
    assert corners == {(t, left) for t in range(5) for left in range(5)}


def test_crop_attack_uses_random_offsets() -> None:
    # A ramp image: a centred crop resized back would be symmetric about the centre column's
    # value; random offsets move the mean of the result away from the image's mean.
    x = torch.linspace(-1, 1, 64).expand(1, 3, 64, 64).contiguous()
    out = perturb.random_attack("crop", x.expand(30, 3, 64, 64), torch.Generator().manual_seed(3))
    means = out.mean(dim=(1, 2, 3))
    assert means.abs().max() > 0.02 and out.shape == (30, 3, 64, 64)
