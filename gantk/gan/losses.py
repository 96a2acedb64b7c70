"""GAN losses on discriminator logits, and the regularizers of StyleGAN2.

Each adversarial loss is a pair of functions of the logits of real and generated images:
``d_loss(real, fake)`` for the discriminator and ``g_loss(fake, real)`` for the generator,
both to be minimized. Regularizers that need gradients through the networks (R1, WGAN-GP,
path length) take the networks.

WGAN-GP's :func:`gradient_penalty` lives in :mod:`gantk.nn.penalties` (shared with the
Texture Mixer) and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.nn.penalties import gradient_penalty as gradient_penalty  # re-exported
from gantk.nn.penalties import wgan_critic_loss, wgan_generator_loss

LOSSES = ("ns", "saturating", "wgan-gp", "hinge", "contrastive")


class NonFiniteLoss(GantkError):
    """A loss or penalty became inf or NaN (the trainer stops at the last good state)."""


def dual_contrastive(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Dual contrastive loss (thesis Eq. 2.1-2.2) teaching that ``high`` logits beat ``low``.

    Case I: each ``high[i]`` is the positive class against the whole batch ``low``:
    softmax cross-entropy of [high_i, low_1..low_B] = log(1 + sum_j exp(low_j - high_i)).
    Case II, dually: each ``low[j]`` against the batch ``high``, with negated logits:
    cross-entropy of [-low_j, -high_1..-high_B] = log(1 + sum_i exp(low_j - high_i)).
    Returns the sum of the two means.
    """
    diff = low[None, :] - high[:, None]  # diff[i, j] = low_j - high_i
    zeros = torch.zeros_like(high[:, None])
    case1 = torch.logsumexp(torch.cat([zeros, diff], dim=1), dim=1).mean()
    zeros = torch.zeros_like(low[None, :])
    case2 = torch.logsumexp(torch.cat([zeros, diff], dim=0), dim=0).mean()
    return case1 + case2


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind in ("ns", "saturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wgan-gp":
        return wgan_critic_loss(real, fake)
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "contrastive":
        return dual_contrastive(real, fake)
    raise GantkError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")


def g_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "ns":
        return F.softplus(-fake).mean()
    if kind == "saturating":
        # Minimize log(1 - sigmoid(fake)) = -softplus(fake): the original minimax objective.
        return -F.softplus(fake).mean()
    if kind in ("wgan-gp", "hinge"):
        return wgan_generator_loss(fake)
    if kind == "contrastive":
        if real is None:
            raise ValueError("the contrastive generator loss needs the logits of real images")
        # Derivation (thesis Eq. 2.1-2.3). D maximises L_real + L_fake, i.e. minimises
        #   dual_contrastive(real, fake) = E_x log(1 + sum_z e^(D(G(z)) - D(x)))      (Case I)
        #                                + E_z log(1 + sum_x e^(D(G(z)) - D(x)))      (Case II).
        # Eq. 2.3 read literally has G minimise L_real + L_fake, i.e. *maximise* that same sum:
        # the saturating form, whose gradient vanishes once D separates the classes (every
        # exponent very negative), exactly as log(1 - sigmoid) does for the logistic loss.
        # As StyleGAN2 does for the logistic loss, G instead minimises the loss with the roles of
        # real and fake exchanged: each fake should win its one-against-a-batch softmax against
        # the reals, and each real should lose against the fakes:
        #   dual_contrastive(fake, real) = E_z log(1 + sum_x e^(D(x) - D(G(z))))
        #                                + E_x log(1 + sum_z e^(D(x) - D(G(z)))).
        # Calling dual_contrastive(real, fake) here (D's own argument order) would make G help D;
        # tests/test_gan_losses.py pins both the form and its gradient's sign.
        return dual_contrastive(fake, real)
    raise GantkError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")


def r1_penalty(d_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real images (times gamma/2 by the caller)."""
    real = real.detach().requires_grad_(True)
    logits = d_fn(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]).mean()


def path_lengths(
    synthesis: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor
) -> torch.Tensor:
    """Per-sample |J_w^T y| for random image-space directions y (StyleGAN2 path length)."""
    ws = ws.detach().requires_grad_(True) if not ws.requires_grad else ws
    img = synthesis(ws)
    noise = torch.randn_like(img) / (img.shape[2] * img.shape[3]) ** 0.5
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()
