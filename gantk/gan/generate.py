"""Loading generators, and sampling them into image files, grids and latent walks.

Image ``i`` of a run with ``--seed S`` comes from the latent drawn with seed S + i, so any one
image can be regenerated alone, whatever ``-n`` and the batch size were. Loading a generator
imports no trainer: a checkpoint holds a plain generator (``gan-generator``) or a fingerprinted
instance (``gan-instance``, :mod:`gantk.gan.folded`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.gan.folded import FINGERPRINTED_KIND, INSTANCE_KIND, GeneratorInstance
from gantk.gan.networks import GENERATOR_KIND, Generator, NetworkConfig, with_resampling_of
from gantk.gan.sampling import (
    LATENTS_KEY,
    NUMPY_LATENTS,
    TORCH_LATENTS,
    GeneratorSampler,
    latents_for,
)
from gantk.io.atomic import atomic_dir, atomic_file
from gantk.io.checkpoint import load_checkpoint
from gantk.io.config_schema import build_matching, checked_config, section
from gantk.io.images import make_grid, save_gif, save_image, to_uint8


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Rebuild a generator from a ``gan-generator`` checkpoint (G_ema weights) or a
    fingerprinted instance (``gan-instance``, from ``gantk fingerprint-embed``)."""
    ckpt = load_checkpoint(path)
    if ckpt.kind == FINGERPRINTED_KIND:
        raise GantkError(
            f"{path} is a fingerprinted training run (generator + decoder); make per-user "
            f"generators with `gantk fingerprint-embed {path} --users NAME --registry REG.h5 "
            "--out models/` and generate from those"
        )
    if ckpt.kind not in (GENERATOR_KIND, INSTANCE_KIND):
        raise GantkError(
            f"{path} holds a {ckpt.kind}, not a {GENERATOR_KIND} or {INSTANCE_KIND}; give a "
            "generator checkpoint (e.g. RUN/latest.safetensors)"
        )
    config = checked_config(NetworkConfig, section(ckpt.config, "network"), path, "generator")
    config = with_resampling_of(config, ckpt.tensors)
    network = GeneratorInstance if ckpt.kind == INSTANCE_KIND else Generator
    G = build_matching(lambda: network(config), ckpt.tensors, path, "generator")
    convention = ckpt.metadata.get(LATENTS_KEY, TORCH_LATENTS)
    if convention not in (TORCH_LATENTS, NUMPY_LATENTS):
        raise GantkError(f"{path} asks for latents drawn as {convention!r}, unknown to gantk")
    G.latent_convention = convention
    return G.to(device).eval().requires_grad_(False)


def open_sampler(
    path: str | Path, device: str | torch.device = "cpu", truncation: float = 1.0
) -> GeneratorSampler:
    """A generator checkpoint as the metrics sample it (:mod:`gantk.gan.sampling`)."""
    return GeneratorSampler(load_generator(path, device), truncation)


