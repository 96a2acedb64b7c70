"""--batch-gpu: gradients accumulated over slices of the batch equal the whole batch's, for the
losses that are means over images and for the dual contrastive loss (two passes), with R1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_close_in_norm, error_line

from gantk.gan import microbatch
from gantk.gan.config import TrainConfig
from gantk.gan.networks import NetworkConfig
from gantk.gan.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tmp_path: Path, loss: str, batch_gpu: int | None, **kw) -> Trainer:
    # Minibatch-std over groups of 1 makes D a function of each image alone, the one thing
    # slicing changes on purpose; path length (its running mean moves per slice) is off.
    network = NetworkConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                            channel_base=64, channel_max=8, mbstd_group=1)  # fmt: skip
    settings = dict(data="builtin:shapes?n=32", out=str(tmp_path), network=network, kimg=1,
                    batch_size=8, loss=loss, pl_weight=0.0, r1_gamma=1.0,
                    contrastive_warmup_epochs=0, device="cpu", batch_gpu=batch_gpu)  # fmt: skip
    config = TrainConfig(**{**settings, **kw})
    return Trainer(config, log=lambda _: None)


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("loss", "batch_gpu"), [("ns", 2), ("hinge", 4), ("contrastive", 2)])
def test_sliced_gradients_equal_the_whole_batch(tmp_path: Path, loss: str, batch_gpu) -> None:
    real = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = []
    for size in (None, batch_gpu):
        trainer = _trainer(tmp_path / str(size), loss, size)
        stats = trainer.train_step(real)
        results.append((stats, _grads(trainer.D), _grads(trainer.G)))
    (whole, d_whole, g_whole), (sliced, d_sliced, g_sliced) = results
    # Float32 sums in another order: tolerances from the size of each quantity, never absolute
    # per element (an element of 2.6e-3 was off by 1.4e-6 on another CPU of the same kind).
    # Measured here: 1e-6 (ns, hinge) and 2.4e-5 (contrastive) of a tensor's norm; a slicing
    # bug (a slice counted twice or left out) is off by tens of percent.
    scale = max(abs(whole[k]) for k in ("loss_d", "loss_g", "real_logit", "fake_logit"))
    for key in ("loss_d", "loss_g", "r1", "real_logit", "fake_logit"):
        assert sliced[key] == pytest.approx(whole[key], abs=1e-5 * scale), key
    assert d_whole.keys() == d_sliced.keys() and g_whole.keys() == g_sliced.keys()
    assert len(d_whole) > 10 and len(g_whole) > 10
    for name in d_whole:
        assert_close_in_norm(d_sliced[name], d_whole[name], 1e-3, name)
    for name in g_whole:
        if name.endswith("noise_strength"):
            # Each slice draws its own noise images; a strength's gradient is sum(grad * noise),
            # so it differs with the draw. The strengths start at 0, so the images do not.
            continue
        assert_close_in_norm(g_sliced[name], g_whole[name], 1e-3, name)


def test_slices() -> None:
    assert microbatch.slices(8, None) == [slice(0, 8)]
    assert microbatch.slices(8, 16) == [slice(0, 8)]
    assert microbatch.slices(8, 4) == [slice(0, 4), slice(4, 8)]


def test_batch_gpu_must_divide_the_batch(cli, tmp_path: Path) -> None:
    result = cli("train", "gan", "builtin:shapes?n=32", "--out", str(tmp_path / "r"),
                 "--batch-size", "8", "--batch-gpu", "3", "--resolution", "16")  # fmt: skip
    assert result.exit_code == 2
    assert "--batch-gpu 3 must divide the batch each process trains on (8" in error_line(result)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("loss", ["ns", "contrastive", "wgan-gp"])
def test_sliced_training_with_every_term_runs(tmp_path: Path, loss: str) -> None:
    # Path length (per slice), R1 or the gradient penalty, and ADA, all through slices.
    trainer = _trainer(tmp_path, loss, 2, pl_weight=2.0, pl_interval=1, r1_interval=1, aug="ada",
                       aug_p=0.5)  # fmt: skip
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    for _ in range(2):
        stats = trainer.train_step(real)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert "pl_penalty" in stats and ("gp" in stats if loss == "wgan-gp" else "r1" in stats)
