"""How strongly to fingerprint each image: ``--strength auto`` (the default), or a fixed one.

The residual of strength 1 is made once per image; strength s scales it. ``auto`` finds, per
image, the lowest strength at which every bit still decodes with at least ``MARGIN`` (in logits,
the decoder's pooled evidence, each bit's sign right) after each of two simulated round trips
that photos meet on their way: JPEG at quality 75 and a reduction to half size, each read the way
fingerprint-decode reads (the grid found from the pilot). A bright, busy
photo gets a faint fingerprint, a small or flat one a stronger one. ``min_psnr`` caps the
strength from the other side; an image that would need more than the cap is embedded at the cap
and *flagged* (named in a warning and in the record), never silently left weak.

The search (:meth:`Embedder._search`): strength 1 is checked first, then twice or two-thirds of
it; from then on each bit's evidence is taken as a line in the strength (its own slope: how well
the change carries it; its own intercept: what the image's content reads), and the next check
is where the last of the lines reaches the margin, a little above (HEADROOM); a bracket is
bisected when the lines disagree with the checks. Three or four checks an image, each one JPEG
round trip and two pooled decodes with the pilot search, cheap next to the encoder.

When the bits' lines say the change needs more than REFINE_ABOVE (visible on a flat photo), or
no strength up to the cap makes every bit robust (the encoder's change leaves a bit or two that
the decoder reads the wrong way, more surely the stronger the change), the change is optimised
against the decoder itself for a few steps (:meth:`Embedder.refine`, in the manner of FNNS: the
networks fixed, the change's shaping and energy kept, only where it goes moves) and searched
again; a change that still fails is optimised again at twice the strength, and only then is the
unrefined change searched up to the cap.
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
REFINE_STEPS = 20
REFINE_TILES = 16
REFINE_STRENGTH = 2.0
REFINE_RATE = 0.075
REFINE_SEED = 0
SAFETY = 1.1  # a search ends when its bracket is narrower than this ratio
HEADROOM = 1.03  # the bits' lines' answer is checked this much higher
MAX_CHECKS = 8
MAX_STRENGTH = 8.0  # the strength given when nothing up to it was robust and there is no cap
# Strengths above this are visible on a flat photo (about budget - 6 dB): the refinement is
# tried for them too, and kept when it needs less.
REFINE_ABOVE = 2.0
MIN_STRENGTH = 0.05
ATTACK_QUALITY = 75


class _Adam:
    """Adam (betas 0.9, 0.999) on one tensor, updated in place. torch.optim's first optimizer
    of a process imports torch._dynamo, 1.3 s here: most of a short fingerprint-embed run's
    refinement time."""

    def __init__(self, param: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.param, self.lr, self.betas, self.steps = param, lr, betas, 0
        self.mean, self.square = torch.zeros_like(param), torch.zeros_like(param)

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        (b1, b2), self.steps = self.betas, self.steps + 1
        self.mean.lerp_(grad, 1 - b1)
        self.square.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.square / (1 - b2**self.steps)).sqrt_().add_(1e-8)
        self.param.addcdiv_(self.mean, denom, value=-self.lr / (1 - b1**self.steps))


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

    def evidence(self, marked: Tensor, bits: Tensor) -> Tensor:
        """Each bit's signed evidence for its right value after each attack: (2, bits),
        positive where the bit is read right."""
        signs = bits[0].float() * 2 - 1
        return torch.stack([logits * signs for logits in self.logits_after_attacks(marked)])

    def margin(self, marked: Tensor, bits: Tensor) -> float:
        """The smallest signed evidence for the right bit over both attacks."""
        return float(self.evidence(marked, bits).min())

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

        def search(change: Tensor, give_up_above: float) -> tuple[float | None, float]:
            cap = self.cap(change)
            found = self._search(
                lambda s: self.evidence(quantized(image + change * s), bits), cap, give_up_above
            )
            return found, cap

        if self.strength is not None:
            return Embedding(quantized(image + change * self.strength), self.strength, None)
        # Strengths above REFINE_ABOVE are visible: past it the search stops and the change is
        # refined (optimised against the decoder itself); both searched in full only when the
        # refined one fails.
        refines = self.native_fits(image)
        chosen, cap = search(change, REFINE_ABOVE if refines else math.inf)
        if refines and (chosen is None or chosen > REFINE_ABOVE):
            # Optimised at REFINE_STRENGTH first; a change that still fails everywhere is
            # optimised again at twice that (the hardest images, dark or flat, need it there),
            # then the unrefined change is searched in full.
            found, refined, refined_cap = None, change, cap
            for at in sorted({min(cap, REFINE_STRENGTH), min(cap, 2 * REFINE_STRENGTH)}):
                refined = self.shaped(image, self.refine(image, raw, bits, at, weight), weight)
                found, refined_cap = search(refined, math.inf)
                if found is not None:
                    break
            if found is not None and (chosen is None or found < chosen):
                chosen, change, cap = found, refined, refined_cap
            elif chosen is None:
                chosen, cap = search(change, math.inf)
        if chosen is None:
            if math.isfinite(cap):
                why = f"needs more than --min-psnr {self.min_psnr:g} dB allows"
            else:  # no bound, and no strength made every bit robust
                cap = MAX_STRENGTH
                why = f"no strength up to {MAX_STRENGTH:g} makes every bit robust"
            return Embedding(quantized(image + change * cap), cap, why)
        return Embedding(quantized(image + change * chosen), chosen, None)

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
        adam = _Adam(raw, rate)
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
            logits = self.decoder(native.for_decoder(tiles[pick.to(tiles.device)]))
            logits = logits.float().mean(0)
            loss = F.softplus(2 * MARGIN - logits * signs).sum()
            (grad,) = torch.autograd.grad(loss, raw)
            adam.step(grad)
        return raw.detach()

    def _search(
        self,
        evidence_at: Callable[[float], Tensor],
        cap: float,
        give_up_above: float = math.inf,
    ) -> float | None:
        """The lowest strength at which every entry of ``evidence_at(strength)`` (each bit
        after each attack) is at least MARGIN, within SAFETY; None when the bits' lines say no
        strength up to ``cap`` gets there (or MAX_CHECKS checks did not find one), or, before
        anything passed, that it takes more than ``give_up_above``."""
        checked: dict[float, Tensor] = {}
        strength = min(1.0, cap)
        for _ in range(MAX_CHECKS):
            checked[strength] = evidence_at(strength).float().flatten()
            guess = _next_guess(checked, cap)
            if guess is None or guess in checked:
                break
            if guess > give_up_above and all(float(e.min()) < MARGIN for e in checked.values()):
                return None
            strength = guess
        passing = [s for s, e in checked.items() if float(e.min()) >= MARGIN]
        return min(passing) if passing else None


def _next_guess(checked: dict[float, Tensor], cap: float) -> float | None:
    """The next strength to check, or None when the search is over.

    Each bit's evidence is about a line in the strength (a different one per bit: its slope is
    how well the change carries it, its intercept what the image's own content reads), so the
    strength every bit needs is the largest of the lines' crossings of MARGIN (:func:`_crossing`),
    checked next with HEADROOM on top. A first check has no lines yet: the next is twice or
    two-thirds of it. When the lines point at what was checked already, the bracket between the
    lowest passing strength and the failing one below it is halved (in the log domain) until it
    is narrower than SAFETY."""
    points = sorted(checked.items())
    passing = [s for s, e in points if float(e.min()) >= MARGIN]
    failing = [s for s, e in points if float(e.min()) < MARGIN]
    lowest = min(passing) if passing else math.inf
    below = max([s for s in failing if s < lowest], default=0.0)
    if len(points) == 1:
        guess = points[0][0] * (2 / 3 if passing else 2.0)
    elif not math.isfinite(crossing := _crossing(points)):
        # A bit falls short and did not rise: a reading that is noise (no grid found yet)
        # rises late, if at all. Double.
        guess = 2 * points[-1][0]
    else:
        guess = crossing * HEADROOM
        if guess * 1.01 >= lowest:  # the lines say the lowest passing strength is the answer
            return None
        if guess <= below:  # the lines disagree with the checks
            if not passing:  # (a bit that rose, then fell): try higher
                guess = 2 * below
            elif below == 0:  # nothing failed, and the lines say nothing will: the floor
                guess = MIN_STRENGTH
            elif lowest / below < SAFETY:
                return None
            else:  # bisect the bracket
                guess = math.sqrt(lowest * below)
    if below > 0:  # a strength a hair above a failing one fails too (JPEG's and rounding's noise)
        guess = max(guess, below * SAFETY**0.5)
    if guess >= cap and cap in checked:
        return None  # out of reach below the cap
    return float(min(cap, max(MIN_STRENGTH, guess)))


def _crossing(points: list[tuple[float, Tensor]]) -> float:
    """The strength at which every entry (bit and attack) reaches MARGIN on its own line: inf
    when an entry that falls short at every check does not rise with the strength."""
    strengths = torch.tensor([s for s, _ in points], dtype=torch.float64)
    evidence = torch.stack([e.double() for _, e in points])  # (checks, entries)
    above = evidence >= MARGIN
    # Each entry's line goes through the checks that bracket its crossing (the first where it
    # passes and the one before); one that passes or fails everywhere takes the two checks
    # nearest that end.
    last = len(points) - 1
    first_pass = torch.where(above.any(0), above.long().argmax(0), last)
    upper = first_pass.clamp(1, last)
    cols = torch.arange(evidence.shape[1])
    s0, s1 = strengths[upper - 1], strengths[upper]
    e0, e1 = evidence[upper - 1, cols], evidence[upper, cols]
    slope = (e1 - e0) / (s1 - s0)
    rising = slope > 0
    crossing = torch.where(rising, s1 + (MARGIN - e1) / torch.where(rising, slope, 1), torch.inf)
    # An entry that passes at the lowest check asks for nothing above it.
    crossing = torch.where(above[0] & ~rising, -torch.inf, crossing)
    return float(crossing.max())
