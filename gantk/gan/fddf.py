"""FDDF: Fréchet distance of the discriminator's last-layer features, real vs generated
(thesis Table 2.2). Larger means the discriminator tells the two apart more clearly."""

from __future__ import annotations

import torch

from gantk.gan.loop import StepBatchSampler
from gantk.gan.networks import Discriminator, Generator
from gantk.gan.sampling import NOISE_SEED_OFFSET, seeded_noise
from gantk.io.datasets import ImageDataset
from gantk.metrics.frechet import GaussianStats, frechet_from_stats
from gantk.nn.distributed import Dist


def _real_batch(
    dataset: ImageDataset, sampler: StepBatchSampler, step: int, n: int, device: torch.device
) -> torch.Tensor:
    idx = sampler.indices(step)[:n]
    return torch.stack([dataset[i][0] for i in idx]).to(device).float() / 127.5 - 1.0


@torch.no_grad()
def fddf(
    D: Discriminator,
    G: Generator,
    dataset: ImageDataset,
    count: int = 10000,
    batch_size: int = 64,
    psi: float = 1.0,
    seed: int = 0,
) -> float:
    """Stream ``count`` real and ``count`` generated images through D's last hidden layer.

    With reference attention, each image is paired with a real reference drawn independently.
    """
    device = next(D.parameters()).device
    D.eval()
    dim = D.out.weight.shape[1]
    real_stats, fake_stats = GaussianStats(dim), GaussianStats(dim)
    sampler = StepBatchSampler(len(dataset), batch_size, seed, 0, Dist())
    latent_gen = torch.Generator().manual_seed(seed)
    step = done = 0
    while done < count:
        n = min(batch_size, count - done)

        real = _real_batch(dataset, sampler, step * 2, n, device)
        ref = _real_batch(dataset, sampler, step * 2 + 1, n, device) if D.needs_reference else None
        z = torch.randn(n, G.config.z_dim, generator=latent_gen).to(device)
        # Random noise inputs, as StyleGAN2's metrics sample, seeded per batch.
        with seeded_noise(NOISE_SEED_OFFSET + seed * 1_000_003 + step, device):
            fake = G(z, psi=psi, noise_mode="random")
        real_stats.update(D(real, ref, return_features=True)[1])
        fake_stats.update(D(fake, ref, return_features=True)[1])
        done += n
        step += 1
    return frechet_from_stats(real_stats, fake_stats)
