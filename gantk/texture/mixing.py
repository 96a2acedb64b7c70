"""Test-time uses of a trained Texture Mixer (thesis §3.3.3): interpolation strips, 4-corner
palettes, dissolves, texture brushes and hole fills, at any output size.

Every operation is: encode the textures, build per-texture weight maps on the latent grid,
compose the canvas latent (latent.blend: tiled, shuffled, exact at the placed positions), decode
in overlapping tiles (so a 2048² palette fits in CPU memory), then optionally restore the placed
textures exactly with a graph-cut seam and Poisson blending (postprocess.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.errors import GantkError
from gantk.io.images import to_uint8 as images_to_uint8
from gantk.nn.precision import autocast, channels_last, resolve_precision
from gantk.texture.deblock import deblock as remove_grid
from gantk.texture.latent import (
    COVERS,
    MIXES,
    blend,
    brush_weights,
    palette_weights,
    strip_weights,
    to_latent_grid,
    uniform_weights,
)
from gantk.texture.networks import LATENT_FACTOR, TextureMixer
from gantk.texture.postprocess import (
    graphcut_mask,
    parse_blend,
    paste_constraints,
    poisson_blend,
)

DEFAULT_DECODE_TILE = 64  # latent cells per decoded tile side (256 px of output)


@dataclass
class Placement:
    """A texture placed at latent cell (y, x): reproduced there, tiled elsewhere."""

    index: int
    y: int
    x: int


def strip_placements(length: int, resolution: int) -> list[Placement]:
    """Texture 0 at the left end, texture 1 at the right end of a ``length`` px strip. Positions
    are latent cells (4 px); the right texture starts at the last whole cell that keeps it
    inside the strip, so network and restoration agree on where it is."""
    return [Placement(0, 0, 0), Placement(1, 0, (length - resolution) // LATENT_FACTOR)]


def palette_placements(size: int, resolution: int) -> list[Placement]:
    """The four corners of a ``size`` px square palette: TL, TR, BL, BR."""
    far = (size - resolution) // LATENT_FACTOR
    return [Placement(0, 0, 0), Placement(1, 0, far), Placement(2, far, 0),
            Placement(3, far, far)]  # fmt: skip


def latent_cells(pixels: int) -> int:
    return -(-pixels // LATENT_FACTOR)


def to_uint8(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> H x W x 3 uint8."""
    return images_to_uint8(image[:1])[0].cpu().numpy()


