"""How strongly to fingerprint each image: ``--strength auto`` (the default), or a fixed one.

The residual of strength 1 is made once per image; strength s scales it. ``auto`` finds, per
image, the lowest strength at which every bit still decodes with at least ``MARGIN`` (in logits,
the decoder's pooled evidence, each bit's sign right) after each of two simulated round trips
that photos meet on their way: JPEG at quality 75 and a reduction to half size. A bright, busy
photo gets a faint fingerprint, a small or flat one a stronger one. ``min_psnr`` caps the
strength from the other side; an image that would need more than the cap is embedded at the cap
and *flagged* (named in a warning and in the record), never silently left weak.

The search: strength 1 is checked first; the margin grows about linearly with the strength, so
the next guess is where the line through the last two checks reaches the margin (with
``SAFETY`` on top), then a few steps up until it holds. Three or four checks an image, each one
JPEG round trip and two decodes, cheap next to the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gantk.fingerprint import native
from gantk.fingerprint.stego import StegoDecoder, StegoEncoder, decode_any_size, embed_any_size
from gantk.perturb import jpeg

MARGIN = 0.5  # the smallest |pooled logit| of a right bit that auto accepts
SAFETY = 1.1  # the linear guess is raised by this factor
MAX_CHECKS = 8
MIN_STRENGTH = 0.05
ATTACK_QUALITY = 75


@dataclass
class Embedding:
    image: Tensor  # (1, 3, H, W) in [-1, 1], rounded to 8-bit levels
    strength: float
    flagged: str | None  # why the image is weaker than auto wanted, or None


def quantized(x: Tensor) -> Tensor:
    """Rounded to the 256 levels a saved 8-bit image holds."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


class Embedder:
    """Fingerprints one image at a time with the design of ``design`` and the given strength
    (a number, or None for auto), checking robustness with ``decoder``."""

    def __init__(
        self,
        encoder: StegoEncoder,
        decoder: StegoDecoder,
        design: str = "native",
        strength: float | None = None,
        min_psnr: float | None = None,
    ) -> None:
        self.encoder, self.decoder, self.design = encoder, decoder, design
        self.strength, self.min_psnr = strength, min_psnr
        self.budget_db = encoder.config.budget_db

    def residual(self, image: Tensor, bits: Tensor) -> Tensor:
        """The change of strength 1 for a (1, 3, H, W) image."""
        tile = self.encoder.config.resolution
        if self.design == "native" and min(image.shape[-2:]) >= tile:
            return native.unit_residual(self.encoder, image, bits, self.budget_db)
        return embed_any_size(self.encoder, image, bits) - image

    def logits_after_attacks(self, marked: Tensor) -> list[Tensor]:
        """Pooled logits after a JPEG round trip and after a half-size round trip, each read on
        the grid it is known to have (no search needed: the simulation knows it)."""
        small = native.magnified(marked, 0.5)
        readings = [jpeg(marked, ATTACK_QUALITY), small]
        if self.design != "native" or min(marked.shape[-2:]) < self.decoder.config.resolution:
            return [decode_any_size(self.decoder, image)[0].float() for image in readings]
        out = [native.tile_logits(self.decoder, readings[0]).mean(0)]
        halved = native.magnified(small, 2.0)[..., : marked.shape[-2], : marked.shape[-1]]
        out.append(native.tile_logits(self.decoder, halved).mean(0))
        return out

    def margin(self, marked: Tensor, bits: Tensor) -> float:
        """The smallest signed evidence for the right bit over both attacks."""
        signs = bits[0] * 2 - 1
        return min(float((logits * signs).min()) for logits in self.logits_after_attacks(marked))

    def cap(self, change: Tensor) -> float:
        """The strength at which this image's change reaches --min-psnr (before rounding)."""
        if self.min_psnr is None:
            return math.inf
        rms = float(change.float().square().mean().sqrt())
        if rms == 0:
            return math.inf
        return native.rms_for_psnr(self.min_psnr) / rms

    @torch.no_grad()
    def embed(self, image: Tensor, bits: Tensor) -> Embedding:
        change = self.residual(image, bits)

        def marked_at(strength: float) -> Tensor:
            return quantized(image + change * strength)

        if self.strength is not None:
            return Embedding(marked_at(self.strength), self.strength, None)
        cap = self.cap(change)
        chosen = self._search(lambda s: self.margin(marked_at(s), bits), cap)
        if chosen is None:
            why = f"needs more than --min-psnr {self.min_psnr:g} dB allows"
            if not math.isfinite(cap):  # no bound and still not robust: the largest tried
                cap = 2.0**MAX_CHECKS
            return Embedding(marked_at(cap), cap, why)
        return Embedding(marked_at(chosen), chosen, None)

    def _search(self, margin_at: Callable[[float], float], cap: float) -> float | None:
        """The lowest strength with a margin of at least MARGIN (within SAFETY), or None when
        even ``cap`` falls short."""
        checked: dict[float, float] = {}

        def check(strength: float) -> bool:
            checked[strength] = margin_at(strength)
            return checked[strength] >= MARGIN

        start = min(1.0, cap)
        passing = [start] if check(start) else []
        for _ in range(MAX_CHECKS - 1):
            guess = self._next_guess(checked, cap)
            if guess is None or guess in checked:
                break
            if check(guess):
                passing.append(guess)
            elif passing and guess > min(passing):
                break
        if passing:
            return min(passing)
        return None

    @staticmethod
    def _next_guess(checked: dict[float, float], cap: float) -> float | None:
        """Where the line through the last two checks (or through the origin) meets the margin
        target, times SAFETY, kept within [MIN_STRENGTH, cap]."""
        points = sorted(checked.items())
        if len(points) == 1:
            (s1, m1), (s0, m0) = points[0], (0.0, 0.0)
        else:
            (s0, m0), (s1, m1) = points[-2], points[-1]
            low_fail = [s for s, m in points if m < MARGIN]
            high_pass = [s for s, m in points if m >= MARGIN]
            if low_fail and high_pass:  # bracketed: bisect in the log domain
                low, high = max(low_fail), min(high_pass)
                if high / low < SAFETY:
                    return None
                return math.sqrt(low * high)
        slope = (m1 - m0) / (s1 - s0) if s1 != s0 else 0.0
        if slope <= 0:
            guess = s1 * 2 if m1 < MARGIN else s1 / 2
        else:
            guess = (s1 + (MARGIN - m1) / slope) * SAFETY
        if guess >= cap and cap in checked:
            return None
        return float(min(cap, max(MIN_STRENGTH, guess)))
