"""Inference via Optimization Measure (IvOM; Metz et al. 2017, used by Inclusive GAN, thesis ch.7).

For each query image, a latent z is optimised so that the generator reproduces the query, and
the remaining LPIPS distance is the query's IvOM: low means the generator covers that image. The
Inclusive GAN authors use 400 Adam steps with learning rate 0.1 from z ~ N(0, I), on 3000
queries, and report the mean and the standard deviation across attributes of the per-attribute
mean IvOM (a coverage-fairness figure: equal coverage of all subgroups gives a low std).

Optimisation runs in z space with the generator frozen and ``noise_mode="const"`` (so the result
is a function of z alone). All queries of a batch are optimised together with the per-query
losses summed: the generator treats samples independently and Adam's update is element-wise, so
this is the same as optimising each query alone, only faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gantk.errors import GantkError
from gantk.metrics.lpips_metric import lpips_distance, resize_to, to_unit_range

if TYPE_CHECKING:
    from gantk.gan.networks import Generator

Advance = Callable[[int], None] | None

DEFAULT_STEPS = 400
DEFAULT_LR = 0.1


def _reconstruct(
    G: Generator,
    target: torch.Tensor,
    z0: torch.Tensor,
    lpips_model: nn.Module,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """LPIPS (B,) between ``target`` and G(z) after ``steps`` Adam steps on z from ``z0``."""
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        loss = lpips_distance(lpips_model, G(z, noise_mode="const"), target).sum()
        # autograd.grad rather than backward(): only z needs a gradient, and the caller's
        # generator must not accumulate .grad on its parameters if they still require one.
        (z.grad,) = torch.autograd.grad(loss, [z])
        optimizer.step()
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
) -> np.ndarray:
    """Per-query IvOM: uint8 queries (N, 3, R, R) -> float64 (N,), the final LPIPS of each.

    With ``restarts`` > 1 every query is optimised from that many initial latents and keeps the
    best final distance. The initial latents are drawn once, (restarts, N, z_dim) from a
    generator seeded with ``seed``, so a query's result does not depend on ``batch_size``.
    Queries of another size are resized (bilinear) to the generator's resolution.
    ``lpips_model`` must be on the generator's device. ``steps=0`` gives the distance at the
    initial latents. ``advance(n)`` is called after each batch of n queries.
    """
    if queries.ndim != 4 or queries.shape[1] != 3 or queries.dtype != torch.uint8:
        raise ValueError(f"queries must be uint8 (N, 3, H, W), got {queries.dtype} {queries.shape}")
    if steps < 0 or restarts < 1 or batch_size < 1:
        raise GantkError("IvOM needs steps >= 0, restarts >= 1 and batch size >= 1")
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
            dist = _reconstruct(G, target, z_init[r, start:stop].to(device), lpips_model, steps, lr)
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
