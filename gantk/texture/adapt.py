"""Adapting a trained Texture Mixer to the textures a user brings (``texture-mix --adapt N``).

A model trained on a few thousand textures reconstructs textures it never saw only roughly, and
everything it mixes inherits that. Before mixing, N steps of fine-tuning on crops of the given
textures teach the encoders and the generator those very textures: the training objective of
``gantk train texture`` without its adversarial terms (the critics are not shipped), i.e.

- reconstruction: L1 (λ1) and Gram (λ2) losses of each texture's crops (eqs. 3.4-3.5);
- interpolation: a random crop of two of the textures' 3x3 tiled, shuffled, α-blended latents
  (or, with ``mix`` select, the regions texture-mix will draw), its Gram matrices α-weighted
  between the two (eq. 3.8),

with the trainer's Adam settings at a fine-tuning learning rate.

What it buys, measured (docs/models.md; 8 held-out pairs, whole textures as texture-mix reads
them, the v2 WIP): 50 steps bring the ends nearer the textures (SPD 0.0122 -> 0.0111) but
smooth the middle (sharpness 0.79 -> 0.37, CGD 1.06 -> 1.17), with the generator fine-tuned or
only the encoders alike: without the critics, nothing keeps the shuffled, mixed latents
decoding to detail. It stays an option, off by default. Crops come from the textures as
texture-mix reads them (scaled by ``--scale``), mirrored and rotated, never colour-matched to
another texture (the user's colours are the point). The shipped model is left untouched: a copy
is adapted. Deterministic for a seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gantk.errors import GantkError
from gantk.nn.precision import autocast, resolve_precision
from gantk.texture.data import TextureSampler, TextureSource, read_texture_image, window_side
from gantk.texture.gram import GramNet, gram_distance, gram_matrices
from gantk.texture.networks import TextureMixer
from gantk.texture.train import REC_TERMS, TextureTrainConfig, interpolation_crop

ADAPT_LR = 2e-4  # a tenth of the training rate: refine the model, do not retrain it
MAX_STEPS = 100_000
# Crops per texture and step: the batch is this times the number of textures.
CROPS_PER_TEXTURE = 2


def at_model_scale(spec: str, size: int, scale: float) -> Tensor:
    """The whole texture resized the way texture-mix resizes its centre square (so ``size``
    pixels of the result are the window the model reads), as (1, 3, H, W) in [-1, 1]; never
    smaller than ``size`` on a side."""
    image, _ = read_texture_image(spec)
    factor = size / window_side(image, size, scale)
    height, width = image.shape[:2]
    new = (max(size, round(width * factor)), max(size, round(height * factor)))
    if new != (width, height):
        image = np.asarray(Image.fromarray(image).resize(new, Image.Resampling.LANCZOS))
    # A copy: a resized image is read-only (Pillow), which torch warns about.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def texture_sources(textures: list[Tensor]) -> list[TextureSource]:
    """(1, 3, H, W) images in [-1, 1] as sampler sources (uint8)."""
    out = []
    for i, tex in enumerate(textures):
        arr = ((tex[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        out.append(TextureSource(f"texture{i}", arr))
    return out


def adapt(
    model: TextureMixer,
    textures: list[Tensor],
    steps: int,
    gram: GramNet,
    seed: int = 0,
    precision: str = "auto",
    advance: Callable[[int], None] | None = None,
    mix: str = "blend",
) -> TextureMixer:
    """A copy of ``model`` fine-tuned for ``steps`` on crops of ``textures`` ((1, 3, H, W) in
    [-1, 1] at the scale the model sees them, each at least the model's size)."""
    if not 0 <= steps <= MAX_STEPS:
        raise GantkError(f"--adapt must be in 0..{MAX_STEPS} steps, got {steps}")
    if steps == 0:
        return model
    device = next(model.parameters()).device
    resolution = model.config.resolution
    # Mirroring and rotation, and a little rescaling; no colour matching between textures.
    sampler = TextureSampler(
        texture_sources(textures), resolution, augment=True, max_downscale=1.5, histogram_match=0
    )
    weights = TextureTrainConfig(data="")  # the paper's loss weights, as training uses them
    resolved = resolve_precision(precision, device)
    tuned = copy.deepcopy(model).train().requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=ADAPT_LR, betas=(0.0, 0.99))
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    count = CROPS_PER_TEXTURE * len(textures)
    for _ in range(steps):
        crops = sampler.sample(count, rng).to(device)
        # Pair every crop with one of another texture where there is one (crops come out in
        # random texture order, so a shifted batch pairs different textures most of the time).
        partner = torch.roll(crops, 1, dims=0)
        with autocast(resolved, device):
            recon = tuned(crops).float()
            mixed, alpha = interpolation_crop(tuned, crops, partner, generator, mix=mix)
            with torch.no_grad():
                real = gram_matrices(gram, torch.cat([crops, partner]))
            grams_mix = gram_matrices(gram, mixed)
            gram_rec = gram_distance(gram_matrices(gram, recon), [g[:count] for g in real])
            gram_itp = alpha * gram_distance(grams_mix, [g[:count] for g in real]) + (
                1 - alpha
            ) * gram_distance(grams_mix, [g[count:] for g in real])
        l1 = (recon - crops).abs().mean()
        loss = weights.l1_weight * REC_TERMS * l1 + weights.gram_weight * (
            REC_TERMS * gram_rec.mean() + gram_itp.mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if advance:
            advance(1)
    return tuned.eval().requires_grad_(False)
