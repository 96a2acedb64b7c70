"""Inclusive GAN: IMLE-GAN for data and minority coverage (Yu et al., ECCV 2020; thesis ch.7).

On top of the adversarial game, every real image (or every image of a chosen minority subgroup)
is matched to its nearest generated image among a fixed pool of ``m`` latents, in a feature
space; the generator is then pulled towards reconstructing it from the (slightly perturbed)
matched latent, and, with ``imle_interp``, to make interpolations between two matched latents
resemble both endpoints in proportion (Eq. 7.5-7.10). Matching is redone every ``staleness``
epochs, the interval doubling after each refresh (10, 20, 40, … epochs), because the generator
changes slowly once it has learned to cover the data.

Feature spaces: ``pixel`` (images average-pooled to at most 32×32), ``d`` (the discriminator's
last hidden layer, recomputed as D learns), ``inception`` (FID Inception pool features) and
``lpips`` (LPIPS features scaled so that their squared L2 distance is the LPIPS distance);
``auto`` takes LPIPS, the authors' best, when its weights are on this machine, else D features.
Exact nearest-neighbour search runs batched on the training device; the run log records how
long each refresh takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.gan.config import TrainConfig
from gantk.gan.trainer import Trainer, register

FEATURE_SPACES = ("auto", "pixel", "d", "inception", "lpips")
INTERP_SHARE = 0.4  # the authors' interpolation weight, as a share of the reconstruction weight


def check_config(config: TrainConfig) -> None:
    """Settings IMLE-GAN refuses, with what to do instead."""
    if config.imle_minority and not config.imle:
        raise GantkError("--minority restricts IMLE's reconstruction; add --imle")
    if config.network.fingerprint_bits:
        raise GantkError("--imle and --fingerprint-bits train different generators; pick one")
    if config.imle_features not in FEATURE_SPACES:
        raise GantkError(
            f"--imle-features {config.imle_features!r}: choose {', '.join(FEATURE_SPACES)}"
        )
    if (
        config.imle_features == "d"
        and config.network.d_attn
        and "reference" in config.network.d_attn
    ):
        raise GantkError(
            "--imle-features d needs one image per discriminator pass, which reference "
            "attention (--d-attn reference@…) does not allow; use pixel or lpips features"
        )
    if config.imle_weight < 0 or config.imle_sigma < 0 or config.imle_staleness <= 0:
        raise GantkError("--imle-weight and --imle-sigma must be 0 or more, --imle-staleness > 0")


# --- feature spaces ----------------------------------------------------------------------------


def pixel_features(x: torch.Tensor) -> torch.Tensor:
    side = x.shape[-1]
    if side > 32:
        x = F.avg_pool2d(x, side // 32)
    return x.flatten(1)


class LpipsFeatures(nn.Module):
    """φ(x) with ||φ(a) - φ(b)||² = LPIPS(a, b): per layer, the channel-normalised activations
    times sqrt(the learned channel weights), over sqrt(the layer's pixel count)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from gantk.metrics.lpips_metric import _ensure_min_size

        m = self.model
        outs = m.net.forward(m.scaling_layer(_ensure_min_size(x)))
        parts = []
        for k, out in enumerate(outs):
            normed = out / (out.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            weight = m.lins[k].model[-1].weight.reshape(1, -1, 1, 1).clamp_min(0)
            h, w = normed.shape[-2:]
            parts.append((normed * weight.sqrt() / (h * w) ** 0.5).flatten(1))
        return torch.cat(parts, dim=1)


def resolve_features(name: str, device: torch.device, log: Callable[[str], None]):
    """The feature function for ``name`` (``auto`` resolved and said), and the resolved name."""
    if name == "auto":
        from gantk.io.weights import find_weights
        from gantk.metrics.lpips_metric import TRUNK_WEIGHTS

        try:
            find_weights(TRUNK_WEIGHTS["alex"], None)
            name = "lpips"
        except GantkError:
            name = "d"
        why = "AlexNet weights found" if name == "lpips" else "no LPIPS weights on this machine"
        log(f"IMLE features: {name} ({why})")
    if name == "pixel":
        return pixel_features, name
    if name == "lpips":
        from gantk.metrics.lpips_metric import load_lpips

        return LpipsFeatures(load_lpips("alex", None, device)).to(device), name
    if name == "inception":
        from gantk.metrics.features import load_feature_net

        net = load_feature_net("inception", device=device)
        # FeatureNet's own call is gradient-free (it serves metrics); IMLE differentiates.
        return (lambda x: net.module(net.prepare((x + 1) * 127.5)).float().flatten(1)), name
    return None, "d"  # the trainer's own discriminator


# --- the trainer -------------------------------------------------------------------------------


def minority_indices(dataset, spec: str | None, data: str) -> np.ndarray:
    """Indices of the images IMLE reconstructs: all, or the minority subgroup of ``spec``
    (``CSV:ATTR[,ATTR…]`` with images having any of the attributes, or ``builtin`` for the
    rare attribute of a built-in dataset's ``minority=`` option)."""
    if not spec:
        return np.arange(len(dataset))
    if spec == "builtin":
        from gantk.io.builtin import parse_spec

        if not data.startswith("builtin:"):
            raise GantkError("--minority builtin needs a builtin: dataset with minority=ATTR")
        _, options = parse_spec(data)
        if "minority" not in options:
            raise GantkError(
                f"{data} has no minority= option; use e.g. builtin:shapes?minority=triangle:0.02"
            )
        names = [options["minority"].partition(":")[0]]
    else:
        csv_path, _, attrs = spec.rpartition(":")
        if not csv_path or not attrs:
            raise GantkError(
                f"--minority {spec!r}: write CSV:ATTR[,ATTR…] (e.g. attrs.csv:Eyeglasses) "
                "or builtin"
            )
        from gantk.io.datasets import attach_attributes

        attach_attributes(dataset, csv_path)
        names = [a.strip() for a in attrs.split(",") if a.strip()]
    from gantk.io.datasets import attribute_rows

    return attribute_rows(dataset, names)


@register
class ImleTrainer(Trainer):
    """The StyleGAN2 trainer plus IMLE's reconstruction (and interpolation) loss."""

    @classmethod
    def uses(cls, config: TrainConfig) -> bool:
        return bool(config.imle or config.imle_minority)

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        check_config(config)

    def build_networks(self) -> None:
        super().build_networks()
        cfg = self.cfg
        self.matched_images = minority_indices(self.dataset, cfg.imle_minority, cfg.data)
        count = len(self.matched_images)
        self.pool_size = 10 * count if cfg.imle_pool is None else cfg.imle_pool
        if self.pool_size < count:
            raise GantkError(
                f"--imle-pool {self.pool_size} is smaller than the {count} images to match; "
                f"use at least {count} (the authors used 10x)"
            )
        # The pool is sampled once and kept (regenerated images, same latents), as the authors.
        gen = torch.Generator().manual_seed(cfg.seed + 4242)
        self.pool = torch.randn(self.pool_size, cfg.network.z_dim, generator=gen)
        self.features, self.feature_space = resolve_features(cfg.imle_features, self.device,
                                                             self.log)  # fmt: skip
        self.matched = torch.zeros(count, dtype=torch.long)
        self.next_refresh = 0.0  # in epochs
        self.staleness = cfg.imle_staleness
        self.real_features: torch.Tensor | None = None

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {**super().state(), "imle_matched": self.matched.clone(),
                "imle_schedule": torch.tensor([self.next_refresh, self.staleness],
                                              dtype=torch.float64)}  # fmt: skip

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.matched = state["imle_matched"].long()
        self.next_refresh, self.staleness = (float(v) for v in state["imle_schedule"])
        self.real_features = None  # recomputed on demand

    # -- matching -------------------------------------------------------------------------
    def _feat(self, x: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            f = self.D(x, return_features=True)[1].float()
        else:
            f = self.features(x).float()
        # LPIPS features are scaled so that the squared distance is LPIPS itself (0.1-0.7 for
        # images that differ); the other spaces are divided by sqrt(dim), making the squared
        # distance a mean over dimensions of that order, so the authors' weight 2.5 fits all.
        return f if self.feature_space == "lpips" else f / f.shape[1] ** 0.5

    def _real_batch(self, indices: torch.Tensor) -> torch.Tensor:
        images = torch.stack([self.dataset[int(self.matched_images[i])][0] for i in indices])
        return images.to(self.device).float() / 127.5 - 1

    @torch.no_grad()
    def _all_real_features(self) -> torch.Tensor:
        chunks = []
        for start in range(0, len(self.matched_images), 256):
            idx = torch.arange(start, min(start + 256, len(self.matched_images)))
            chunks.append(self._feat(self._real_batch(idx)))
        return torch.cat(chunks)

    @torch.no_grad()
    def refresh(self) -> float:
        """Match every image to its nearest pool latent; returns the seconds it took."""
        start = time.perf_counter()
        if self.real_features is None or self.features is None:  # D features move with D
            self.real_features = self._all_real_features()
        real = self.real_features
        best = torch.full((len(real),), float("inf"), device=real.device)
        arg = torch.zeros(len(real), dtype=torch.long, device=real.device)
        for begin in range(0, self.pool_size, 256):
            z = self.pool[begin : begin + 256].to(self.device)
            fake = self._feat(self.G(z, noise_mode="const"))
            dist = torch.cdist(real, fake).square()  # (images, chunk)
            value, index = dist.min(dim=1)
            better = value < best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + begin, arg)
        self.matched = arg.cpu()
        seconds = time.perf_counter() - start
        self.log(
            f"IMLE refresh at epoch {self.epoch:.2f}: {len(real)} images matched against "
            f"{self.pool_size} latents in {seconds:.1f} s ({self.feature_space} features); "
            f"next in {self.staleness:g} epochs"
        )
        return seconds

    @property
    def epoch(self) -> float:
        return self.nimg / len(self.dataset)

    # -- the loss -------------------------------------------------------------------------
    def _perturbed(self, z: torch.Tensor) -> torch.Tensor:
        """Slerp a small step (sigma) from each matched latent towards fresh noise."""
        noise = torch.randn(z.shape, generator=self.latent_gen)
        t = self.cfg.imle_sigma
        cos = F.cosine_similarity(z, noise, dim=1).clamp(-1 + 1e-7, 1 - 1e-7)
        omega = torch.acos(cos)[:, None]
        return (torch.sin((1 - t) * omega) * z + torch.sin(t * omega) * noise) / torch.sin(omega)

    def extra_generator_loss(self, n: int, stats: dict[str, float]) -> torch.Tensor | None:
        cfg = self.cfg
        refresh_seconds = None
        if self.epoch >= self.next_refresh:
            refresh_seconds = self.refresh()
            self.next_refresh = self.epoch + self.staleness
            self.staleness *= 2
        # Drawn for the global batch, then this process's shard (as the latents are).
        count, size = len(self.matched_images), cfg.batch_size
        shard = slice(self.dist.rank * n, (self.dist.rank + 1) * n)
        i = torch.randint(count, (size,), generator=self.latent_gen)[shard]
        j = torch.randint(count, (size,), generator=self.latent_gen)[shard]
        alpha = torch.rand(size, 1, generator=self.latent_gen)[shard].to(self.device)
        zi = self._perturbed(self.pool[self.matched[i]]).to(self.device)
        zj = self._perturbed(self.pool[self.matched[j]]).to(self.device)
        with torch.no_grad():
            if self.real_features is not None and self.features is not None:
                fi, fj = (
                    self.real_features[i.to(self.device)],
                    self.real_features[j.to(self.device)],
                )
            else:
                fi, fj = self._feat(self._real_batch(i)), self._feat(self._real_batch(j))
        with self._autocast():
            gi, gj = self._feat(self.G(zi)), self._feat(self.G(zj))
            rec = 0.5 * ((gi - fi).square().sum(1) + (gj - fj).square().sum(1)).mean()
            loss = cfg.imle_weight * rec
            stats["imle_rec"] = float(self.dist.mean(rec))
            if cfg.imle_interp:
                gij = self._feat(self.G(alpha * zi + (1 - alpha) * zj))
                a = alpha[:, 0]
                itp = a * (gij - fi).square().sum(1) + (1 - a) * (gij - fj).square().sum(1)
                loss = loss + INTERP_SHARE * cfg.imle_weight * itp.mean()
                stats["imle_itp"] = float(self.dist.mean(itp.mean()))
        if refresh_seconds is not None:
            stats["imle_refresh_sec"] = refresh_seconds
        return loss
