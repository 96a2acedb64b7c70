"""Metrics sample generators with random noise inputs (as StyleGAN2's metrics do), seeded so a
metric is repeatable; `gantk generate` keeps the constant noise maps."""

from __future__ import annotations

import torch

from gantk.gan.fddf import fddf
from gantk.gan.networks import Discriminator, Generator, NetworkConfig
from gantk.gan.sampling import NOISE_SEED_OFFSET, GeneratorSampler, latents_for
from gantk.io.datasets import open_dataset
from gantk.metrics.sources import ImageSource


def tiny_generator() -> Generator:
    torch.manual_seed(3)
    config = NetworkConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                           channel_max=8)  # fmt: skip
    G = Generator(config).eval().requires_grad_(False)
    with torch.no_grad():  # noise strengths start at 0: make the noise visible in the output
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


def by_hand(G: Generator, seeds: range) -> torch.Tensor:
    """The images the metrics should see, computed without gantk's sampling helpers."""
    torch.manual_seed(NOISE_SEED_OFFSET + seeds[0])
    with torch.no_grad():
        img = G(latents_for(seeds, G), noise_mode="random")
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def test_generator_source_draws_seeded_random_noise() -> None:
    G = tiny_generator()
    source = ImageSource("g", "generator", 6, 8, sampler=GeneratorSampler(G), seed=10)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    batches = list(source.batches(batch_size=4))
    assert torch.rand(1) == before  # the caller's random stream is left as it was
    assert [len(b) for b in batches] == [4, 2]
    assert torch.equal(batches[0], by_hand(G, range(10, 14)))
    assert torch.equal(batches[1], by_hand(G, range(14, 16)))
    again = list(source.batches(batch_size=4))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    with torch.no_grad():
        const = G(latents_for(range(10, 14), G), noise_mode="const")
    const = (const * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert not torch.equal(batches[0], const)


def test_mode_counting_samples_like_the_other_metrics() -> None:
    G = tiny_generator()
    (batch,) = list(GeneratorSampler(G).batches(range(5, 8), batch_size=8))
    assert torch.equal(batch, by_hand(G, range(5, 8)))


def test_fddf_is_repeatable_with_random_noise() -> None:
    G = tiny_generator()
    D = Discriminator(G.config).eval().requires_grad_(False)
    data = open_dataset("builtin:shapes?n=16", resolution=8)
    first = fddf(D, G, data, count=16, batch_size=8, seed=1)
    assert fddf(D, G, data, count=16, batch_size=8, seed=1) == first
    assert fddf(D, G, data, count=16, batch_size=8, seed=2) != first
