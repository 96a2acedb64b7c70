"""Projection (``gantk project``): the latent that makes a generator reproduce a given image.

StyleGAN2's projector (Karras et al. 2020, Sec. 5; its projector.py), with the optimisation loop
IvOM uses (:func:`gantk.metrics.ivom.optimise`):

- the latent is one w (broadcast to every layer) or, with ``wplus``, one w per layer, starting
  at the mapping network's average w (estimated from ``W_SAMPLES`` random z);
- each step perturbs it with Gaussian noise of std w_std x 0.05 x max(0, 1 - t / 0.75)^2
  (w_std: the spread of the sampled w), which helps it leave poor basins early;
- the generator's noise inputs are optimised too, from N(0, 1), with StyleGAN2's regulariser
  (squared autocorrelation at one-pixel shifts, at every scale down to 8x8, weight 1e5) and
  renormalised to zero mean and unit variance after each step, so they cannot carry the image;
- distance: LPIPS (VGG-16 trunk by default); Adam (0.9, 0.999), learning rate 0.1 with a ramp-up
  over the first 5 % of the steps and a cosine ramp-down over the last 25 %; 1000 steps.

Images are projected one at a time (the noise inputs are shared by a batch). The result holds
the per-layer styles (num_ws, w_dim) and the noise maps, which :func:`render_projection` turns
back into the same image (``gantk generate --latents``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.io.images import to_uint8
from gantk.metrics.ivom import noise_strength, optimise
from gantk.metrics.lpips_metric import lpips_distance, resize_to, to_unit_range

W_SAMPLES = 10000
NOISE_REG_WEIGHT = 1e5
LATENT_FILE_KEYS = ("ws", "distance", "names")


@dataclass
class Projection:
    ws: torch.Tensor  # (num_ws, w_dim)
    noise: dict[str, torch.Tensor]  # layer name -> (R, R)
    distance: float  # the final LPIPS
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 (R, R, 3), with record_every


def noise_layers(G: nn.Module) -> list[tuple[str, nn.Module]]:
    """The generator's layers with a noise input (their ``noise_const`` buffer), in order."""
    return [(name, m) for name, m in G.named_modules() if isinstance(
        getattr(m, "noise_const", None), torch.Tensor)]  # fmt: skip


@contextlib.contextmanager
def noise_inputs(G: nn.Module, maps: dict[str, torch.Tensor]) -> Iterator[None]:
    """Render with these noise maps (``noise_mode="const"``); the generator's own come back."""
    layers = dict(noise_layers(G))
    unknown = sorted(set(maps) - set(layers))
    if unknown:
        raise GantkError(f"noise maps for layers this generator lacks: {', '.join(unknown)}")
    saved = {name: layers[name].noise_const for name in maps}
    try:
        for name, value in maps.items():
            layers[name].noise_const = value
        yield
    finally:
        for name, value in saved.items():
            layers[name].noise_const = value


def w_statistics(G: nn.Module, seed: int = 123) -> tuple[torch.Tensor, float]:
    """The average w and the RMS distance of w from it, over W_SAMPLES random latents."""
    device = next(G.parameters()).device
    z = torch.randn(W_SAMPLES, G.config.z_dim, generator=torch.Generator().manual_seed(seed))
    if G.config.c_dim:
        raise GantkError(
            "gantk project takes unconditional generators (a conditional one's w depends on "
            "the class); give a model trained without --cond"
        )
    with torch.no_grad():
        w = G.mapping(z.to(device))[:, 0]
    w_avg = w.mean(dim=0)
    return w_avg, float((w - w_avg).square().sum(dim=1).mean().sqrt())


