"""Training the stego pair for the native-resolution design (``gantk train stego --design native``).

What is trained is what ships (gantk.fingerprint.native): each training image is a canvas of
``canvas`` x ``canvas`` tiles; the encoder makes its residual over the whole canvas with the
fingerprint's map repeated every tile; the residual is JND-attenuated, band-passed and scaled to
a fixed PSNR, the *budget*; the decoder reads every tile of the perturbed canvas and the loss is
the binary cross-entropy of the tiles' mean logits. So the energy of the change is not something
the networks can trade against bits: they can only learn to spend a fixed energy well.

The budget finds itself (``target_acc``): once the bits decode (first accuracy above 0.9), it
rises (a fainter residual) while the running accuracy on perturbed canvases is above the target
and falls while it is below. It is written into the model (``budget_db``): strength 1 at embed
time gives that PSNR.

Two more loss terms shape where the fixed energy goes: ``visibility_weight`` times the mean
square of how far the change exceeds the JND at each pixel (zero while it stays below the
threshold everywhere), so the encoder spreads its energy rather than spiking where a viewer would
see it; and ``ssim_weight`` times 1 - SSIM of the luminance, so it moves energy out of smooth
areas, where SSIM (and a viewer) notices a change most, into textured ones. ``margin_weight``
adds the loss of each canvas's weakest bits (:func:`worst_bit_loss`): auto strength raises an
image's strength until its *weakest* bit reads with a margin, so a bit the change carries badly
costs every bit's energy; the mean cross-entropy hardly sees one such bit among a hundred.

Perturbations, one per batch: none, JPEG (straight-through), a half-size round trip (what
decoding a halved image at scale 2 sees, shifted by up to ``SHIFT`` pixel: how far off the grid
gantk.fingerprint.native.locate finds in a halved image may be),
noise, blur, brightness; the strength of each canvas's residual is jittered by up to
``STRENGTH_JITTER_DB``, so the decoder learns to read it at the strengths embedding will pick.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.fingerprint.native import shape_residual
from gantk.fingerprint.perceptual import jnd_map, ssim_luma
from gantk.fingerprint.train_stego import (
    ACC_DECAY,
    StegoTrainer,
    bit_accuracy,
    psnr,
    save_stego,
)
from gantk.nn.distributed import Dist
from gantk.nn.precision import autocast
from gantk.perturb import brightness, gaussian_blur, gaussian_noise, jpeg_straight_through

# The grid locate() finds is exact to the pixel at the embedded size; read off a half-size copy
# it may be a pixel off: the decoder learns that tolerance on its half-size round trips (only
# there: tolerance to shifts costs a position-coded decoder accuracy everywhere).
SHIFT = 1
STRENGTH_JITTER_DB = 3.0
# How fast the budget moves: 0.004 dB a step, 4 dB per 1000 steps.
BUDGET_RATE = 0.004
BUDGET_RANGE = (20.0, 60.0)
# Perturbations of a batch and their odds (none first).
PERTURBATIONS = ("none", "jpeg", "half", "noise", "blur", "brightness")
WEIGHTS = (0.15, 0.3, 0.25, 0.1, 0.1, 0.1)


def canvas_tiles(images: Tensor, tile: int) -> Tensor:
    """(B, 3, kR, kR) canvases -> (B * k * k, 3, R, R) tiles, canvas by canvas."""
    channels = images.shape[1]
    grid = images.unfold(2, tile, tile).unfold(3, tile, tile)  # B, C, k, k, R, R
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels, tile, tile)


# The worst-bit loss: a soft minimum over bits with this sharpness (in logits), pushing the
# weakest bit's signed evidence above MARGIN_TARGET (the margin --strength auto asks for, in
# pooled logits, with room for the attacks training does not simulate).
SOFTMIN_SHARPNESS = 4.0
MARGIN_TARGET = 1.0


def worst_bit_loss(pooled: Tensor, bits: Tensor) -> Tensor:
    """Mean over canvases of softplus(MARGIN_TARGET - softmin over bits of the signed logits):
    the weakest bits' shortfall from the margin."""
    signed = pooled.float() * (bits * 2 - 1)
    weakest = -torch.logsumexp(-SOFTMIN_SHARPNESS * signed, dim=1) / SOFTMIN_SHARPNESS
    return F.softplus(MARGIN_TARGET - weakest).mean()


def visibility(change: Tensor, images: Tensor) -> Tensor:
    """Mean square excess of the change over the JND, in units of the JND."""
    levels = change.abs() * 127.5  # grey levels
    return (levels / jnd_map(images) - 1).clamp_min(0).square().mean()


