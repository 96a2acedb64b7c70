"""GAN losses and regularizers against values computed by hand (plain math / numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.gan.losses import (
    LOSSES,
    d_loss,
    dual_contrastive,
    g_loss,
    gradient_penalty,
    path_lengths,
    r1_penalty,
)

REAL = [1.0, -0.5]
FAKE = [0.2, -1.0]


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def contrastive_by_hand(high: list[float], low: list[float]) -> float:
    """Eq. 2.1 + 2.2 (negated: a loss to minimize), as explicit double loops."""
    case1 = mean(math.log(1.0 + sum(math.exp(lo - hi) for lo in low)) for hi in high)
    case2 = mean(math.log(1.0 + sum(math.exp(lo - hi) for hi in high)) for lo in low)
    return case1 + case2


# --- values ---------------------------------------------------------------------------------


def test_loss_names() -> None:
    assert set(LOSSES) == {"ns", "saturating", "wgan-gp", "hinge", "contrastive"}


@pytest.mark.parametrize("kind", ["ns", "saturating"])
def test_logistic_discriminator_loss(kind: str) -> None:
    # -log(sigmoid(real)) - log(1 - sigmoid(fake)), averaged over each batch.
    expected = mean(-math.log(sigmoid(r)) for r in REAL) + mean(
        -math.log(1.0 - sigmoid(f)) for f in FAKE
    )
    assert d_loss(kind, t(REAL), t(FAKE)).item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(
        (softplus(-1.0) + softplus(0.5)) / 2 + (softplus(0.2) + softplus(-1.0)) / 2
    )


def test_non_saturating_generator_loss() -> None:
    expected = mean(-math.log(sigmoid(f)) for f in FAKE)  # -log D(G(z))
    assert g_loss("ns", t(FAKE)).item() == pytest.approx(expected, abs=1e-12)


def test_saturating_generator_loss() -> None:
    expected = mean(math.log(1.0 - sigmoid(f)) for f in FAKE)  # the minimax log(1 - D(G(z)))
    assert g_loss("saturating", t(FAKE)).item() == pytest.approx(expected, abs=1e-12)
    assert expected < 0


def test_wgan_losses() -> None:
    drift = 0.001 * mean(r * r for r in REAL)
    expected_d = mean(FAKE) - mean(REAL) + drift
    assert d_loss("wgan-gp", t(REAL), t(FAKE)).item() == pytest.approx(expected_d, abs=1e-12)
    assert expected_d == pytest.approx(-0.4 - 0.25 + 0.001 * 0.625)
    assert g_loss("wgan-gp", t(FAKE)).item() == pytest.approx(0.4, abs=1e-12)


def test_hinge_losses() -> None:
    expected_d = mean(max(0.0, 1.0 - r) for r in REAL) + mean(max(0.0, 1.0 + f) for f in FAKE)
    assert expected_d == pytest.approx((0.0 + 1.5) / 2 + (1.2 + 0.0) / 2)
    assert d_loss("hinge", t(REAL), t(FAKE)).item() == pytest.approx(expected_d, abs=1e-12)
    assert g_loss("hinge", t(FAKE)).item() == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize(
    ("real", "fake"),
    [
        (REAL, FAKE),
        ([0.3, 2.0, -1.5, 0.0], [1.1, -0.4, 0.7, -2.2]),
        ([0.5, -0.25, 1.75], [0.1, -3.0]),  # unequal batch sizes
    ],
)
def test_dual_contrastive_matches_eq_2_1_and_2_2(real: list[float], fake: list[float]) -> None:
    expected = contrastive_by_hand(real, fake)
    assert d_loss("contrastive", t(real), t(fake)).item() == pytest.approx(expected, abs=1e-12)
    assert dual_contrastive(t(real), t(fake)).item() == pytest.approx(expected, abs=1e-12)


def test_dual_contrastive_is_softmax_cross_entropy_of_one_against_a_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(5, generator=gen, dtype=torch.float64)
    fake = torch.randn(5, generator=gen, dtype=torch.float64)
    # Case I: row i = [real_i, fake_1..fake_B], the real is the positive class (index 0).
    rows1 = torch.stack([torch.cat([real[i : i + 1], fake]) for i in range(5)])
    # Case II: row j = [-fake_j, -real_1..-real_B], the fake is the positive class.
    rows2 = torch.stack([torch.cat([-fake[j : j + 1], -real]) for j in range(5)])
    target = torch.zeros(5, dtype=torch.long)
    expected = F.cross_entropy(rows1, target) + F.cross_entropy(rows2, target)
    got = d_loss("contrastive", real, fake)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def test_contrastive_generator_loss_swaps_the_roles() -> None:
    real, fake = [0.3, 2.0, -1.5], [1.1, -0.4, 0.7]
    got = g_loss("contrastive", t(fake), t(real)).item()
    assert got == pytest.approx(contrastive_by_hand(fake, real), abs=1e-12)
    # The port bug: G minimizing the discriminator's own loss argument order.
    assert abs(got - d_loss("contrastive", t(real), t(fake)).item()) > 1e-3


def test_contrastive_generator_loss_is_the_role_swapped_eq_2_1_plus_2_2() -> None:
    # Two reals (r1, r2) and two fakes (f1, f2), every term written out: each fake against the
    # real batch, then each real against the fake batch, with the fake as the winning side.
    r1, r2, f1, f2 = 0.4, -1.2, 0.9, -0.3
    case_fake = (
        math.log(1 + math.exp(r1 - f1) + math.exp(r2 - f1))
        + math.log(1 + math.exp(r1 - f2) + math.exp(r2 - f2))
    ) / 2
    case_real = (
        math.log(1 + math.exp(r1 - f1) + math.exp(r1 - f2))
        + math.log(1 + math.exp(r2 - f1) + math.exp(r2 - f2))
    ) / 2
    got = g_loss("contrastive", t([f1, f2]), t([r1, r2])).item()
    assert got == pytest.approx(case_fake + case_real, abs=1e-12)
    # The literal min-max reading of Eq. 2.3 (G maximising D's loss) is a different value.
    assert abs(got + d_loss("contrastive", t([r1, r2]), t([f1, f2])).item()) > 0.1


def test_contrastive_generator_loss_needs_real_logits() -> None:
    with pytest.raises(ValueError, match="real"):
        g_loss("contrastive", t(FAKE))


def test_dual_contrastive_is_stable_for_large_logits() -> None:
    real, fake = t([500.0, -400.0]), t([450.0, 800.0])
    value = d_loss("contrastive", real, fake)
    assert torch.isfinite(value)
    # Dominant terms: log(1 + e^300 + e^350) ~ 350, log(1 + e^1200 + ...) ~ 1200, ...
    expected = mean([800.0 - 500.0, 800.0 + 400.0]) + mean([450.0 + 400.0, 800.0 + 400.0])
    assert value.item() == pytest.approx(expected, rel=1e-9)


def test_unknown_loss_is_a_user_error() -> None:
    with pytest.raises(GantkError, match="unknown loss 'foo'"):
        d_loss("foo", t(REAL), t(FAKE))
    with pytest.raises(GantkError, match=r"unknown loss 'foo'.*contrastive"):
        g_loss("foo", t(FAKE), t(REAL))


# --- directions -----------------------------------------------------------------------------

# Inside every margin (hinge at +-1), so no gradient is clipped to zero.
REAL_IN = [0.3, -0.4, 0.1]
FAKE_IN = [0.2, -0.6, 0.5]


def grads(fn, *tensors: list[float]) -> list[torch.Tensor]:
    leaves = [t(v).requires_grad_(True) for v in tensors]
    return list(torch.autograd.grad(fn(*leaves), leaves))


@pytest.mark.parametrize("kind", LOSSES)
def test_discriminator_loss_pushes_real_up_and_fake_down(kind: str) -> None:
    g_real, g_fake = grads(lambda r, f: d_loss(kind, r, f), REAL_IN, FAKE_IN)
    assert (g_real < 0).all(), g_real  # minimizing raises every real logit
    assert (g_fake > 0).all(), g_fake  # ... and lowers every fake logit


@pytest.mark.parametrize("kind", LOSSES)
def test_generator_loss_pushes_fake_up(kind: str) -> None:
    (g_fake,) = grads(lambda f: g_loss(kind, f, t(REAL_IN)), FAKE_IN)
    assert (g_fake < 0).all(), g_fake  # G wants its fakes scored higher


def test_contrastive_discriminator_loss_decreases_as_the_classes_separate() -> None:
    base = d_loss("contrastive", t(REAL_IN), t(FAKE_IN)).item()
    higher_real = d_loss("contrastive", t(REAL_IN) + 0.5, t(FAKE_IN)).item()
    lower_fake = d_loss("contrastive", t(REAL_IN), t(FAKE_IN) - 0.5).item()
    assert higher_real < base and lower_fake < base
    # ... and the generator's loss goes the other way when its fakes improve.
    g_base = g_loss("contrastive", t(FAKE_IN), t(REAL_IN)).item()
    assert g_loss("contrastive", t(FAKE_IN) + 0.5, t(REAL_IN)).item() < g_base


def test_contrastive_generator_gradient_is_not_the_discriminator_one() -> None:
    (g_gen,) = grads(lambda f: g_loss("contrastive", f, t(REAL_IN)), FAKE_IN)
    (g_disc,) = grads(lambda f: d_loss("contrastive", t(REAL_IN), f), FAKE_IN)
    assert (g_gen < 0).all() and (g_disc > 0).all()


# --- regularizers ---------------------------------------------------------------------------


def linear_d(w: torch.Tensor):
    return lambda x: (w * x).sum(dim=(1, 2, 3))


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    real = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    penalty = r1_penalty(linear_d(w), real)
    expected = float(np.sum(w.detach().numpy() ** 2))
    assert penalty.item() == pytest.approx(expected, rel=1e-12)
    # It must stay differentiable in D's parameters (create_graph): d||w||^2/dw = 2w.
    (grad,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad, 2 * w.detach(), atol=1e-12)


def test_r1_penalty_averages_per_sample_squared_gradient_norms() -> None:
    # d(x) = 0.5 * sum(x^2): the gradient is x itself, so R1 = mean_i ||x_i||^2.
    real = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2) / 10
    penalty = r1_penalty(lambda x: 0.5 * x.square().sum(dim=(1, 2, 3)), real)
    arr = real.numpy()
    expected = mean(float(np.sum(arr[i] ** 2)) for i in range(2))
    assert penalty.item() == pytest.approx(expected, rel=1e-12)
    assert not real.requires_grad  # the caller's tensor is left alone


def test_gradient_penalty_of_a_linear_discriminator() -> None:
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    real = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    fake = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    for norm, expected in ((2.0, 1.0), (1.0, 0.0), (0.25, 0.5625)):
        scaled = w * (norm / w.norm())
        value = gradient_penalty(linear_d(scaled), real, fake)
        assert value.item() == pytest.approx(expected, abs=1e-12)


def test_gradient_penalty_is_taken_at_random_interpolates() -> None:
    # d(x) = 0.5 * sum(x^2) has gradient x_hat = real + alpha * (fake - real).
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    fake = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(11)
    value = gradient_penalty(lambda x: 0.5 * x.square().sum(dim=(1, 2, 3)), real, fake)
    torch.manual_seed(11)
    alpha = torch.rand(4, dtype=torch.float64).numpy()
    r, f = real.numpy(), fake.numpy()
    norms = [np.sqrt(np.sum((r[i] + alpha[i] * (f[i] - r[i])) ** 2)) for i in range(4)]
    expected = mean((n - 1.0) ** 2 for n in norms)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_path_lengths_of_a_linear_synthesis() -> None:
    batch, num_ws, w_dim, shape = 3, 4, 5, (2, 3, 3)  # images (B, 2, 3, 3)
    pixels = int(np.prod(shape))
    gen = torch.Generator().manual_seed(4)
    A = torch.randn(pixels, num_ws * w_dim, generator=gen, dtype=torch.float64)
    ws = torch.randn(batch, num_ws, w_dim, generator=gen, dtype=torch.float64)

    def synthesis(w: torch.Tensor) -> torch.Tensor:
        return (w.reshape(batch, -1) @ A.t()).reshape(batch, *shape)

    torch.manual_seed(5)
    lengths = path_lengths(synthesis, ws)
    torch.manual_seed(5)  # the same image-space directions y, drawn like randn_like(img)
    y = torch.randn(batch, *shape, dtype=torch.float64).numpy() / math.sqrt(3 * 3)
    a = A.numpy()
    expected = []
    for i in range(batch):
        jt_y = (y[i].reshape(-1) @ a).reshape(num_ws, w_dim)  # J^T y, per style vector
        expected.append(math.sqrt(np.mean(np.sum(jt_y**2, axis=1))))
    assert lengths.shape == (batch,)
    assert np.allclose(lengths.detach().numpy(), expected, rtol=1e-10, atol=0)
    # Differentiable w.r.t. the synthesis (create_graph), as the regularizer needs.
    A.requires_grad_(True)
    torch.manual_seed(5)
    (grad,) = torch.autograd.grad(path_lengths(synthesis, ws).sum(), A)
    assert grad.abs().sum() > 0