MAX_SEED = 2**62  # torch seeds are 64-bit; keep seed + offsets well inside


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10' -> [0, 1, 2, 3, 7, 10]. Each part is a seed or a range with both ends; the
    number of seeds is bounded (:func:`gantk.io.limits.check_count`) before any list is made."""
    from gantk.io.limits import check_count

    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            if dash and lo.strip().isdigit() and not hi.strip():
                raise GantkError(
                    f"--seeds range {part.strip()!r} has no end; write {lo}-N"
                ) from None
            raise GantkError(f"--seeds {text!r}: write numbers and ranges like 0-99,120") from None
        if last < first:
            raise GantkError(f"--seeds range {part.strip()!r} runs backwards; write {hi}-{lo}")
        if last > MAX_SEED:
            raise GantkError(f"--seeds: seeds go up to {MAX_SEED}")
        ranges.append((first, last))
    total = sum(last - first + 1 for first, last in ranges)
    check_count(f"--seeds {text}", total, "generate the seeds in several commands")
    return [seed for first, last in ranges for seed in range(first, last + 1)]


def class_index(G: torch.nn.Module, label: str | int | None) -> int | None:
    """``--class`` as an index: a class name of the checkpoint, or a number 0..c_dim-1."""
    if label is None or isinstance(label, int):
        return label
    names = list(G.config.class_names)
    if label in names:
        return names.index(label)
    if label.isdigit():
        return int(label)
    known = f"one of {', '.join(names)} or " if names else ""
    raise GantkError(f"--class {label!r} is not a class of this generator: give {known}an index")


def class_vectors(G: torch.nn.Module, label: int | None, count: int) -> torch.Tensor | None:
    """One-hot class vectors (count, c_dim) of ``label`` for a class-conditional ``G``; None for
    an unconditional one (where a label is an error, as a missing one is for conditional G)."""
    classes = G.config.c_dim
    if label is None:
        return None  # a conditional G refuses to run without one, with a message saying so
    if not classes:
        raise GantkError("--class is for class-conditional models; this generator has no classes")
    if not 0 <= label < classes:
        raise GantkError(f"--class {label}: this generator has {classes} classes, 0..{classes - 1}")
    return torch.nn.functional.one_hot(torch.full((count,), label), classes).float()


@torch.no_grad()
def render(
    G: Generator,
    z: torch.Tensor,
    psi: float,
    noise_mode: str = "const",
    batch_size: int = 32,
    label: int | None = None,
) -> Iterator[np.ndarray]:
    """uint8 images (H, W, 3), one by one, for the latents ``z`` (of class ``label``)."""
    device = next(G.parameters()).device
    for chunk in z.split(batch_size):
        c = class_vectors(G, label, len(chunk))
        c = None if c is None else c.to(device)
        yield from to_uint8(G(chunk.to(device), psi=psi, noise_mode=noise_mode, c=c)).cpu().numpy()


def write_images(
    G: Generator,
    seeds: Sequence[int],
    out: str | Path,
    psi: float = 1.0,
    batch_size: int = 32,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
    label: int | None = None,
) -> list[str]:
    """One PNG per seed (``seed000123.png``) in the new folder ``out``."""
    names = []
    with atomic_dir(out, force) as tmp:
        z = latents_for(seeds, G)
        images = render(G, z, psi, batch_size=batch_size, label=label)
        for seed, img in zip(seeds, images, strict=True):
            name = f"seed{seed:06d}.png"
            save_image(img, tmp / name)
            names.append(name)
            if advance is not None:
                advance(1)
    return names


def write_grid(
    G: Generator,
    seeds: Sequence[int],
    out: str | Path,
    cols: int,
    psi: float = 1.0,
    batch_size: int = 32,
    force: bool = False,
    label: int | None = None,
) -> None:
    images = list(render(G, latents_for(seeds, G), psi, batch_size=batch_size, label=label))
    with atomic_file(out, force) as tmp:
        save_image(make_grid(images, cols, padding=0), tmp, named_as=out)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: keeps Gaussian latents at a typical norm along the path."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def walk_latents(keyframes: torch.Tensor, steps: int) -> torch.Tensor:
    """A closed loop through the keyframes, ``steps`` frames from each to the next."""
    frames = []
    for i in range(len(keyframes)):
        a, b = keyframes[i], keyframes[(i + 1) % len(keyframes)]
        frames += [slerp(a, b, s / steps) for s in range(steps)]
    return torch.stack(frames)


def write_interpolation(
    G: Generator,
    seeds: Sequence[int],
    steps: int,
    out: str | Path,
    psi: float = 1.0,
    fps: int = 24,
    force: bool = False,
    label: int | None = None,
) -> int:
    """A latent walk through the seeds' latents: an animated GIF if ``out`` ends in .gif,
    otherwise a folder of numbered PNG frames. Returns the number of frames."""
    if len(seeds) < 2:
        raise GantkError(
            f"a latent walk needs at least 2 keyframes, got {len(seeds)}; give "
            "more --seeds or a larger --interpolate"
        )
    if steps < 1:
        raise GantkError("--steps must be at least 1")
    frames = list(render(G, walk_latents(latents_for(seeds, G), steps), psi, label=label))
    if str(out).lower().endswith(".gif"):
        with atomic_file(out, force) as tmp:
            save_gif(frames, tmp, fps)
    else:
        with atomic_dir(out, force) as tmp:
            for i, frame in enumerate(frames):
                save_image(frame, tmp / f"frame{i:05d}.png")
    return len(frames)
