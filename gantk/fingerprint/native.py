"""The native-resolution design of artificial fingerprints (gantk's default since stego-100 v3).

The paper's design (:func:`gantk.fingerprint.stego.embed_any_size`) encodes a copy of the image
shrunk to the model's resolution R and stretches the residual back over the photo: 100 bits in a
64 px picture become patches 10-50 pixels wide on a large photo, the most visible kind of change.
Here the residual is made on the image's own pixels instead:

- **Embedding**: the image, reflect-padded to whole tiles of R pixels, goes through the encoder
  at once, with the fingerprint's map repeated every R pixels (:meth:`StegoEncoder.residual`);
  the luminance residual is multiplied by the image's JND attenuation (textured areas get more
  than flat ones), band-passed (no slow swells), and scaled so that at ``strength`` 1 its PSNR is
  the model's ``budget_db``. Strength s gives a PSNR of about ``budget_db - 20 log10(s)``.
- **Decoding**: every whole R-pixel tile of the image goes through the decoder and the logits are
  averaged over tiles (:func:`pooled_logits`): the evidence of every position pooled, so a large
  photo carries the fingerprint many times over, each copy faint.
- **Crops and resizing** move the tile grid (its phase) and change its period. A fixed *pilot*
  (:func:`pilot`, a band-limited random pattern of one tile, the same for every fingerprint and
  every model) takes ``PILOT_SHARE`` of the residual's energy, repeated with the tile period
  like the fingerprint. :func:`locate` folds the image onto one period (the mean of every
  pixel with the same position modulo the period: the image content averages away, the
  periodic residual adds up) and finds the pilot in the fold by circular cross-correlation
  (one FFT per candidate scale): the grid's offset to the pixel and its scale, in
  milliseconds, whatever the crop. The tiles are then read on that grid. The grid is chosen
  from the pilot alone, never from the fingerprint being tested for, so a test's
  false-positive rate stays what the binomial test says.

Images smaller than one tile keep the paper's design (resize to R).
Images are (B, 3, H, W) in [-1, 1]; fingerprints (B, n) of 0/1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.fingerprint.perceptual import attenuation, band_pass, gaussian_blur, luminance
from gantk.fingerprint.stego import StegoDecoder, StegoEncoder, resize_to
from gantk.fingerprint.stego import decode_bits as decode_bits_resized
from gantk.nn.precision import autocast, resolve_precision

# The band-pass scale, in pixels: the residual keeps detail finer than about 2.5 sigma.
BAND_SIGMA = 6.0
# Large images go through the encoder in windows of this many tiles a side, each with one tile
# of context around it (the U-Net's receptive field), so memory stays bounded.
WINDOW_TILES = 8
# The pilot's share of the residual's energy, and the seed of its pattern (fixed forever: images
# fingerprinted today must be found by later versions).
PILOT_SHARE = 0.2
PILOT_SEED = 31
# Scales at which locate() looks for the grid: the image as embedded, shrunk to 3/4 or 1/2,
# enlarged 2x.
SCALES = (1.0, 0.75, 0.5, 2.0)
# A pilot peak this many standard deviations above the correlation map's mean is a grid;
# below it (an image never fingerprinted, or destroyed), tiles are read at the origin.
LOCATE_Z = 6.0
# The matched fold's detail (luminance minus a Gaussian mean of this sigma) and the local
# variance it is weighted against (Gaussian of this sigma, plus a floor in grey levels²).
LOCATE_DETAIL_SIGMA = 3.0
LOCATE_NOISE_SIGMA = 4.0
LOCATE_NOISE_FLOOR = 4.0


def rms_for_psnr(psnr_db: float) -> float:
    """The residual RMS, on the [-1, 1] scale (peak-to-peak 2), that gives this PSNR."""
    return 2.0 * 10 ** (-psnr_db / 20)


def pad_to_tiles(images: Tensor, tile: int) -> Tensor:
    """Reflect-pad the bottom and right edges up to whole tiles."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % tile, -width % tile
    if not pad_h and not pad_w:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def raw_residual(encoder: StegoEncoder, images: Tensor, fingerprints: Tensor) -> Tensor:
    """The encoder's residual at the images' own resolution (sides of at least one tile), made
    window by window on large images."""
    tile = encoder.config.resolution
    height, width = images.shape[-2:]
    padded = pad_to_tiles(images, tile)
    rows, cols = padded.shape[-2] // tile, padded.shape[-1] // tile
    if rows <= WINDOW_TILES + 2 and cols <= WINDOW_TILES + 2:
        return encoder.residual(padded, fingerprints)[..., :height, :width]
    out = None
    for top in range(0, rows, WINDOW_TILES):
        for left in range(0, cols, WINDOW_TILES):
            # The window plus one tile of context on each side that has one (the period keeps
            # the fingerprint's map aligned: windows start on tile boundaries).
            y0, x0 = max(0, top - 1), max(0, left - 1)
            y1, x1 = min(rows, top + WINDOW_TILES + 1), min(cols, left + WINDOW_TILES + 1)
            part = encoder.residual(
                padded[..., y0 * tile : y1 * tile, x0 * tile : x1 * tile], fingerprints
            )
            if out is None:
                out = part.new_zeros(*part.shape[:2], *padded.shape[-2:])
            inner_y, inner_x = (top - y0) * tile, (left - x0) * tile
            h = min(WINDOW_TILES, rows - top) * tile
            w = min(WINDOW_TILES, cols - left) * tile
            out[..., top * tile : top * tile + h, left * tile : left * tile + w] = part[
                ..., inner_y : inner_y + h, inner_x : inner_x + w
            ]
    assert out is not None
    return out[..., :height, :width]