class Mixer:
    def __init__(
        self,
        model: TextureMixer,
        shuffle: bool = True,
        decode_tile: int = DEFAULT_DECODE_TILE,
        cover: str = "rows",
        mix: str = "blend",
        precision: str = "fp32",
        deblock: bool = False,
    ) -> None:
        """``cover`` and ``mix``: see gantk.texture.latent (COVERS, MIXES); the paper's are
        rows (tiles with rows and columns shuffled) and blend (weighted latent averages).
        ``shuffle`` False tiles the latents as they are (cover none). ``precision``: the
        generator's autocast when decoding (gantk.nn.precision; bf16 on a CPU that has it
        makes a 1024² palette 1.37x faster, pixels within 0.2 grey levels on average). On a
        CPU the mixer decodes with a channels-last copy of the model (oneDNN's faster layout;
        the same pixels to float rounding: a 1024² palette 1.33 -> 0.93 s on one thread).
        ``deblock``: subtract the grid at the latent-cell period from every decoded canvas
        (gantk.texture.deblock; not the paper's, the commands' default)."""
        if cover not in COVERS:
            raise GantkError(f"--cover must be one of {', '.join(COVERS)}, got {cover!r}")
        if mix not in MIXES:
            raise GantkError(f"--mix must be one of {', '.join(MIXES)}, got {mix!r}")
        self.model = model
        self.shuffle = shuffle
        self.cover = cover if shuffle else "none"
        self.mix = mix
        self.decode_tile = decode_tile
        self.deblock = deblock
        self.resolution = model.config.resolution
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        if self.device.type == "cpu":  # a channels-last copy: the caller's model stays as it is
            self.model = copy.deepcopy(model)
            channels_last(self.model)

    # -- building blocks -----------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, textures: list[Tensor]) -> tuple[list[Tensor], list[Tensor | None]]:
        locals_, globals_ = [], []
        for tex in textures:
            zl, zg = self.model.encode(tex.to(self.device).float())
            locals_.append(zl)
            globals_.append(zg)
        return locals_, globals_

    @torch.no_grad()
    def decode_tiled(self, z_local: Tensor, z_global: Tensor | None) -> Tensor:
        """Decode tile by tile with a halo of the generator's receptive radius: each output
        tile then equals the whole-canvas decode (up to float rounding), while memory stays that
        of one tile."""
        with autocast(self.precision, self.device):
            return self._decode_tiled(z_local, z_global)

    def _decode_tiled(self, z_local: Tensor, z_global: Tensor | None) -> Tensor:
        height, width = z_local.shape[2:]
        step = self.decode_tile
        if height <= step and width <= step:
            return self.model.decode(z_local, z_global).float()
        halo = self.model.config.receptive_radius
        f = LATENT_FACTOR
        out = torch.empty(1, 3, height * f, width * f, device=z_local.device)
        for y in range(0, height, step):
            for x in range(0, width, step):
                y0, x0 = max(y - halo, 0), max(x - halo, 0)
                y1, x1 = min(y + step + halo, height), min(x + step + halo, width)
                part = self.model.decode(
                    z_local[:, :, y0:y1, x0:x1],
                    None if z_global is None else z_global[:, :, y0:y1, x0:x1],
                )
                ty, tx = min(step, height - y), min(step, width - x)
                out[:, :, y * f : (y + ty) * f, x * f : (x + tx) * f] = part[
                    :, :, (y - y0) * f : (y - y0 + ty) * f, (x - x0) * f : (x - x0 + tx) * f
                ]
        return out

    def render(
        self,
        textures: list[Tensor],
        weights: Tensor,
        placements: list[Placement],
        size: tuple[int, int],
        seed: int = 0,
        encoded: tuple[list[Tensor], list[Tensor | None]] | None = None,
    ) -> Tensor:
        """The canvas of ``size`` (H, W) pixels for textures mixed by ``weights`` (K, h, w)."""
        locals_, globals_ = encoded or self.encode(textures)
        anchors: list[list[tuple[int, int]]] = [[] for _ in textures]
        for p in placements:
            anchors[p.index].append((p.y, p.x))
        generator = torch.Generator().manual_seed(seed)
        z_local, z_global = blend(locals_, globals_, weights, anchors, generator, self.cover,
                                  self.mix)  # fmt: skip
        image = self.decode_tiled(z_local, z_global)
        if self.deblock:  # cells start at pixel 0 of the canvas, so the grid's phase is known
            image = remove_grid(image, LATENT_FACTOR)
        return image[:, :, : size[0], : size[1]]

    # -- operations ----------------------------------------------------------------------------

    def strip(
        self, textures: list[Tensor], length: int, seed: int = 0, height: int | None = None
    ) -> Tensor:
        """Horizontal interpolation: textures[0] at the left end, textures[1] at the right."""
        _need(textures, 2, "a strip")
        height = height or self.resolution
        t = latent_cells(self.resolution)
        h, w = latent_cells(height), latent_cells(length)
        if length < 2 * self.resolution:
            raise GantkError(
                f"--length {length} is shorter than two textures ({2 * self.resolution} px); "
                "ask for a longer strip"
            )
        weights = strip_weights(h, w, t)
        placed = strip_placements(length, self.resolution)
        return self.render(textures, weights, placed, (height, length), seed)

    def palette(self, textures: list[Tensor], size: int, seed: int = 0) -> Tensor:
        """Four corner textures (top-left, top-right, bottom-left, bottom-right), bilinear in
        between."""
        if len(textures) != 4:
            raise GantkError(
                f"--palette takes exactly 4 textures (the corners), got {len(textures)}"
            )
        t = latent_cells(self.resolution)
        n = latent_cells(size)
        if size < 2 * self.resolution:
            raise GantkError(
                f"--size {size} is smaller than two textures ({2 * self.resolution} px); "
                "ask for a larger palette"
            )
        weights = palette_weights(n, n, t)
        return self.render(
            textures, weights, palette_placements(size, self.resolution), (size, size), seed
        )

    def dissolve(
        self, textures: list[Tensor], frames: int, size: tuple[int, int], seed: int = 0
    ) -> list[Tensor]:
        """Cross-dissolve: spatially uniform weights going from textures[0] to textures[1]; the
        same shuffle in every frame so only the blend changes over time."""
        _need(textures, 2, "a dissolve")
        if frames < 2:
            raise GantkError(f"--frames must be at least 2, got {frames}")
        h, w = latent_cells(size[0]), latent_cells(size[1])
        encoded = self.encode(textures)
        out = []
        for i in range(frames):
            weights = uniform_weights(h, w, i / (frames - 1))
            out.append(self.render(textures, weights, [], size, seed, encoded))
        return out

    def brush(
        self, background: Tensor, brush: Tensor, mask: Tensor, sigma: float, seed: int = 0
    ) -> Tensor:
        """Paint with ``brush`` texture over ``background`` (1, 3, H, W: encoded at its own size,
        the local encoder being fully convolutional) where ``mask`` (H, W in [0, 1]) is set;
        ``sigma`` (pixels) softens the brush's edge (Gaussian-weighted latents). Outside the
        brush the background is reproduced as encoded."""
        height, width = mask.shape
        if tuple(background.shape[2:]) != (height, width):
            raise GantkError(
                f"the brush mask is {width}x{height} px but the background is "
                f"{background.shape[3]}x{background.shape[2]} px; give a mask of the "
                "background's size"
            )
        h, w = latent_cells(height), latent_cells(width)
        padded = pad_to_latent_grid(background)
        encoded = self.encode([padded, brush])
        # Pad the mask exactly like the background so each latent cell averages its own 4x4.
        padded_mask = pad_to_latent_grid(mask.float()[None, None].expand(1, 3, -1, -1))[0, 0]
        grid = to_latent_grid(padded_mask, h, w)
        weights = brush_weights(grid, sigma / LATENT_FACTOR)
        return self.render(
            [padded, brush], weights, [Placement(0, 0, 0)], (height, width), seed, encoded
        )

    def fill_strip(self, textures: list[Tensor], height: int, width: int, seed: int = 0) -> Tensor:
        """Content for a region ``height`` x ``width`` px between textures[0] (left) and
        textures[1] (right): a strip with one texture beyond each side, cropped to the span
        between them."""
        margin = self.resolution
        strip = self.strip(textures, width + 2 * margin, seed, height)
        return strip[:, :, :, margin : margin + width]

    def fill(
        self,
        textures: list[Tensor],
        image: np.ndarray,
        hole: np.ndarray,
        blend_mode: str = "graphcut+poisson",
        seed: int = 0,
    ) -> np.ndarray:
        """Fill ``hole`` (bool H x W) of ``image`` (H x W x 3 float in [0, 1]) with an
        interpolation from textures[0] (left of the hole) to textures[1] (right), then hide the
        boundary: graph-cut seam in a ring around the hole, Poisson blending inside."""
        _need(textures, 2, "a fill")
        if hole.shape != image.shape[:2]:
            raise GantkError(
                f"the hole mask is {hole.shape[1]}x{hole.shape[0]} px but the image is "
                f"{image.shape[1]}x{image.shape[0]} px; give a mask of the image's size"
            )
        if not hole.any():
            raise GantkError("the hole mask is empty; paint the region to fill in white")
        ys, xs = np.nonzero(hole)
        ring = max(self.resolution // 8, 2)  # room for the seam to wander
        y0, y1 = max(ys.min() - ring, 0), min(ys.max() + 1 + ring, hole.shape[0])
        x0, x1 = max(xs.min() - ring, 0), min(xs.max() + 1 + ring, hole.shape[1])
        content = self.fill_strip(textures, y1 - y0, x1 - x0, seed)
        synth = image.copy()
        synth[y0:y1, x0:x1] = to_uint8(content).astype(np.float32) / 255.0
        region = np.zeros_like(hole)
        region[y0:y1, x0:x1] = True
        return composite(image, synth, region, hole, blend_mode)


def _need(textures: list[Tensor], count: int, what: str) -> None:
    if len(textures) < count:
        raise GantkError(
            f"{what} needs {count} textures, got {len(textures)}; give one more texture"
        )


def to_float(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> H x W x 3 float32 in [0, 1] (the post-processing's space)."""
    return to_uint8(image).astype(np.float32) / 255.0


def restore_placed(
    canvas: Tensor, textures: list[Tensor], placements: list[Placement], blend_mode: str
) -> np.ndarray:
    """The canvas with every placed texture put back exactly (graph-cut seam and/or Poisson
    blending, see postprocess.py), as H x W x 3 float in [0, 1]."""
    base = to_float(canvas)
    height, width = base.shape[:2]
    constraints = []
    for p in placements:
        tex = to_float(textures[p.index])
        y, x = p.y * LATENT_FACTOR, p.x * LATENT_FACTOR  # placements are latent cells
        y1, x1 = min(y + tex.shape[0], height), min(x + tex.shape[1], width)
        if y1 <= y or x1 <= x:
            continue
        source = np.zeros_like(base)
        source[y:y1, x:x1] = tex[: y1 - y, : x1 - x]
        region = np.zeros((height, width), dtype=bool)
        region[y:y1, x:x1] = True
        constraints.append((source, region))
    return paste_constraints(base, constraints, blend_mode)


def pad_to_latent_grid(image: Tensor) -> Tensor:
    """Reflect-pad (1, 3, H, W) so both sides are multiples of the latent factor."""
    height, width = image.shape[2:]
    pad_h = latent_cells(height) * LATENT_FACTOR - height
    pad_w = latent_cells(width) * LATENT_FACTOR - width
    if pad_h or pad_w:
        image = F.pad(image, [0, pad_w, 0, pad_h], mode="reflect")
    return image


def composite(
    base: np.ndarray, synth: np.ndarray, region: np.ndarray, keep: np.ndarray, blend_mode: str
) -> np.ndarray:
    """Put ``synth`` into ``base``: everywhere in ``keep``, and in the part of ``region`` a
    graph cut prefers; the pasted area is Poisson-blended when asked ('none': hard paste of
    ``keep``)."""
    parts = parse_blend(blend_mode)
    mask = keep
    if "graphcut" in parts:
        mask = graphcut_mask(base, synth, region, keep)
    if "poisson" in parts:
        return poisson_blend(base, synth, mask)
    out = base.copy()
    out[mask] = synth[mask]
    return out
