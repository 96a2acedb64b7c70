"""Latent-space operations of the Texture Mixer: tiling, random shuffling, spatially varying
interpolation weights (strips, palettes, brushes, dissolves), and the canvas composition that
turns K encoded textures plus K weight maps into one latent tensor.

Shapes: local latents are (B, C, h, w), weight maps (K, h, w) at latent resolution (a quarter of
the image's), global codes (B, G).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def tile(z: Tensor, rows: int, cols: int) -> Tensor:
    return z.repeat(1, 1, rows, cols)


def shuffle_scales(tile_size: int) -> list[int]:
    """Cell sizes 1, 2, 4, ... up to half the tile: coarse swaps break up repetition, fine ones
    soften seams between tiles."""
    top = max(tile_size // 2, 1)
    return [2**i for i in range(int(math.log2(top)) + 1)]


def _sweep(cells: int, generator: torch.Generator) -> Tensor:
    """A permutation of ``cells`` from swapping each neighbour pair with probability 1/2, first
    forwards then backwards (the paper's top-down + bottom-up sweeps)."""
    order = list(range(cells))
    coins = (torch.rand(2 * max(cells - 1, 0), generator=generator) < 0.5).tolist()
    pairs = list(range(cells - 1)) + list(reversed(range(cells - 1)))
    for i, flip in zip(pairs, coins, strict=True):
        if flip:
            order[i], order[i + 1] = order[i + 1], order[i]
    return torch.tensor(order, dtype=torch.long)


def _axis_permutation(length: int, scales: list[int], generator: torch.Generator) -> Tensor:
    """Pixel index map along one axis after sweeps at every scale, coarsest first
    (P = P_0 o P_1 o ... o P_n applies P_n first). Trailing pixels that do not fill a whole cell
    stay in place."""
    index = torch.arange(length)
    for s in sorted(scales, reverse=True):
        cells = length // s
        if cells < 2:
            continue
        cell_order = _sweep(cells, generator)
        step = torch.arange(length)
        step[: cells * s] = (cell_order[:, None] * s + torch.arange(s)[None, :]).reshape(-1)
        index = index[step]
    return index


def random_shuffle(z: Tensor, tile_size: int, generator: torch.Generator) -> Tensor:
    """Shuffle every sample independently by row and column swaps at all scales."""
    scales = shuffle_scales(tile_size)
    out = torch.empty_like(z)
    for b in range(z.shape[0]):
        rows = _axis_permutation(z.shape[2], scales, generator).to(z.device)
        cols = _axis_permutation(z.shape[3], scales, generator).to(z.device)
        out[b] = z[b][:, rows][:, :, cols]
    return out


def place(canvas: Tensor, z: Tensor, anchors: list[tuple[int, int]]) -> Tensor:
    """Write the unshuffled latent ``z`` (B, C, t, t) at each (y, x) anchor of ``canvas``
    (clipped at the borders): the user's texture is reproduced exactly where it was placed."""
    canvas = canvas.clone()
    t_h, t_w = z.shape[2:]
    height, width = canvas.shape[2:]
    for y, x in anchors:
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + t_h, height), min(x + t_w, width)
        if y1 > y0 and x1 > x0:
            canvas[:, :, y0:y1, x0:x1] = z[:, :, y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def training_tiles(z: Tensor, generator: torch.Generator, shuffle: bool = True) -> Tensor:
    """The interpolation task's latent: z tiled 3x3, shuffled, the four corner tiles restored
    (so the network learns to transition from an exact constraint into shuffled texture)."""
    t = z.shape[2]
    tiled = tile(z, 3, 3)
    if not shuffle:
        return tiled
    shuffled = random_shuffle(tiled, t, generator)
    return place(shuffled, z, [(0, 0), (0, 2 * t), (2 * t, 0), (2 * t, 2 * t)])


COVERS = ("patches", "rows", "none")
MIXES = ("select", "blend")


def patch_cover(
    z: Tensor, height: int, width: int, origin: tuple[int, int], generator: torch.Generator
) -> Tensor:
    """A (height, width) latent canvas of square patches, each a random crop of z (half its
    side), on a grid aligned to ``origin``: the texture without the whole-tile repetition, and
    without the row and column swaps of the paper's shuffle, whose joins run straight across
    the canvas and show as streaks when the generator cannot hide them."""
    t_h, t_w = z.shape[2:]
    patch = max(min(t_h, t_w) // 2, 1)
    y0, x0 = origin
    dy, dx = (-y0) % patch, (-x0) % patch  # the grid starts a whole number of patches away
    rows, cols = -(-(height + dy) // patch), -(-(width + dx) // patch)
    tops = torch.randint(0, t_h - patch + 1, (rows, cols), generator=generator).tolist()
    lefts = torch.randint(0, t_w - patch + 1, (rows, cols), generator=generator).tolist()
    big = z.new_empty(z.shape[0], z.shape[1], rows * patch, cols * patch)
    for r in range(rows):
        for c in range(cols):
            y, x = tops[r][c], lefts[r][c]
            big[:, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = z[
                :, :, y : y + patch, x : x + patch
            ]
    return big[:, :, dy : dy + height, dx : dx + width]


def cover(
    z: Tensor,
    height: int,
    width: int,
    anchors: list[tuple[int, int]],
    generator: torch.Generator | None,
    kind: str = "rows",
) -> Tensor:
    """z over a (height, width) latent canvas, aligned to the first anchor, with the exact z at
    every anchor. ``kind``: ``rows`` (the paper's): z tiled, then rows and columns shuffled;
    ``patches``: random patches of z (:func:`patch_cover`); ``none``: z tiled. No
    ``generator``: tiled, whatever the kind."""
    t_h, t_w = z.shape[2:]
    y0, x0 = anchors[0] if anchors else (0, 0)
    if generator is not None and kind == "patches":
        return place(patch_cover(z, height, width, (y0, x0), generator), z, anchors)
    rows, cols = -(-(height + t_h) // t_h) + 1, -(-(width + t_w) // t_w) + 1
    big = tile(z, rows, cols)
    dy, dx = (-y0) % t_h, (-x0) % t_w
    canvas = big[:, :, dy : dy + height, dx : dx + width]
    if generator is not None and kind == "rows":
        canvas = random_shuffle(canvas, t_h, generator)
    return place(canvas, z, anchors)


# How selection draws its regions: the noise's grain and the feathering of region edges, in
# latent cells. Measured on 192 held-out pairs (the v2 WIP, 12019 steps; docs/models.md): a
# feather of 1.0 against 0.5 gave CGD 1.107 / 1.110, CSS 0.325 / 0.341 and sharpness 0.95 /
# 1.30 (0.5 outlines every region: edge energy the textures do not have; 0.25 more so), and the
# same order on 96 pairs of training textures. 48 pairs at 6750 steps had put 0.5 ahead (CGD
# 1.132 / 1.144), within their noise. Coarser regions, on the 96 training-texture pairs: grains
# of 9 / 12 cells against 6, CGD 1.103 / 1.130 against 1.099, CSS 0.405 / 0.318 against 0.333.
SELECT_GRAIN = 6
SELECT_FEATHER = 1.0


def select_weights(weights: Tensor, generator: torch.Generator) -> Tensor:
    """Weights (K, h, w) turned into regions: each latent cell goes to one texture, the largest
    of the log-weights plus smooth random noise with Gumbel marginals (a smooth Gaussian field
    per texture, made Gumbel through its quantiles): the Gumbel-max trick, so every cell goes to
    texture k with probability w_k, while neighbouring cells agree, which draws organic blobs;
    edges feathered over about a cell (SELECT_FEATHER). Cells where one weight is 1 (placed
    textures) keep it exactly.

    Averaging the latents of different textures (``blend``) decodes, with a generator of the
    bundled model's size, to a washed-out mixture that is neither texture; selecting keeps
    every point a texture, and the interpolation is in how much of each there is."""
    count, height, width = weights.shape
    grid = (max(2, -(-height // SELECT_GRAIN) + 1), max(2, -(-width // SELECT_GRAIN) + 1))
    noise = torch.randn(count, *grid, generator=generator, dtype=torch.float64)
    field = F.interpolate(noise[None], size=(height, width), mode="bicubic", align_corners=True)[0]
    # Interpolation lowers the variance between grid points: back to a standard normal, then
    # to a standard Gumbel through the normal's CDF and the Gumbel's quantile function.
    field = (field - field.mean()) / field.std().clamp_min(1e-12)
    uniform = (0.5 * (1 + torch.erf(field / 2**0.5))).clamp(1e-12, 1 - 1e-12)
    gumbel = -torch.log(-torch.log(uniform))
    score = weights.double().clamp_min(1e-12).log() + gumbel.to(weights.device)
    regions = F.one_hot(score.argmax(0), count).permute(2, 0, 1).float()
    radius = max(math.ceil(3 * SELECT_FEATHER), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=weights.device)
    kernel = torch.exp(-(x**2) / (2 * SELECT_FEATHER**2))
    kernel = (kernel / kernel.sum()).to(regions)
    soft = F.pad(regions[:, None], [radius] * 4, mode="replicate")
    soft = F.conv2d(F.conv2d(soft, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))[:, 0]
    soft = soft / soft.sum(0, keepdim=True)
    fixed = weights >= 1 - 1e-6
    return torch.where(fixed.any(0, keepdim=True), fixed.to(soft), soft)


# -- weight maps (K, h, w); they sum to one over K ---------------------------------------------


def ramp(length: int, fixed: int) -> Tensor:
    """0 over the first ``fixed`` cells, 1 over the last ``fixed``, linear in between: the
    transition runs between two placed textures, which stay exact."""
    span = max(length - 2 * fixed, 1)
    pos = torch.arange(length, dtype=torch.float32) + 0.5 - fixed
    return (pos / span).clamp(0, 1)


def strip_weights(height: int, width: int, fixed: int) -> Tensor:
    """Horizontal interpolation: texture 0 on the left, texture 1 on the right."""
    u = ramp(width, fixed)[None, :].expand(height, width)
    return torch.stack([1 - u, u])


def palette_weights(height: int, width: int, fixed: int) -> Tensor:
    """Bilinear weights for four corner textures: top-left, top-right, bottom-left,
    bottom-right."""
    u = ramp(width, fixed)[None, :]
    v = ramp(height, fixed)[:, None]
    return torch.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v])


def uniform_weights(height: int, width: int, alpha: float) -> Tensor:
    """A dissolve frame: spatially uniform, ``alpha`` of texture 1."""
    a = torch.full((height, width), float(alpha))
    return torch.stack([1 - a, a])


def brush_weights(mask: Tensor, sigma: float) -> Tensor:
    """Gaussian brush: the painted mask (h, w) in [0, 1] blurred with ``sigma`` latent cells.
    Full weight replaces the background's latent, lower weights blend proportionally."""
    m = mask.float()[None, None]
    if sigma > 0:
        radius = max(math.ceil(3 * sigma), 1)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        m = F.pad(m, [radius] * 4, mode="replicate")
        m = F.conv2d(m, kernel.view(1, 1, 1, -1))
        m = F.conv2d(m, kernel.view(1, 1, -1, 1))
    m = m[0, 0].clamp(0, 1)
    return torch.stack([1 - m, m])


def to_latent_grid(mask: Tensor, height: int, width: int) -> Tensor:
    """An image-resolution mask (H, W) averaged onto the (height, width) latent grid."""
    m = mask.float()[None, None]
    return F.adaptive_avg_pool2d(m, (height, width))[0, 0]


def blend(
    locals_: list[Tensor],
    globals_: list[Tensor | None],
    weights: Tensor,
    anchors: list[list[tuple[int, int]]],
    generator: torch.Generator | None,
    cover_kind: str = "rows",
    mix: str = "blend",
) -> tuple[Tensor, Tensor | None]:
    """The canvas latent: sum_k w_k * cover(z_k) and the spatially varying global code
    sum_k w_k * g_k, with ``mix`` select the weights first made regions (:func:`select_weights`,
    which needs ``generator``). Accumulates one texture at a time so memory stays at two
    canvases."""
    if mix == "select" and generator is not None:
        weights = select_weights(weights, generator)
    height, width = weights.shape[1:]
    z_local: Tensor | None = None
    z_global: Tensor | None = None
    for k, (zl, zg) in enumerate(zip(locals_, globals_, strict=True)):
        w = weights[k].to(zl.device)[None, None]
        part = cover(zl, height, width, anchors[k], generator, cover_kind) * w
        z_local = part if z_local is None else z_local + part
        if zg is not None:
            g = zg[:, :, None, None] * w
            z_global = g if z_global is None else z_global + g
    assert z_local is not None  # at least one texture: callers check
    return z_local, z_global