class NativeStegoTrainer(StegoTrainer):
    def __init__(self, config, out, dist: Dist | None = None) -> None:
        super().__init__(config, out, dist)
        self.budget_db = config.budget_db

    # -- one step ----------------------------------------------------------------------------

    def _uniform(self, count: int, low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(count, generator=self.generator)

    def perturb(self, canvases: Tensor) -> Tensor:
        """One perturbation of the batch, drawn from PERTURBATIONS."""
        out = canvases
        pick = int(torch.multinomial(torch.tensor(WEIGHTS), 1, generator=self.generator))
        name = PERTURBATIONS[pick]
        size = out.shape[-2:]
        if name == "jpeg":
            out = jpeg_straight_through(out, int(self._uniform(1, 50, 95)))
        elif name == "half":
            factor = float(self._uniform(1, 0.47, 0.53))
            small = F.interpolate(out, scale_factor=factor, mode="bilinear", antialias=True)
            out = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
            dy, dx = (
                int(v) for v in torch.randint(-SHIFT, SHIFT + 1, (2,), generator=self.generator)
            )
            out = torch.roll(out, shifts=(dy, dx), dims=(2, 3))  # content wraps around
        elif name == "noise":
            out = gaussian_noise(out, float(self._uniform(1, 0.0, 0.02)), self.generator, self.dist)
        elif name == "blur":
            out = gaussian_blur(out, 3)
        elif name == "brightness":
            out = brightness(out, float(self._uniform(1, 0.8, 1.2)))
        return out

    def train_step(self, images: Tensor) -> dict[str, float]:
        cfg = self.config
        tile = cfg.resolution
        count = images.shape[0]
        bits = self.random_bits(count)  # drawn for the whole batch (gantk.nn.distributed)
        with autocast(cfg.precision, self.device):
            raw = self.encoder.residual(images, bits).float()
        unit = shape_residual(images, raw, self.budget_db, tile)
        jitter_db = self.dist.draw(
            count, lambda n: self._uniform(n, -STRENGTH_JITTER_DB, STRENGTH_JITTER_DB)
        )
        strength = (10 ** (jitter_db / 20)).view(-1, 1, 1, 1).to(self.device)
        change = unit * strength
        marked = (images + change).clamp(-1, 1)
        seen = self.perturb(marked)
        with autocast(cfg.precision, self.device):
            logits = self.decoder(canvas_tiles(seen, tile)).float()
        pooled = logits.view(count, -1, cfg.bits).mean(dim=1)
        bce = F.binary_cross_entropy_with_logits(pooled, bits)
        seen_change = visibility(change, images)
        structure = 1 - ssim_luma(marked, images)
        loss = bce + cfg.visibility_weight * seen_change + cfg.ssim_weight * structure
        if cfg.margin_weight:
            loss = loss + cfg.margin_weight * worst_bit_loss(pooled, bits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            stats = self.dist.means({"bce": bce, "visibility": seen_change, "ssim": 1 - structure,
                                     "bit_acc": bit_accuracy(pooled, bits).mean(),
                                     "psnr": psnr(marked, images).mean()})  # fmt: skip
        # The global batch's accuracy: every process moves the budget alike.
        accuracy = stats["bit_acc"]
        if self.accurate_since is None and accuracy > 0.9:
            self.accurate_since = self.step
        self._tune_budget(accuracy)
        self.step += 1
        return {**stats, "budget_db": self.budget_db}

    def _tune_budget(self, accuracy: float) -> None:
        cfg = self.config
        self.acc_ema = ACC_DECAY * self.acc_ema + (1 - ACC_DECAY) * accuracy
        if not cfg.target_acc or self.accurate_since is None:
            return
        direction = 1.0 if self.acc_ema > cfg.target_acc else -1.0
        low, high = BUDGET_RANGE
        self.budget_db = min(high, max(low, self.budget_db + direction * BUDGET_RATE))

    # -- files -------------------------------------------------------------------------------

    def save_model(self, path=None):
        meta = {"gantk.steps": str(self.step), "gantk.data": self.config.data}
        config = self.config.model_config(round(self.budget_db, 3))
        self.encoder.config = self.decoder.config = config
        return save_stego(path or self.out / "stego.safetensors", self.encoder, self.decoder, meta)

    def state_extras(self) -> dict:
        return {"budget_db": self.budget_db}

    def load_extras(self, state: dict) -> None:
        self.budget_db = float(state.get("budget_db", self.config.budget_db))
        if not math.isfinite(self.budget_db):
            self.budget_db = self.config.budget_db
