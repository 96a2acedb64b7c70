"""Sampling a generator the way every gantk metric does: seeds -> latents -> uint8 images.

The one sampling loop of the package (:class:`GeneratorSampler`): image ``i`` of seeds S… is
drawn from the latent of seed S + i (in the generator's seed convention, :func:`latents_for`),
of class ``s mod c_dim`` for a class-conditional generator (:func:`seed_classes`), through
truncation ``psi``, with random noise inputs seeded by the batch's first seed
(:func:`seeded_noise`), so any batch is reproducible on its own and a metric is repeatable.

Metrics consume this interface without importing the GAN package: they take any object with
``resolution`` and ``batches(seeds, batch_size)`` (:class:`gantk.metrics.sources.Sampler`),
and the command line hands them a :class:`GeneratorSampler`
(:func:`gantk.gan.generate.open_sampler`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from gantk.io.images import to_uint8

# How seeds become latents, recorded in a checkpoint's metadata under LATENTS_KEY: gantk's own
# (torch's generator seeded with s), or NVIDIA's generate.py (numpy's RandomState(s)), so a
# converted NVIDIA model draws the very latents its users know by seed.
LATENTS_KEY = "gantk.latents"
TORCH_LATENTS = "torch"
NUMPY_LATENTS = "numpy-randomstate"


def latents_for(seeds: Sequence[int], G: torch.nn.Module) -> torch.Tensor:
    """The latents (len(seeds), z_dim) that ``G``'s seed convention gives ``seeds``."""
    z_dim = G.config.z_dim
    if getattr(G, "latent_convention", TORCH_LATENTS) == NUMPY_LATENTS:
        rows = [np.random.RandomState(s).randn(z_dim) for s in seeds]
        return torch.from_numpy(np.stack(rows)).float()
    return torch.stack(
        [torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


# Metric noise seeds sit far above latent seeds, so a batch's noise never replays a latent.
NOISE_SEED_OFFSET = 1 << 40


@contextmanager
def seeded_noise(seed: int, device: torch.device | str) -> Iterator[None]:
    """Draw the generator's random noise inputs from ``seed`` inside the block, leaving the
    caller's random state as it was. Metrics sample with random noise, as StyleGAN2's do (a
    constant noise map repeated over every sample narrows the distribution being measured);
    seeding keeps a metric repeatable."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def sample_uint8(
    G: torch.nn.Module,
    z: torch.Tensor,
    noise_seed: int,
    psi: float = 1.0,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 (B, 3, H, W) images of latents ``z`` for metrics: random noise inputs drawn from
    ``noise_seed`` (so one batch is reproducible on its own)."""
    device = next(G.parameters()).device
    with torch.no_grad(), seeded_noise(noise_seed, device):
        img = G(z.to(device), psi=psi, noise_mode="random",
                c=c.to(device) if c is not None else None)  # fmt: skip
    return to_uint8(img).permute(0, 3, 1, 2).cpu()


def seed_classes(G: torch.nn.Module, seeds: Sequence[int]) -> torch.Tensor | None:
    """One-hot classes for metrics on a conditional G: seed s draws class s mod c_dim (every
    class equally often, the same images every run); None for an unconditional G."""
    classes = G.config.c_dim
    if not classes:
        return None
    labels = torch.tensor([s % classes for s in seeds])
    return torch.nn.functional.one_hot(labels, classes).float()


@dataclass
class GeneratorSampler:
    """A generator as the metrics see it: seeds in, uint8 (B, 3, H, W) batches out."""

    G: torch.nn.Module
    truncation: float = 1.0

    @property
    def resolution(self) -> int:
        return int(self.G.config.resolution)

    def batches(self, seeds: Sequence[int], batch_size: int) -> Iterator[torch.Tensor]:
        """The images of ``seeds`` in batches of ``batch_size``, each batch's noise seeded by
        its first seed (the same images whatever part of a longer run of seeds it is)."""
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            yield sample_uint8(self.G, latents_for(chunk, self.G), NOISE_SEED_OFFSET + chunk[0],
                               self.truncation, seed_classes(self.G, chunk))  # fmt: skip
