"""The figures of the scalable-fingerprint paper for one trained run (thesis §6.4).

- bit accuracy of the decoder over samples with random z and random fingerprints;
- consistency: how alike two instances draw the same z (pixel PSNR, and LPIPS when its weights
  are at hand), i.e. how little a fingerprint costs in image content;
- capacity (Fig. 6.4): in a bag of random fingerprints, the largest share of bits two of them
  agree on, per bit length; fingerprints stay distinguishable while it is well below the
  verification threshold;
- closed-world attribution (Table 6.3): 1, 10, 100 … instances and real images; each image must
  be attributed to its instance (real images: to nobody);
- robustness (Fig. 6.5): bit accuracy under the standard perturbation sweep.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.robustness import image_sweep
from gantk.fingerprint.scalable.instances import fold_instance
from gantk.fingerprint.scalable.networks import BitDecoder, FingerprintedGenerator
from gantk.fingerprint.scalable.registry import Registry, default_min_distance
from gantk.fingerprint.stego import decode_bits


def _random(count: int, dim: int, seed: int, binary: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if binary:
        return torch.randint(0, 2, (count, dim), generator=gen).float()
    return torch.randn(count, dim, generator=gen)


@torch.no_grad()
def _render(G, z: torch.Tensor, c: torch.Tensor | None, batch: int = 64) -> list[torch.Tensor]:
    """Images (1, 3, H, W) in [-1, 1], quantised to 8 bits as a saved image would be."""
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(z), batch):
        zc = z[i : i + batch].to(device)
        img = G(zc, c[i : i + batch].to(device), noise_mode="const") if c is not None else G(
            zc, noise_mode="const"
        )  # fmt: skip
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        out += list(img.cpu().split(1))
    return out


def bit_accuracy(
    G: FingerprintedGenerator, decoder: BitDecoder, count: int, seed: int, fpr: float
) -> dict:
    z = _random(count, G.config.z_dim, seed)
    c = _random(count, G.config.fingerprint_bits, seed + 1, binary=True)
    decoded = decode_bits(decoder, _render(G, z, c))
    matches = (decoded == c.numpy().astype(np.uint8)).sum(axis=1)
    bits = G.config.fingerprint_bits
    limit = fpbits.threshold(bits, fpr)
    return {"images": count, "bits": bits, "mean_bit_accuracy": float(matches.mean() / bits),
            "min_bit_accuracy": float(matches.min() / bits), "threshold_matches": limit,
            "verified_rate": float((matches >= limit).mean())}  # fmt: skip


def consistency(
    G: FingerprintedGenerator, count: int, seed: int, lpips_model: torch.nn.Module | None
) -> dict:
    """Two instances (random fingerprints) on the same latents."""
    z = _random(count, G.config.z_dim, seed)
    a = torch.cat(_render(G, z, _random(count, G.config.fingerprint_bits, seed + 1, True)))
    b = torch.cat(_render(G, z, _random(count, G.config.fingerprint_bits, seed + 2, True)))
    mse = (a - b).square().flatten(1).mean(1)
    out = {"pairs": count, "psnr_db": float((10 * torch.log10(4 / mse.clamp_min(1e-12))).mean())}
    if lpips_model is not None:
        from gantk.metrics.lpips_metric import lpips_distance

        device = next(lpips_model.parameters()).device
        out["lpips"] = float(lpips_distance(lpips_model, a.to(device), b.to(device)).mean())
    return out


def capacity(bit_lengths: list[int], bag: int, seed: int) -> list[dict]:
    """Largest pairwise bit agreement among ``bag`` random fingerprints, per bit length."""
    rng = np.random.default_rng(seed)
    rows = []
    for length in bit_lengths:
        codes = rng.integers(0, 2, (bag, length)).astype(np.float32) * 2 - 1
        worst = -length
        for start in range(0, bag, 1024):  # +-1 codes: agreement = (L + dot) / 2
            dots = codes[start : start + 1024] @ codes.T
            idx = np.arange(start, min(start + 1024, bag))
            dots[idx - start, idx] = -length  # not with itself
            worst = max(worst, int(dots.max()))
        rows.append({"bits": length, "bag": bag, "max_overlap": (length + worst) / 2 / length})
    return rows


def closed_world(
    G: FingerprintedGenerator,
    decoder: BitDecoder,
    real: list[torch.Tensor],
    counts: list[int],
    per_instance: int,
    fpr: float,
    seed: int,
    advance: Callable[[int], None] | None = None,
) -> list[dict]:
    """Attribution among ``k`` instances plus real images, for each k in ``counts``."""
    import tempfile
    from pathlib import Path

    bits = G.config.fingerprint_bits
    rows = []
    for k in counts:
        rng = np.random.default_rng(seed + k)
        with tempfile.TemporaryDirectory() as tmp:  # the registry stays in memory
            registry = Registry.create(Path(tmp) / "r.h5", bits, "evaluation")
            truth, images = [], []
            for i in range(k):
                name = f"u{i}"
                code = registry.draw(name, rng, default_min_distance(bits))
                registry.add(name, code)
                instance = fold_instance(G, torch.as_tensor(code, dtype=torch.float32))
                z = _random(per_instance, G.config.z_dim, seed + 1000 * (i + 1))
                images += _render(instance, z, None)
                truth += [name] * per_instance
                if advance:
                    advance(1)
            images += real
            truth += [None] * len(real)
            found = registry.identify(decode_bits(decoder, images), fpr)
        predicted = [f["name"] for f in found]
        right = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
        fake = np.array([t is not None for t in truth])
        rows.append({"instances": k, "images": len(truth), "accuracy": float(right.mean()),
                     "fake_accuracy": float(right[fake].mean()),
                     "real_accuracy": float(right[~fake].mean()) if (~fake).any() else None,
                     "threshold_matches": found[0]["threshold"]})  # fmt: skip
    return rows


def robustness(
    G: FingerprintedGenerator,
    decoder: BitDecoder,
    names: list[str],
    count: int,
    fpr: float,
    seed: int,
    advance: Callable[[int], None] | None = None,
) -> list[dict]:
    if not names:
        return []
    z = _random(count, G.config.z_dim, seed)
    c = _random(count, G.config.fingerprint_bits, seed + 1, binary=True)
    expected = c.numpy().astype(np.uint8)
    return image_sweep(_render(G, z, c), expected, decoder, names, fpr, seed, advance)
