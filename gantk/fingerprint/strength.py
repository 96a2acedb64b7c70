"""How strongly to fingerprint each image: ``--strength auto`` (the default), or a fixed one.

The residual of strength 1 is made once per image; strength s scales it. ``auto`` finds, per
image, the lowest strength at which every bit still decodes with at least ``MARGIN`` (in logits,
the decoder's pooled evidence, each bit's sign right) after each of two simulated round trips
that photos meet on their way: JPEG at quality 75 and a reduction to half size, each read the way
fingerprint-decode reads (the grid found from the pilot). A bright, busy
photo gets a faint fingerprint, a small or flat one a stronger one. ``min_psnr`` caps the
strength from the other side; an image that would need more than the cap is embedded at the cap
and *flagged* (named in a warning and in the record), never silently left weak.

When no strength up to the cap makes every bit robust (the encoder's change leaves a bit or two
that the decoder reads the wrong way, more surely the stronger the change), the change is
optimised against the decoder itself for a few steps (:meth:`Embedder.refine`, in the manner of
FNNS: the networks fixed, the change's shaping and energy kept, only where it goes moves) and the
search runs again.

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
import torch.nn.functional as F
from torch import Tensor

from gantk.fingerprint import native
from gantk.fingerprint.stego import StegoDecoder, StegoEncoder, decode_any_size, embed_any_size
from gantk.nn.precision import autocast, resolve_precision
from gantk.perturb import jpeg, jpeg_straight_through

MARGIN = 0.5  # the smallest |pooled logit| of a right bit that auto accepts
# The refinement of images whose change leaves bits unread: steps, tiles read per step, the
# strength it optimises at, and Adam's step as a fraction of the change's mean magnitude.
REFINE_STEPS = 30
REFINE_TILES = 16
REFINE_STRENGTH = 2.0
REFINE_RATE = 0.05
REFINE_SEED = 0
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
        precision: str = "auto",
    ) -> None:
        self.encoder, self.decoder, self.design = encoder, decoder, design
        self.strength, self.min_psnr = strength, min_psnr
        self.budget_db = encoder.config.budget_db
        device = next(encoder.parameters()).device
        # Networks in bf16 where the hardware has it (the encoder about 1.8x, the decoder 3-6x
        # faster on an AVX512-BF16 CPU); the residual's shaping and the image stay float32.
        self.precision = resolve_precision(precision, device)

    def native_fits(self, image: Tensor) -> bool:
        return self.design == "native" and min(image.shape[-2:]) >= self.encoder.config.resolution

    def raw_residual(self, image: Tensor, bits: Tensor) -> Tensor:
        """The encoder's own change for a (1, 3, H, W) image (native: before shaping)."""
        if self.native_fits(image):
            return native.raw_residual(self.encoder, image, bits).float()
        return (embed_any_size(self.encoder, image, bits) - image).float()

    def shaped(self, image: Tensor, raw: Tensor, weight: Tensor | None = None) -> Tensor:
        """The change of strength 1 made from the encoder's ``raw`` change (``weight``: the
        image's JND attenuation, when already at hand)."""
        if not self.native_fits(image):
            return raw
        # The shaping in float32 even when the networks run under bf16 autocast.
        with torch.autocast(image.device.type, enabled=False):
            tile = self.encoder.config.resolution
            return native.shape_residual(image.float(), raw, self.budget_db, tile, weight)

    def logits_after_attacks(self, marked: Tensor) -> list[Tensor]:
        """Pooled logits after a JPEG round trip and a half-size round trip, each read the way
        fingerprint-decode reads it (the grid found from the pilot): an image too small for its
        halved copy to show the grid fails here, not later in a user's hands. (Crops are not
        checked: on photos of 512 px and more the grid of an 80 % crop is found wherever the
        half-size one is, and on smaller ones making crops safe took the strength to the
        --min-psnr cap, measured on 256 px photos.)"""
        readings = [jpeg(marked, ATTACK_QUALITY), native.magnified(marked, 0.5)]
        if not self.native_fits(marked):
            return [decode_any_size(self.decoder, image)[0].float() for image in readings]
        return [native.decode(self.decoder, image).logits for image in readings]

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
        with autocast(self.precision, image.device):
            return self._embed(image, bits)

    def _embed(self, image: Tensor, bits: Tensor) -> Embedding:
        raw = self.raw_residual(image, bits)
        weight = None
        if self.native_fits(image):  # the image's JND map: once, for every shaping below
            with torch.autocast(image.device.type, enabled=False):
                weight = native.attenuation(image.float())
        change = self.shaped(image, raw, weight)

        def marked_at(strength: float) -> Tensor:
            return quantized(image + change * strength)

        if self.strength is not None:
            return Embedding(marked_at(self.strength), self.strength, None)
        cap = self.cap(change)
        chosen = self._search(lambda s: self.margin(marked_at(s), bits), cap)
        if chosen is None and self.native_fits(image):
            # A few bits the encoder's change does not carry at any strength (the decoder reads
            # them the wrong way, more surely the stronger the change): optimise the change
            # against the decoder itself, then search again.
            at = min(cap, REFINE_STRENGTH)
            change = self.shaped(image, self.refine(image, raw, bits, at, weight), weight)
            cap = self.cap(change)
            chosen = self._search(lambda s: self.margin(marked_at(s), bits), cap)
        if chosen is None:
            why = f"needs more than --min-psnr {self.min_psnr:g} dB allows"
            if not math.isfinite(cap):  # no bound and still not robust: the largest tried
                cap = 2.0**MAX_CHECKS
            return Embedding(marked_at(cap), cap, why)
        return Embedding(marked_at(chosen), chosen, None)

    @torch.enable_grad()
    def refine(
        self,
        image: Tensor,
        raw: Tensor,
        bits: Tensor,
        strength: float,
        weight: Tensor | None = None,
    ) -> Tensor:
        """``raw`` after REFINE_STEPS steps of Adam on the decoder's evidence: every bit's
        pooled logit (over REFINE_TILES random tiles) pushed above 2 x MARGIN, after a clean
        copy, a JPEG round trip (straight-through) or a half-size round trip in turn. The
        change keeps its shaping and its RMS (the budget): only where it goes moves."""
        tile = self.decoder.config.resolution
        signs = bits[0] * 2 - 1
        generator = torch.Generator().manual_seed(REFINE_SEED)
        rate = REFINE_RATE * float(raw.abs().mean())
        raw = raw.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([raw], lr=rate)
        self.decoder.requires_grad_(False)
        if weight is None:  # the same at every step
            with torch.no_grad():
                weight = native.attenuation(image.float())
        for step in range(REFINE_STEPS):
            marked = (image + self.shaped(image, raw, weight) * strength).clamp(-1, 1)
            attack = step % 3
            if attack == 1:
                marked = jpeg_straight_through(marked, ATTACK_QUALITY)
            elif attack == 2:
                halved = native.magnified(native.magnified(marked, 0.5), 2.0)
                marked = halved[..., : image.shape[-2], : image.shape[-1]]
            tiles = native.tiles_at(marked, tile)
            pick = torch.randperm(len(tiles), generator=generator)[:REFINE_TILES]
            logits = self.decoder(tiles[pick.to(tiles.device)]).float().mean(0)
            loss = F.softplus(2 * MARGIN - logits * signs).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return raw.detach()

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
