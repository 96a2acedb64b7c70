"""Inference via Optimization Measure (IvOM; Metz et al. 2017, used by Inclusive GAN, thesis ch.7).

For each query image, a latent z is optimised so that the generator reproduces the query, and
the remaining LPIPS distance is the query's IvOM: low means the generator covers that image. The
Inclusive GAN authors use 400 Adam steps with learning rate 0.1 from z ~ N(0, I), on 3000
queries, and report the mean and the standard deviation across attributes of the per-attribute
mean IvOM (a coverage-fairness figure: equal coverage of all subgroups gives a low std).

The optimisation follows the authors' projector (InclusiveGAN ``projector_lpips.py``, itself
StyleGAN2's projector moved to z space) unless told otherwise (``schedule="constant"``):
- distance: LPIPS with the VGG-16 trunk (the CLI's default ``--lpips-net vgg``);
- Adam (0.9, 0.999) on z from z ~ N(0, I), 400 steps;
- learning rate 0.1 x a ramp-up over the first 5 % of the steps and a cosine ramp-down over the
  last 25 %;
- latent noise: each step optimises slerp(z, n, s) for fresh n ~ N(0, I), s = 0.05 x
  max(0, 1 - t / 0.75)^2 at t = step / steps (the generator normalises z, so only directions
  matter); the final distance is measured at z itself.
Noise inputs of the generator stay constant (``noise_mode="const"``), so the result is a function
of z alone. All queries of a batch are optimised together with the per-query losses summed: the
generator treats samples independently and Adam's update is element-wise, and every query draws
its latent noise from its own seeded stream, so this is the same as optimising each query alone,
only faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from gantk.errors import GantkError
from gantk.metrics.lpips_metric import lpips_distance, resize_to, to_unit_range

# A generator as IvOM uses it: z (B, z_dim) -> images (B, 3, R, R) in [-1, 1], called with
# noise_mode="const", and ``config.z_dim`` (gantk.gan.networks.Generator is one).
Generator = nn.Module

Advance = Callable[[int], None] | None

DEFAULT_STEPS = 400
DEFAULT_LR = 0.1
SCHEDULES = ("authors", "constant")
# The authors' projector (fractions of the run).
LR_RAMPUP, LR_RAMPDOWN, NOISE_FACTOR, NOISE_RAMP = 0.05, 0.25, 0.05, 0.75


def learning_rate(step: int, steps: int, base: float, schedule: str) -> float:
    """The step's learning rate: ``base`` throughout, or the authors' ramps."""
    if schedule == "constant":
        return base
    t = step / steps
    ramp = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / LR_RAMPDOWN))
    return base * ramp * min(1.0, t / LR_RAMPUP)


def noise_strength(step: int, steps: int, schedule: str) -> float:
    """How far (slerp fraction) the step's latent is pulled towards fresh noise."""
    if schedule == "constant":
        return 0.0
    return NOISE_FACTOR * max(0.0, 1.0 - (step / steps) / NOISE_RAMP) ** 2


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between the directions of ``a`` and ``b`` (rows), unit length."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    cos = (a * b).sum(dim=1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    towards = b - cos * a
    towards = towards / towards.norm(dim=1, keepdim=True)
    angle = t * torch.acos(cos)
    return a * torch.cos(angle) + towards * torch.sin(angle)


def optimise(
    params: list[torch.Tensor],
    render: Callable[[int], torch.Tensor],
    target: torch.Tensor,
    lpips_model: nn.Module,
    steps: int,
    lr: float,
    schedule: str,
    regularizer: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    """The projector's loop, shared by IvOM and ``gantk project``: Adam (0.9, 0.999) on
    ``params`` for ``steps`` steps with :func:`learning_rate`'s schedule, minimising the summed
    LPIPS between ``render(step)`` (images in [-1, 1], the step's latent noise applied by the
    caller) and ``target``, plus ``regularizer()``. ``after_step(step, image)`` runs after each
    update (noise renormalisation, progress frames)."""
    optimizer = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, schedule)
        image = render(step)
        loss = lpips_distance(lpips_model, image, target).sum()
        if regularizer is not None:
            loss = loss + regularizer()
        # autograd.grad rather than backward(): only the latents need a gradient, and the
        # caller's generator must not accumulate .grad on its parameters.
        for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
            param.grad = grad
        optimizer.step()
        if after_step is not None:
            after_step(step, image.detach())


