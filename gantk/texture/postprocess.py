"""Post-processing of Texture Mixer canvases: put user-placed source textures back seamlessly.

The network only *approximately* reproduces a source texture that the user pinned onto the
canvas, so after synthesis we paste the original back. A hard paste leaves a visible rectangle,
so, following the Texture Mixer paper, we

1. find the seam between the source texture and the network's reconstruction that is least
   visible, with a graph cut (Kwatra et al. 2003, "Graphcut textures"), and
2. hide what remains of that seam with Poisson blending (Pérez et al. 2003), which keeps the
   source's gradients but matches the canvas' values on the seam.

Both steps only touch a window around the placed texture, so their cost grows with the size of
the constraint, not of the canvas. Images are float ``HxWxC`` (or ``HxW``) numpy arrays.
"""

from __future__ import annotations

import maxflow
import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from gantk.errors import GantkError

__all__ = ["BLENDS", "graphcut_mask", "parse_blend", "paste_constraints", "poisson_blend"]

BLENDS = ("none", "graphcut", "poisson", "graphcut+poisson")

# The four neighbour offsets of the 5-point stencil (down, up, right, left).
_OFFSETS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _as_channels(image: np.ndarray, name: str) -> np.ndarray:
    """Float64 ``HxWxC`` view of an image, so grey and colour share one code path."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise GantkError(f"{name} must be an HxW or HxWxC image, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _as_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """Bool ``HxW`` mask checked against the image size (float masks: nonzero means inside)."""
    array = np.asarray(mask)
    if array.shape != shape:
        raise GantkError(f"{name} must have shape {shape} to match the image, got {array.shape}")
    return array.astype(bool, copy=False)


def _window(mask: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Bounding box of ``mask`` grown by one pixel (clipped to the image), or None if empty.

    The one-pixel margin holds the outer boundary of the mask, which both the graph cut (canvas
    terminal) and the Poisson solve (Dirichlet values) need; nothing further out matters.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, shape[0])),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, shape[1])),
    )


def _shift_valid(shape: tuple[int, int], dy: int, dx: int) -> tuple[slice, slice, slice, slice]:
    """Slices (rows, cols of p; rows, cols of p + (dy, dx)) over all in-bounds pixel pairs."""
    h, w = shape
    return (
        slice(max(-dy, 0), h - max(dy, 0)),
        slice(max(-dx, 0), w - max(dx, 0)),
        slice(max(dy, 0), h - max(-dy, 0)),
        slice(max(dx, 0), w - max(-dx, 0)),
    )


def graphcut_mask(
    canvas: np.ndarray, source: np.ndarray, region: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """Bool HxW mask of pixels taken from `source` (the rest from `canvas`).

    `region` (bool HxW): where the source is available (the placed texture's footprint);
    pixels outside `region` always come from canvas. `keep` (bool HxW, subset of region): pixels
    that must come from source (e.g. the central part of the placed texture).
    Min-cut with the Kwatra matching cost |A(s)-B(s)| + |A(t)-B(t)| (L2 over channels) on
    4-neighbour edges.

    Cutting the edge between s and t puts s and t in different images, and the cost measures how
    much the two images disagree right there, so the minimum cut runs where canvas and source
    already agree and the seam is hardest to see. A pixel outside `region` has no source value;
    on an edge from the region to the outside we count the inside pixel's difference twice,
    which prices a seam on the region's border like one inside it instead of favouring it.
    With an empty `keep` nothing forces any pixel to the source, so the mask is empty.
    """
    a = _as_channels(canvas, "canvas")
    b = _as_channels(source, "source")
    if a.shape != b.shape:
        raise GantkError(f"canvas {a.shape} and source {b.shape} must have the same shape")
    shape = a.shape[:2]
    region = _as_mask(region, shape, "region")
    keep = _as_mask(keep, shape, "keep")
    if np.any(keep & ~region):
        raise GantkError("keep must lie inside region: the source is not available elsewhere")

    result = np.zeros(shape, dtype=bool)
    window = _window(region, shape)
    if window is None or not keep.any():
        return result

    # Everything below works on the window: the graph has ~region-size nodes, not canvas-size.
    reg = region[window]
    diff = np.linalg.norm(a[window] - b[window], axis=2)
    h, w = reg.shape

    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes((h, w))
    total = 0.0
    # One directed structure per neighbour direction (right, down); symmetric=True adds the
    # reverse edge, so each undirected 4-neighbour edge is added exactly once.
    for dy, dx in ((0, 1), (1, 0)):
        ps_y, ps_x, qs_y, qs_x = _shift_valid((h, w), dy, dx)
        d_p, d_q = diff[ps_y, ps_x], diff[qs_y, qs_x]
        in_p, in_q = reg[ps_y, ps_x], reg[qs_y, qs_x]
        # Outside the region the source is undefined: borrow the partner pixel's difference.
        cost = np.where(in_p, d_p, d_q) + np.where(in_q, d_q, d_p)
        # Edges with both ends outside the region can never be cut (both are pinned to canvas).
        cost = np.where(in_p | in_q, cost, 0.0)
        weights = np.zeros((h, w))
        weights[ps_y, ps_x] = cost
        structure = np.zeros((3, 3))
        structure[1 + dy, 1 + dx] = 1.0
        graph.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
        total += float(cost.sum())

    # Hard constraints as capacities larger than any cut through the edges, which keeps the
    # arithmetic finite (an infinite capacity would turn flow updates into inf - inf).
    hard = 2.0 * total + 1.0
    kp = keep[window]
    graph.add_grid_tedges(nodes, np.where(kp, hard, 0.0), np.where(reg, 0.0, hard))
    graph.maxflow()
    # get_grid_segments is True on the sink (canvas) side.
    from_source = ~graph.get_grid_segments(nodes)
    # Zero-cost ties could in principle leave an outside pixel unpinned; the region is the law.
    result[window] = from_source & reg
    return result


def _poisson_window(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solve the discrete Poisson equation on one window; returns the window's new values.

    The window has a one-pixel non-mask margin except where it meets the image border, so a
    neighbour missing from the window is missing from the image: dropping its term is the
    Neumann condition the image border asks for.
    """
    h, w, c = target.shape
    out = target.copy()

    # A mask component that touches no non-mask pixel (e.g. the whole image) has no Dirichlet
    # values: its solution is the source up to a constant, and the linear system is singular.
    # We fix the constant by matching the target's mean there and leave it out of the solve.
    labels, count = ndi.label(mask)
    anchored = np.zeros(count + 1, dtype=bool)
    anchored[np.unique(labels[ndi.binary_dilation(~mask) & mask])] = True
    floating = mask & ~anchored[labels]
    if floating.any():
        for label in np.unique(labels[floating]):
            comp = labels == label
            out[comp] = source[comp] - source[comp].mean(axis=0) + target[comp].mean(axis=0)
        mask = mask & ~floating
    n = int(mask.sum())
    if n == 0:
        return out

    index = np.full((h, w), -1, dtype=np.int64)
    index[mask] = np.arange(n)
    degree = np.zeros(n)
    rhs = np.zeros((n, c))
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for dy, dx in _OFFSETS:
        ps_y, ps_x, qs_y, qs_x = _shift_valid((h, w), dy, dx)
        p_idx = index[ps_y, ps_x]
        q_idx = index[qs_y, qs_x]
        has = p_idx >= 0  # p unknown and neighbour q exists in the image
        p = p_idx[has]
        degree[p] += 1.0
        # Guidance field: sum over neighbours of (source_p - source_q) = -Laplacian(source).
        np.add.at(rhs, p, (source[ps_y, ps_x] - source[qs_y, qs_x])[has])
        q = q_idx[has]
        unknown = q >= 0
        rows.append(p[unknown])
        cols.append(q[unknown])
        # Known neighbour: its target value moves to the right-hand side (Dirichlet boundary).
        np.add.at(rhs, p[~unknown], target[qs_y, qs_x][has][~unknown])
    off_r = np.concatenate(rows)
    off_c = np.concatenate(cols)
    matrix = sp.csc_matrix(
        (
            np.concatenate([degree, -np.ones(off_r.size)]),
            (np.concatenate([np.arange(n), off_r]), np.concatenate([np.arange(n), off_c])),
        ),
        shape=(n, n),
    )
    # One factorisation serves every channel.
    solution = spla.splu(matrix).solve(rhs)
    out[mask] = solution
    return out


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend `source` into `target` inside `mask` by solving a Poisson equation.

    Pixels inside `mask` solve the Poisson equation with the source's gradients (guidance
    field = source Laplacian) and Dirichlet boundary = target values on the mask's outer
    boundary; outside `mask` the result equals target. Per channel, sparse solve, only
    over the masked pixels (so large images with small masks are fast). Mask touching the image
    border: use Neumann (just drop the missing neighbour).

    Matching gradients rather than values is what hides the seam: the eye is sensitive to
    sudden steps, not to a slow drift of the level across the blended area. A mask component
    that nowhere touches a non-mask pixel has no boundary values to match; it gets the source
    shifted to the target's mean over that component. The result has ``target``'s shape and
    float dtype (float64 for integer input).
    """
    t = _as_channels(target, "target")
    s = _as_channels(source, "source")
    if t.shape != s.shape:
        raise GantkError(f"target {t.shape} and source {s.shape} must have the same shape")
    shape = t.shape[:2]
    mask = _as_mask(mask, shape, "mask")
    dtype = np.asarray(target).dtype
    out_dtype = dtype if np.issubdtype(dtype, np.floating) else np.float64

    out = t.copy()
    window = _window(mask, shape)
    if window is not None:
        out[window] = _poisson_window(t[window], s[window], mask[window])
    return out.reshape(np.shape(target)).astype(out_dtype, copy=False)


def parse_blend(blend: str) -> frozenset[str]:
    """The set of steps named by a blend string; order of the '+'-joined parts does not matter."""
    parts = [part.strip().lower() for part in str(blend).split("+")]
    steps = frozenset(parts)
    valid = {"none", "graphcut", "poisson"}
    if len(steps) != len(parts) or not steps <= valid or ("none" in steps and len(steps) > 1):
        raise GantkError(f"unknown blend {blend!r}; valid values: {', '.join(BLENDS)}")
    return steps


def _keep_core(region: np.ndarray) -> np.ndarray:
    """Region eroded by a quarter of its bounding box's smaller side (the part never seamed).

    A chessboard distance transform equals repeated 3x3 erosion but costs one pass. The pad
    makes the image border count as outside, as binary erosion does by default.
    """
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return region.copy()
    radius = min(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) // 4
    depth = ndi.distance_transform_cdt(np.pad(region, 1), metric="chessboard")[1:-1, 1:-1]
    return depth > radius


def _extend_source(source: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Source with the pixels just outside `region` set to their nearest region pixel.

    A placed source is zero outside its footprint, and Poisson blending takes gradients across
    the mask's border from the source: against those zeros it would rebuild the very step we
    want to hide. Replicating the edge makes those gradients zero, so the solution meets the
    canvas smoothly there. Only the window around the region is touched (that is all the
    solver reads).
    """
    out = np.array(source, dtype=np.float64)
    window = _window(region, region.shape)
    if window is None:
        return out
    reg = region[window]
    _, (iy, ix) = ndi.distance_transform_edt(~reg, return_indices=True)
    out[window] = out[window][iy, ix]
    return out


