"""The bundled models behind the one-liners: they load, have the shapes their commands expect,
and meet (weaker, fast versions of) the figures docs/models.md reports, on built-in images they
never saw: builtin:photos' china and flower for the fingerprint (neither model trained on them),
builtin:textures' held-out bottom rows for the Texture Mixer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.stego import decode_bits, embed_any_size
from gantk.fingerprint.train_stego import load_stego
from gantk.io.bundled import resolve_model_path
from gantk.io.datasets import open_dataset
from gantk.io.images import fit_image
from gantk.metrics.texture import periodic_peak, sample_pairs
from gantk.texture.data import load_texture_sources
from gantk.texture.mixing import Mixer
from gantk.texture.train import load_texture_mixer

pytestmark = pytest.mark.usefixtures("one_thread")

# What the shipped builtin:stego-100 reaches on the images below, with a margin: raise these
# when a better model ships (docs/models.md has the full held-out figures).
MIN_PSNR_DB = 25.0
MIN_BIT_ACCURACY = 0.90


def _stego():
    return load_stego(resolve_model_path("builtin:stego-100", "stego model", "make models"))


def test_bundled_stego_loads_with_the_shapes_embed_and_decode_expect() -> None:
    encoder, decoder = _stego()
    assert encoder.config.bits == decoder.config.bits == 100
    r = encoder.config.resolution
    assert r >= 32 and r & (r - 1) == 0
    assert all(p.dtype == torch.float32 for p in encoder.parameters())  # fp16 file, fp32 model
    code = torch.randint(0, 2, (2, 100), generator=torch.Generator().manual_seed(0)).float()
    for shape in ((2, 3, 50, 70), (2, 3, 200, 300)):  # any size, any aspect
        images = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            marked = embed_any_size(encoder, images, code)
        assert marked.shape == images.shape and marked.abs().max() <= 1
        decoded = decode_bits(decoder, [marked[i : i + 1] for i in range(2)])
        assert decoded.shape == (2, 100) and set(np.unique(decoded)) <= {0, 1}


@pytest.mark.parametrize("size", [64, 128])
def test_bundled_stego_on_photos_it_never_saw(size: int) -> None:
    encoder, decoder = _stego()
    photos = open_dataset("builtin:photos?sources=china,flower&n=16&seed=3", resolution=256)
    rng = np.random.default_rng(size)
    originals = [fit_image(photos.image(i), size) for i in range(len(photos))]
    codes = rng.integers(0, 2, (len(originals), 100), dtype=np.uint8)
    marked, psnrs = [], []
    with torch.no_grad():
        for rgb, code in zip(originals, codes, strict=True):
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
            y = embed_any_size(encoder, x, torch.from_numpy(code[None]).float())
            saved = ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            mse = np.mean((saved.astype(np.float64) - rgb) ** 2)
            psnrs.append(10 * np.log10(255**2 / mse))
            marked.append(torch.from_numpy(saved).permute(2, 0, 1)[None].float() / 127.5 - 1)
    matches = (decode_bits(decoder, marked) == codes).sum(axis=1)
    assert np.mean(psnrs) >= MIN_PSNR_DB
    assert matches.mean() / 100 >= MIN_BIT_ACCURACY
    assert (matches >= fpbits.threshold(100, 1e-6)).all()  # every image detected at FPR 1e-6
    clean = decode_bits(decoder, [torch.from_numpy(o).permute(2, 0, 1)[None].float() / 127.5 - 1
                                  for o in originals])  # fmt: skip
    assert ((clean == codes).sum(axis=1) < fpbits.threshold(100, 1e-6)).all()  # no false alarm


def _texture_mixer():
    return load_texture_mixer("builtin:texture-mixer")


def test_bundled_texture_mixer_loads_and_makes_strips_of_the_asked_size() -> None:
    model = _texture_mixer()
    r = model.config.resolution
    assert r >= 32 and r // model.config.latent_size == 4
    sources = load_texture_sources("builtin:textures", "test")
    pairs, _ = sample_pairs(sources, r, 1, seed=0, split="test")
    left, right = pairs[0]
    strip = Mixer(model, shuffle=True).strip([left, right], 4 * r, seed=0)
    assert strip.shape == (1, 3, r, 4 * r) and strip.abs().max() <= 1


@pytest.mark.xfail(
    strict=True,
    reason="the shipped v1 model draws lines every latent cell (grid 35 vs 3.5 of the textures "
    "on held-out texture packs); texture-mixer v2 is in training (issue 16, docs/models.md)",
)
def test_bundled_texture_mixer_strips_have_no_grid_at_the_cell_period() -> None:
    model = _texture_mixer()
    r = model.config.resolution
    period = r // model.config.latent_size
    sources = load_texture_sources("builtin:textures", "test")
    pairs, real = sample_pairs(sources, r, 4, seed=1, split="test")
    mixer = Mixer(model, shuffle=True)
    grids = []
    with torch.no_grad():
        for seed, (left, right) in enumerate(pairs):
            strip = mixer.strip([left, right], 8 * r, seed=seed)
            grids.append(periodic_peak(strip[..., 2 * r : 6 * r], period))
    textures = np.mean([periodic_peak(c, period) for c in real])
    # Beyond what the textures themselves have at that period, with room for noise.
    assert np.mean(grids) <= 2 * max(textures, 2.0)


def test_bundled_texture_classifiers_fit_the_mixer_and_tell_real_crops_from_faults() -> None:
    from gantk.io.checkpoint import read_header
    from gantk.metrics.texture_classifiers import (
        BUILTIN,
        CLASSIFIERS,
        ExampleSource,
        load_texture_classifiers,
    )

    path = resolve_model_path(BUILTIN, "texture classifiers", "make models")
    dtypes = {v["dtype"] for k, v in read_header(path).items() if k != "__metadata__"}
    assert dtypes == {"F16"} and path.stat().st_size < 1.5e6  # shipped small
    classifiers, metadata = load_texture_classifiers(BUILTIN)
    size = _texture_mixer().config.resolution
    assert classifiers.config.resolution == size  # evaluate texture's default fits the default
    assert metadata["gantk.data"].endswith("texture-train")
    # On builtin:textures' held-out rows (textures they never saw): seams and repetitions score
    # well above real crops (docs/models.md: 0.82 / 0.96 accuracy on texture-heldout).
    examples = ExampleSource(load_texture_sources("builtin:textures", "test"), size)
    rng = np.random.default_rng(0)
    for name in CLASSIFIERS:
        crops, labels = examples.batch(name, 32, rng)
        probs = classifiers.probability(name, crops)
        real, faulty = float(probs[labels == 0].mean()), float(probs[labels == 1].mean())
        assert real < 0.35 and faulty > real + 0.25, (name, real, faulty)