def noise_regularizer(maps: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's projector's noise regulariser: squared autocorrelations at one-pixel shifts
    in x and y, at every scale halving down to 8x8."""
    total = torch.zeros([], device=maps[0].device)
    for value in maps:
        noise = value[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def project(
    G: nn.Module,
    image: torch.Tensor,
    lpips_model: nn.Module,
    steps: int = 1000,
    lr: float = 0.1,
    wplus: bool = False,
    noise_weight: float = NOISE_REG_WEIGHT,
    seed: int = 0,
    record_every: int | None = None,
    stats: tuple[torch.Tensor, float] | None = None,
) -> Projection:
    """Project one uint8 image (3, H, W) into ``G`` (resized to its resolution)."""
    device = next(G.parameters()).device
    resolution = G.config.resolution
    target = resize_to(to_unit_range(image[None]), (resolution, resolution)).to(device)
    w_avg, w_std = stats if stats is not None else w_statistics(G)
    num_ws = G.num_ws
    gen = torch.Generator().manual_seed(seed)
    start = w_avg[None].repeat(num_ws if wplus else 1, 1)
    w = start.clone().requires_grad_(True)
    maps = {name: torch.randn(m.noise_const.shape, generator=gen).to(device).requires_grad_(True)
            for name, m in noise_layers(G)}  # fmt: skip
    frames: list[np.ndarray] = []

    def styles(latent: torch.Tensor) -> torch.Tensor:
        return latent[None].expand(1, num_ws, -1) if not wplus else latent[None]

    def render(step: int) -> torch.Tensor:
        scale = w_std * noise_strength(step, steps, "authors")
        noisy = w + torch.randn(w.shape, generator=gen).to(device) * scale
        with noise_inputs(G, maps):
            return G.synthesis(styles(noisy), noise_mode="const")

    def after_step(step: int, shown: torch.Tensor) -> None:
        with torch.no_grad():
            for value in maps.values():
                value -= value.mean()
                value *= value.square().mean().rsqrt()
        if record_every and (step % record_every == 0 or step == steps - 1):
            frames.append(_uint8(shown[0]))

    regularizer: Callable[[], torch.Tensor] | None = None
    if noise_weight > 0 and maps:
        regularizer = lambda: noise_weight * noise_regularizer(list(maps.values()))  # noqa: E731
    params = [w, *maps.values()] if noise_weight > 0 else [w]
    if noise_weight <= 0:  # noise inputs fixed: the generator's own
        maps = {}
    optimise(params, render, target, lpips_model, steps, lr, "authors", regularizer, after_step)
    final = styles(w.detach())[0]
    detached = {name: value.detach() for name, value in maps.items()}
    with torch.no_grad(), noise_inputs(G, detached):
        distance = float(lpips_distance(lpips_model, G.synthesis(final[None], "const"), target))
    return Projection(final, detached, distance, frames)


def _uint8(image: torch.Tensor) -> np.ndarray:
    """One (3, R, R) image in [-1, 1] as uint8 (R, R, 3), the way every gantk image is saved."""
    return to_uint8(image[None])[0].cpu().numpy()


@torch.no_grad()
def render_projection(G: nn.Module, ws: torch.Tensor, noise: dict[str, torch.Tensor]) -> np.ndarray:
    """The image of one projection: uint8 (R, R, 3)."""
    device = next(G.parameters()).device
    with noise_inputs(G, {k: v.to(device) for k, v in noise.items()}):
        return _uint8(G.synthesis(ws[None].to(device), noise_mode="const")[0])


def save_latents(path: object, names: list[str], projections: list[Projection]) -> None:
    """One .npz for ``gantk generate --latents``: ws (N, num_ws, w_dim), the noise maps as
    ``noise/LAYER`` (N, R, R), the final LPIPS and the images' names. ``path`` is an open file."""
    arrays: dict[str, np.ndarray] = {
        "ws": torch.stack([p.ws for p in projections]).float().cpu().numpy(),
        "distance": np.array([p.distance for p in projections]),
        "names": np.array(names),
    }
    for layer in projections[0].noise:
        arrays[f"noise/{layer}"] = torch.stack([p.noise[layer] for p in projections]).cpu().numpy()
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_latents(path: str, G: nn.Module) -> list[tuple[str, torch.Tensor, dict]]:
    """(name, ws, noise maps) of every projection in a ``gantk project`` latents file, checked
    against ``G``'s shapes."""
    from gantk.io.files import read_npz

    hint = "make one with `gantk project IMAGES --model G --out DIR`"
    data = read_npz(path, "latents file of `gantk project`", hint)
    try:
        ws = torch.from_numpy(np.asarray(data["ws"], dtype=np.float32))
        names = [str(n) for n in np.asarray(data["names"]).reshape(-1)]
        noise = {k[len("noise/") :]: torch.from_numpy(np.asarray(data[k], dtype=np.float32))
                 for k in data if k.startswith("noise/")}  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise GantkError(
            f"{path} is not a latents file of `gantk project` ({exc}); {hint}"
        ) from None
    if not torch.isfinite(ws).all() or not all(torch.isfinite(m).all() for m in noise.values()):
        raise GantkError(f"{path} holds NaN or infinite latents; project the images again")
    want = (G.num_ws, G.config.w_dim)
    if ws.ndim != 3 or tuple(ws.shape[1:]) != want or len(names) != len(ws):
        raise GantkError(
            f"{path} holds latents of shape {tuple(ws.shape)}, this generator takes (N, "
            f"{want[0]}, {want[1]}): project with the same generator"
        )
    layers = dict(noise_layers(G))
    for name, maps in noise.items():
        if name not in layers or tuple(maps.shape[1:]) != tuple(layers[name].noise_const.shape):
            raise GantkError(f"{path}: noise maps {name} do not fit this generator")
    return [(names[i], ws[i], {k: v[i] for k, v in noise.items()}) for i in range(len(ws))]


def render_latents(G: nn.Module, path: str, out: object, force: bool = False) -> int:
    """Render every projection of a latents file into the folder ``out`` as NAME.png."""
    from gantk.io.atomic import atomic_dir
    from gantk.io.images import save_image

    entries = load_latents(path, G)
    with atomic_dir(out, force) as tmp:  # type: ignore[arg-type]
        for name, ws, noise in entries:
            save_image(render_projection(G, ws, noise), tmp / f"{name}.png")
    return len(entries)
