"""visNet (fingerprint visualization): correlation, fingerprint shapes and consistency, the
optimizer split, learning on synthetic fingerprinted sources, and the Fig. 4.7-style PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gantk.attribution.networks import Attributor, AttributorConfig
from gantk.attribution.train import build_model
from gantk.attribution.visnet import VisNet, correlation, visualize
from gantk.errors import GantkError

pytestmark = pytest.mark.usefixtures("one_thread")

RES = 16
NAMES = ["real", "ganA", "ganB"]


def make_model(names: list[str] = NAMES, seed: int = 0) -> VisNet:
    torch.manual_seed(seed)
    return VisNet(AttributorConfig(RES, list(names), variant="visnet", channel_base=64))


def smooth_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """Random low-frequency content: 4x4 noise blown up bilinearly to RES x RES."""
    low = torch.rand(n, 3, 4, 4, generator=gen) * 1.2 - 0.6
    return F.interpolate(low, size=(RES, RES), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Correlation and fingerprints


def test_correlation_matches_numpy_corrcoef() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(5, 40, generator=gen, dtype=torch.float64) * 3 + 2
    b = torch.randn(3, 40, generator=gen, dtype=torch.float64) - 1
    got = correlation(a, b).numpy()
    full = np.corrcoef(np.concatenate([a.numpy(), b.numpy()]))
    np.testing.assert_allclose(got, full[:5, 5:], atol=1e-10)
    # Invariant to each row's offset and positive scale; negating a row flips the sign.
    np.testing.assert_allclose(correlation(a * 7 - 4, b).numpy(), got, atol=1e-10)
    np.testing.assert_allclose(correlation(a, -b).numpy(), -got, atol=1e-10)
    # Images are vectorized first.
    imgs = a[:, :36].reshape(5, 1, 6, 6)
    np.testing.assert_allclose(
        correlation(imgs, b[:, :36]).numpy(), correlation(a[:, :36], b[:, :36]).numpy()
    )


def test_fingerprint_shapes_and_definitions() -> None:
    model = make_model()
    x = smooth_images(4, torch.Generator().manual_seed(2))
    dim = 3 * RES * RES
    with torch.no_grad():
        rec = model.reconstruct(x)
        flat = model.image_fingerprints(x)
        pictures = model.fingerprint_images(x)
    assert rec.shape == x.shape
    assert flat.shape == (4, dim)
    torch.testing.assert_close(flat, (rec - x).flatten(1))
    torch.testing.assert_close(pictures, rec - x)
    assert model.model_fingerprints().shape == (len(NAMES), dim)
    assert model.model_fingerprint_images().shape == (len(NAMES), 3, RES, RES)
    torch.testing.assert_close(
        model.model_fingerprints(), model.model_fingerprint_images().flatten(1)
    )
    # Detached: handing them out must not let callers build graphs into the parameters.
    assert not model.model_fingerprints().requires_grad


def test_logits_rank_classes_like_the_correlations() -> None:
    model = make_model()
    x = smooth_images(16, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(x)
        corr = correlation(model.image_fingerprints(x), model.model_fingerprints())
    assert logits.shape == (16, len(NAMES))
    assert torch.equal(logits.argsort(dim=1), corr.argsort(dim=1))
    # A positive common scale, starting where logits span about ±10.
    torch.testing.assert_close(logits, 10.0 * corr)


def test_build_model_and_variant_check() -> None:
    config = AttributorConfig(RES, ["a", "b"], variant="visnet", channel_base=64)
    assert isinstance(build_model(config), VisNet)
    with pytest.raises(GantkError, match="visnet"):
        VisNet(AttributorConfig(RES, ["a", "b"], variant="full", channel_base=64))
    with pytest.raises(GantkError, match="visnet"):
        Attributor(config)


# ----------------------------------------------------------------------------------------------
# Training


def test_optimizers_split_the_parameters() -> None:
    model = make_model()
    rec_opt, critic_opt = model.make_optimizers(1e-3)
    rec = {id(p) for g in rec_opt.param_groups for p in g["params"]}
    critic = {id(p) for g in critic_opt.param_groups for p in g["params"]}
    assert rec.isdisjoint(critic)
    assert rec | critic == {id(p) for p in model.parameters()}
    assert critic == {id(p) for p in model.critic.parameters()}
    assert id(model.fingerprints) in rec and id(model.log_scale) in rec
    for opt in (rec_opt, critic_opt):
        assert opt.param_groups[0]["betas"] == (0.0, 0.99)


def test_train_step_values_and_which_parameters_move() -> None:
    model = make_model()
    gen = torch.Generator().manual_seed(4)
    x, y = smooth_images(8, gen), torch.arange(8) % len(NAMES)
    rec_opt, critic_opt = model.make_optimizers(1e-3)

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
        return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))

    # With R's learning rate at zero, only the critic may change: its step must not touch R.
    rec_opt.param_groups[0]["lr"] = 0.0
    ae, critic = snapshot(model.encoder), snapshot(model.critic)
    fps = model.fingerprints.detach().clone()
    stats = model.train_step(x, y, [rec_opt, critic_opt])
    assert {"loss", "acc", "l1", "adv", "ce", "gp"} <= stats.keys()
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert 0.0 <= stats["acc"] <= 1.0 and stats["l1"] > 0 and stats["gp"] >= 0
    assert stats["loss"] == pytest.approx(20 * stats["l1"] + 0.1 * stats["adv"] + stats["ce"])
    assert moved(critic, model.critic)
    assert not moved(ae, model.encoder) and torch.equal(fps, model.fingerprints)

    # And the other way round: R's step leaves the critic alone, and unfreezes it after.
    rec_opt.param_groups[0]["lr"], critic_opt.param_groups[0]["lr"] = 1e-3, 0.0
    ae, critic = snapshot(model.encoder), snapshot(model.critic)
    model.train_step(x, y, [rec_opt, critic_opt])
    assert moved(ae, model.encoder) and not torch.equal(fps, model.fingerprints)
    assert not moved(critic, model.critic)
    assert all(p.requires_grad for p in model.critic.parameters())


def test_training_learns_fingerprinted_sources() -> None:
    """Two sources: random smooth images plus a fixed faint high-frequency pattern each."""
    gen = torch.Generator().manual_seed(5)
    patterns = torch.sign(torch.randn(2, 3, RES, RES, generator=gen)) * 0.05

    def batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 2
        return (smooth_images(n, g) + patterns[y]).clamp(-1, 1), y

    model = make_model(["a", "b"], seed=5)
    optimizers = model.make_optimizers(1e-3)
    train = torch.Generator().manual_seed(6)
    history = [model.train_step(*batch(32, train), optimizers) for _ in range(40)]

    x, y = batch(128, torch.Generator().manual_seed(7))  # held out: fresh content
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8
    first = np.mean([h["l1"] for h in history[:5]])
    last = np.mean([h["l1"] for h in history[-5:]])
    assert last < 0.95 * first
    assert np.mean([h["ce"] for h in history[-5:]]) < np.mean([h["ce"] for h in history[:5]])
    # The learned model fingerprints point along the sources' patterns: the residual R(I) - I
    # carries -pattern, so the "a" fingerprint correlates with -(pa - pb) better than "b" does.
    corr = correlation(-(patterns[0] - patterns[1])[None], model.model_fingerprints())[0]
    assert corr[0] > corr[1]


# ----------------------------------------------------------------------------------------------
# Visualization


def test_visualize_writes_a_png_and_refuses_to_overwrite(tmp_path: Path) -> None:
    model = make_model()
    x = smooth_images(4, torch.Generator().manual_seed(8))
    labels = torch.tensor([0, 1, 2, 0])
    out = tmp_path / "figs" / "visnet.png"
    assert visualize(model, x, labels, out) == out
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary left behind

    before = out.read_bytes()
    with pytest.raises(GantkError, match="already exists"):
        visualize(model, x, None, out)
    assert out.read_bytes() == before
    visualize(model, x, None, out, force=True)  # unlabelled, replacing
    with Image.open(out) as img:
        assert img.format == "PNG"