@functools.cache
def pilot(tile: int) -> Tensor:
    """The synchronisation pattern of one tile, (1, 1, tile, tile): Gaussian noise from a fixed
    seed, kept to the band a decoder sees after JPEG and halving (periods of about 3 to 16
    pixels, filtered in the frequency domain so the pattern stays periodic), zero mean, unit
    RMS. Random, so its phase-only correlation with a shifted copy peaks at the shift alone."""
    generator = torch.Generator().manual_seed(PILOT_SEED)
    noise = torch.randn(tile, tile, generator=generator, dtype=torch.float64)
    freqs = torch.fft.fftfreq(tile, dtype=torch.float64)
    radius = torch.sqrt(freqs[:, None] ** 2 + freqs[None, :] ** 2)
    band = ((radius >= 1 / 16) & (radius <= 1 / 3)).to(torch.float64)
    pattern = torch.fft.ifft2(torch.fft.fft2(noise) * band).real
    pattern = pattern - pattern.mean()
    return (pattern / pattern.square().mean().sqrt()).float()[None, None]


def _unit_rms(x: Tensor) -> Tensor:
    rms = x.float().square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8)
    return x / rms.to(x.dtype)


def shape_residual(
    images: Tensor, residual: Tensor, budget_db: float, tile: int, weight: Tensor | None = None
) -> Tensor:
    """The residual of strength 1 (differentiable, for training): the encoder's residual and
    the pilot (its PILOT_SHARE of the energy), each attenuated by the images' JND (``weight``:
    :func:`attenuation` of ``images``, when the caller has it already) and band-passed, scaled
    together to the budget's RMS per image."""
    weight = (attenuation(images) if weight is None else weight).to(residual.dtype)
    height, width = images.shape[-2:]
    rows, cols = -(-height // tile), -(-width // tile)
    tiled = pilot(tile).to(residual).repeat(1, 1, rows, cols)[..., :height, :width]
    fingerprint = _unit_rms(band_pass(residual * weight, BAND_SIGMA))
    sync = _unit_rms(band_pass(tiled * weight, BAND_SIGMA))
    shaped = fingerprint * (1 - PILOT_SHARE) ** 0.5 + sync * PILOT_SHARE**0.5
    return _unit_rms(shaped) * rms_for_psnr(budget_db)


def unit_residual(
    encoder: StegoEncoder, images: Tensor, fingerprints: Tensor, budget_db: float
) -> Tensor:
    """The residual of strength 1 for images at their own size; (B, 1 or 3, H, W)."""
    residual = raw_residual(encoder, images, fingerprints).float()
    # The shaping in float32 even when the encoder ran under bf16 autocast: its blur and
    # normalisation are sums a 8-bit mantissa would round.
    with torch.autocast(images.device.type, enabled=False):
        return shape_residual(images.float(), residual, budget_db, encoder.config.resolution)


def apply(images: Tensor, residual: Tensor, strength: float | Tensor) -> Tensor:
    """``images`` with ``strength`` times the unit residual, clipped to the valid range."""
    return (images + residual * strength).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# Decoding


def tiles_at(images: Tensor, tile: int, offset: tuple[int, int] = (0, 0)) -> Tensor:
    """Every whole tile of (1, 3, H, W) ``images`` on the grid starting at ``offset``:
    (N, 3, tile, tile), row by row; N may be 0."""
    dy, dx = offset
    region = images[..., dy:, dx:]
    rows, cols = region.shape[-2] // tile, region.shape[-1] // tile
    if not rows or not cols:
        return images.new_zeros(0, images.shape[1], tile, tile)
    region = region[..., : rows * tile, : cols * tile]
    grid = region.unfold(2, tile, tile).unfold(3, tile, tile)  # 1, 3, rows, cols, t, t
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1], tile, tile)