def _reconstruct(
    G: Generator,
    target: torch.Tensor,
    z0: torch.Tensor,
    lpips_model: nn.Module,
    steps: int,
    lr: float,
    schedule: str,
    noise: list[torch.Generator],
) -> torch.Tensor:
    """LPIPS (B,) between ``target`` and G(z) after ``steps`` Adam steps on z from ``z0``;
    ``noise`` holds one seeded stream per query for the latent noise."""
    z = z0.clone().requires_grad_(True)

    def render(step: int) -> torch.Tensor:
        strength = noise_strength(step, steps, schedule)
        if strength > 0:
            n = torch.stack([torch.randn(z.shape[1], generator=g) for g in noise]).to(z.device)
            return G(slerp(z, n, strength), noise_mode="const")
        return G(z, noise_mode="const")

    optimise([z], render, target, lpips_model, steps, lr, schedule)
    with torch.no_grad():
        return lpips_distance(lpips_model, G(z, noise_mode="const"), target)


def ivom(
    G: Generator,
    queries: torch.Tensor,
    lpips_model: nn.Module,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    restarts: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    advance: Advance = None,
    schedule: str = "authors",
) -> np.ndarray:
    """Per-query IvOM: uint8 queries (N, 3, R, R) -> float64 (N,), the final LPIPS of each.

    With ``restarts`` > 1 every query is optimised from that many initial latents and keeps the
    best final distance. The initial latents are drawn once, (restarts, N, z_dim) from a
    generator seeded with ``seed``, so a query's result does not depend on ``batch_size``.
    Queries of another size are resized (bilinear) to the generator's resolution.
    ``lpips_model`` must be on the generator's device. ``steps=0`` gives the distance at the
    initial latents. ``advance(n)`` is called after each batch of n queries. ``schedule``:
    "authors" (ramped learning rate and latent noise, see the module) or "constant" (a fixed
    learning rate, no latent noise).
    """
    if queries.ndim != 4 or queries.shape[1] != 3 or queries.dtype != torch.uint8:
        raise ValueError(f"queries must be uint8 (N, 3, H, W), got {queries.dtype} {queries.shape}")
    if steps < 0 or restarts < 1 or batch_size < 1:
        raise GantkError("IvOM needs steps >= 0, restarts >= 1 and batch size >= 1")
    if schedule not in SCHEDULES:
        raise GantkError(f"IvOM schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    device = next(G.parameters()).device
    resolution = G.config.resolution
    z_dim = G.config.z_dim
    count = len(queries)
    z_init = torch.randn((restarts, count, z_dim), generator=torch.Generator().manual_seed(seed))
    best = np.full(count, np.inf)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        target = resize_to(to_unit_range(queries[start:stop]), (resolution, resolution))
        target = target.to(device)
        for r in range(restarts):
            # Each (restart, query) has its own latent-noise stream: results do not depend on
            # how queries are batched.
            noise = [
                torch.Generator().manual_seed(seed + 1 + (r * count + q) * 1_000_003)
                for q in range(start, stop)
            ]
            z0 = z_init[r, start:stop].to(device)
            dist = _reconstruct(G, target, z0, lpips_model, steps, lr, schedule, noise)
            best[start:stop] = np.minimum(best[start:stop], dist.double().cpu().numpy())
        if advance is not None:
            advance(stop - start)
    return best


def summarize_ivom(
    values: np.ndarray,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
) -> dict:
    """Mean/std/count of per-query IvOM and, with binary ``attributes`` (N, A), the mean IvOM of
    the queries having each attribute and ``attribute_std``, the std of those means.

    Stds use ddof=0. An attribute no query has gets ``None`` and is left out of the std
    (``attribute_std`` is ``None`` if no attribute has a positive query).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        raise GantkError("IvOM has no queries to summarise")
    result: dict = {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "count": len(values),
    }
    if attributes is None:
        return result
    attributes = np.asarray(attributes)
    if attributes.ndim != 2 or len(attributes) != len(values):
        raise GantkError(
            f"attributes must be one row per query ({len(values)}), got shape {attributes.shape}"
        )
    names = (
        list(attribute_names)
        if attribute_names is not None
        else [f"attr{i}" for i in range(attributes.shape[1])]
    )
    if len(names) != attributes.shape[1]:
        raise GantkError(
            f"{len(names)} attribute names for {attributes.shape[1]} attribute columns"
        )
    per_attribute: dict[str, float | None] = {}
    for k, name in enumerate(names):
        positive = attributes[:, k] == 1
        per_attribute[name] = float(values[positive].mean()) if positive.any() else None
    present = [v for v in per_attribute.values() if v is not None]
    result["attributes"] = per_attribute
    result["attribute_std"] = float(np.std(present)) if present else None
    return result
