"""WGAN-GP for adversarial training: the critic and generator losses and the gradient
penalty, shared by the GAN trainer (through :mod:`gantk.gan.losses`, which re-exports them), the
Texture Mixer and visNet's critic (attribution), so that neither depends on the GAN code."""

from __future__ import annotations

from collections.abc import Callable

import torch

from gantk.nn.distributed import Dist


def wgan_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's Wasserstein loss on its scores, with ProGAN's drift term that keeps real
    scores near 0 (Karras et al. 2018)."""
    return fake.mean() - real.mean() + 0.001 * real.square().mean()


def wgan_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def gradient_penalty(
    d_fn: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    per_sample: bool = False,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake images; the
    batch mean, or one value per sample (for losses that weight samples, e.g. Texture Mixer's
    α-weighted interpolation critic). ``alpha`` (N, 1, 1, 1): the interpolation weights, drawn
    by the caller (a data-parallel trainer draws them for the whole batch,
    :func:`gp_weights`); by default from the global generator."""
    if alpha is None:
        alpha = gp_weights(real)
    # The fake side may come from a network under bf16 autocast; mix in the real side's type.
    mixed = (real.detach().lerp(fake.detach().to(real.dtype), alpha)).requires_grad_(True)
    (grad,) = torch.autograd.grad(d_fn(mixed).sum(), mixed, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1.0).square()
    return penalty if per_sample else penalty.mean()


def gp_weights(real: torch.Tensor, dist: Dist | None = None, groups: int = 1) -> torch.Tensor:
    """The interpolation weights of :func:`gradient_penalty` for ``real``, from the global
    generator; with ``dist``, drawn for the whole batch split across processes and this
    process's share kept (``groups``: ``real`` stacks that many shared-out parts,
    :meth:`Dist.draw`)."""

    def draw(count: int) -> torch.Tensor:
        return torch.rand(count, 1, 1, 1, device=real.device, dtype=real.dtype)

    return draw(real.shape[0]) if dist is None else dist.draw(real.shape[0], draw, groups)