def paste_constraints(
    canvas: np.ndarray, sources: list[tuple[np.ndarray, np.ndarray]], blend: str
) -> np.ndarray:
    """Put user-placed source textures back onto a synthesised canvas.

    Apply constraints: each entry (source_canvas HxWx3 — the source texture placed in a
    full-size canvas, zeros elsewhere — , region bool HxW). `blend` is a '+'-joined subset of
    {'none','graphcut','poisson'}: 'none' returns canvas unchanged; 'graphcut' alone replaces
    pixels chosen by graphcut_mask (keep = region eroded by 1/4 of the region's smaller side);
    'poisson' alone Poisson-blends the whole region; 'graphcut+poisson' does the graph cut, then
    Poisson-blends the source into the canvas inside the graph-cut mask (so the seam is hidden).

    Constraints are applied in order, each against the canvas as left by the previous ones, so
    a later constraint wins where two overlap. Returns a new array; `canvas` is not modified.
    Raises GantkError for an unknown blend string.
    """
    steps = parse_blend(blend)
    out = np.array(canvas, dtype=np.result_type(np.asarray(canvas).dtype, np.float32))
    if steps == {"none"}:
        return out
    for source, region in sources:
        src = np.asarray(source)
        if src.shape != out.shape:
            raise GantkError(f"source {src.shape} must have the canvas shape {out.shape}")
        reg = _as_mask(region, out.shape[:2], "region")
        # Without the graph cut the whole footprint is the blend / paste area.
        mask = graphcut_mask(out, src, reg, _keep_core(reg)) if "graphcut" in steps else reg
        if "poisson" in steps:
            out = poisson_blend(out, _extend_source(src, reg), mask)
        else:
            out[mask] = src[mask]
    return out