def tile_logits(
    decoder: StegoDecoder, images: Tensor, offset: tuple[int, int] = (0, 0), batch: int = 64
) -> Tensor:
    """The decoder's logits of every tile on the grid at ``offset``: (N, bits)."""
    tiles = for_decoder(tiles_at(images, decoder.config.resolution, offset))
    if not len(tiles):
        return tiles.new_zeros(0, decoder.config.bits)
    return torch.cat([decoder(chunk) for chunk in tiles.split(batch)]).float()


def for_decoder(tiles: Tensor) -> Tensor:
    """Tiles in the memory layout the decoder is fastest with: channels-last on a CPU (oneDNN;
    measured one thread, 90 tiles of 64 px under bf16: 41 -> 16 ms, float32: 98 -> 46 ms)."""
    if tiles.device.type != "cpu":
        return tiles
    return tiles.contiguous(memory_format=torch.channels_last)


def pooled_logits(
    decoder: StegoDecoder, images: Tensor, offset: tuple[int, int] = (0, 0)
) -> Tensor:
    """The mean of the tile logits: the fingerprint's evidence pooled over the image (bits,)."""
    return tile_logits(decoder, images, offset).mean(dim=0)


@dataclass
class Grid:
    """Where the tiles lie: the image magnified by ``scale`` (1 / the factor it was resized
    by), tiles starting at ``offset`` (y, x) pixels; ``z`` is the pilot's peak in standard
    deviations (0 when no pilot was found and the origin is used)."""

    scale: float = 1.0
    offset: tuple[int, int] = (0, 0)
    z: float = 0.0


def fold(plane: Tensor, period: int) -> Tensor:
    """(H, W) -> (period, period): the sum of the pixels at each position modulo the period,
    over every pixel of the plane (partial periods at the edges too: on a small or cropped
    image they are a good part of the evidence)."""
    height, width = plane.shape
    rows = torch.arange(height, device=plane.device) % period
    cols = torch.arange(width, device=plane.device) % period
    index = (rows[:, None] * period + cols[None, :]).flatten()
    sums = plane.new_zeros(period * period).index_add_(0, index, plane.flatten())
    return sums.view(period, period)


def _peak(corr: Tensor) -> tuple[float, float]:
    """The correlation map's maximum to a fraction of a pixel: a parabola through the peak and
    its two (circular) neighbours on each axis. A shrunk image puts the grid between pixels."""
    period = corr.shape[0]
    y, x = divmod(int(corr.argmax()), period)

    def refine(before: float, at: float, after: float) -> float:
        curvature = before - 2 * at + after
        return 0.0 if curvature >= 0 else 0.5 * (before - after) / curvature

    row, col = corr[y], corr[:, x]
    dy = refine(float(col[y - 1]), float(col[y]), float(col[(y + 1) % period]))
    dx = refine(float(row[x - 1]), float(row[x]), float(row[(x + 1) % period]))
    return y + dy, x + dx


def locate(image: Tensor, tile: int) -> Grid:
    """The tile grid of a (1, 3, H, W) image from its pilot (see the module's docstring).

    The fold is a matched filter: the luminance's detail (minus a local mean) is averaged with
    weights of the pilot's expected amplitude (the image's JND attenuation, as embedding gave
    it) over the local detail variance (the image content, the noise the pilot must be found
    in), so quiet regions, where the pilot stands out, count for more than busy ones. The
    correlation is phase-only (each frequency of the cross-spectrum divided by its magnitude,
    within the pilot's band): the content, strongest at low frequencies, then weighs no more
    than the pilot, and the peak is one pixel wide."""
    luma = luminance(image.float())
    detail = luma - gaussian_blur(luma, LOCATE_DETAIL_SIGMA)
    noise = gaussian_blur(detail.square(), LOCATE_NOISE_SIGMA) + LOCATE_NOISE_FLOOR
    weight = attenuation(image.float()) / noise
    weighted, weights = (detail * weight)[0, 0].double(), weight[0, 0].double()
    best = Grid()
    for factor in SCALES:
        period = round(tile * factor)
        if min(weighted.shape) < period:
            continue
        reference = pilot(tile).double()
        if period != tile:
            reference = F.interpolate(reference, size=(period, period), mode="bilinear",
                                      align_corners=False, antialias=period < tile)  # fmt: skip
        spectrum = torch.fft.fft2(reference[0, 0])
        band = spectrum.abs() > 0.05 * spectrum.abs().max()
        folded = fold(weighted, period) / fold(weights, period).clamp_min(1e-12)
        cross = torch.fft.fft2(folded) * spectrum.conj()
        cross = torch.where(band, cross / cross.abs().clamp_min(1e-12), torch.zeros_like(cross))
        corr = torch.fft.ifft2(cross).real
        spread = corr.std()
        if not spread > 0:
            continue
        z = float((corr.max() - corr.mean()) / spread)
        if z > best.z:
            dy, dx = _peak(corr)
            # The reference was resized like the image (same pixel-centre convention), so the
            # peak is the grid's shift in the image's own pixels: 1 / factor of them once the
            # image is magnified back.
            offset = (round(dy / factor) % tile, round(dx / factor) % tile)
            best = Grid(1 / factor, offset, z)
    return best if best.z >= LOCATE_Z else Grid(z=best.z)


@dataclass
class Reading:
    """What :func:`decode` read: pooled logits, the grid it read them on, how many tiles."""

    logits: Tensor  # (bits,)
    grid: Grid
    tiles: int


def magnified(images: Tensor, scale: float) -> Tensor:
    if scale == 1.0:
        return images
    size = (round(images.shape[-2] * scale), round(images.shape[-1] * scale))
    return resize_to(images, size)


def decode(decoder: StegoDecoder, image: Tensor, align: bool = True) -> Reading:
    """Pooled logits of one (1, 3, H, W) image on the grid :func:`locate` finds (``align``) or
    at the origin; images smaller than a tile are resized to one (the paper's design)."""
    tile = decoder.config.resolution
    if min(image.shape[-2:]) < tile:
        logits = decoder(resize_to(image, (tile, tile))).float()[0]
        return Reading(logits, Grid(), 1)
    grid = locate(image, tile) if align else Grid()
    view = magnified(image, grid.scale)
    logits = tile_logits(decoder, view, grid.offset)
    if not len(logits):  # the grid's offset left no whole tile: read at the origin
        grid = Grid()
        logits = tile_logits(decoder, image)
    return Reading(logits.mean(0), grid, len(logits))


def decode_bits(
    decoder: StegoDecoder, images: list[Tensor], precision: str = "auto"
) -> tuple[np.ndarray, list[Reading]]:
    """Decoded 0/1 bits (count, bits) uint8 of images (each (1, 3, H, W)) of any sizes, and
    what was read from each; the decoder runs in ``precision`` (auto: bf16 where the hardware
    has it, 3-6x faster on such a CPU)."""
    device = next(decoder.parameters()).device
    with torch.no_grad(), autocast(resolve_precision(precision, device), device):
        readings = [decode(decoder, image.to(device)) for image in images]
    bits = [(r.logits > 0).cpu().numpy().astype(np.uint8) for r in readings]
    if not bits:
        return np.zeros((0, decoder.config.bits), np.uint8), []
    return np.stack(bits), readings


def read_bits(
    decoder: StegoDecoder, images: list[Tensor], design: str, precision: str = "auto"
) -> np.ndarray:
    """Decoded bits of images of any sizes, read the way ``design`` embedded them."""
    if design == "native":
        return decode_bits(decoder, images, precision)[0]
    return decode_bits_resized(decoder, images)
