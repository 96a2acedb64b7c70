"""Graph-cut seams and Poisson blending used to put source textures back onto a canvas."""

from __future__ import annotations

import numpy as np
import pytest

from gantk.errors import GantkError
from gantk.texture.postprocess import BLENDS, graphcut_mask, paste_constraints, poisson_blend


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _box(shape: tuple[int, int], top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _dense_poisson(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference solve written pixel by pixel: one equation per masked pixel, dense matrix.

    Same discrete equation as the paper, built independently of the vectorised code:
    |N_p| f_p - sum_{q in N_p, q masked} f_q
        = sum_{q in N_p, q unmasked} target_q + sum_{q in N_p} (source_p - source_q),
    with N_p the in-image 4-neighbours (neighbours off the image are dropped: Neumann).
    """
    h, w, c = target.shape
    pixels = [(y, x) for y in range(h) for x in range(w) if mask[y, x]]
    number = {p: i for i, p in enumerate(pixels)}
    a = np.zeros((len(pixels), len(pixels)))
    b = np.zeros((len(pixels), c))
    for i, (y, x) in enumerate(pixels):
        for qy, qx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if not (0 <= qy < h and 0 <= qx < w):
                continue
            a[i, i] += 1
            b[i] += source[y, x] - source[qy, qx]
            if mask[qy, qx]:
                a[i, number[(qy, qx)]] -= 1
            else:
                b[i] += target[qy, qx]
    out = target.copy()
    solution = np.linalg.solve(a, b)
    for i, (y, x) in enumerate(pixels):
        out[y, x] = solution[i]
    return out


# --- Poisson -------------------------------------------------------------------------------


def test_poisson_source_offset_by_constant_gives_target() -> None:
    # Equal gradients and target boundary values: the unique solution is the target itself,
    # so the constant offset of the source must vanish completely.
    target = _rng().random((20, 24, 3))
    mask = _box((20, 24), 4, 15, 5, 19)
    out = poisson_blend(target, target + 0.7, mask)
    np.testing.assert_allclose(out, target, atol=1e-6)


def test_poisson_source_equal_target_gives_target() -> None:
    target = _rng(1).random((16, 16, 3))
    # Irregular mask touching the image border exercises the Neumann rows too.
    mask = _rng(2).random((16, 16)) < 0.5
    mask[0, :] = True
    mask[:, 0] = False
    out = poisson_blend(target, target, mask)
    np.testing.assert_allclose(out, target, atol=1e-9)


def test_poisson_leaves_outside_of_mask_untouched() -> None:
    rng = _rng(3)
    target = rng.random((18, 18, 3)).astype(np.float32)
    source = rng.random((18, 18, 3)).astype(np.float32) * 5
    mask = _box((18, 18), 3, 12, 6, 15)
    out = poisson_blend(target, source, mask)
    assert out.dtype == np.float32 and out.shape == target.shape
    np.testing.assert_array_equal(out[~mask], target[~mask])
    # A different source really changes the inside (otherwise the test above proves nothing).
    assert np.abs(out[mask] - target[mask]).max() > 0.1


@pytest.mark.parametrize("touch_border", [False, True])
def test_poisson_matches_dense_reference(touch_border: bool) -> None:
    rng = _rng(4)
    target = rng.random((6, 6, 3))
    source = rng.random((6, 6, 3)) * 2 - 0.5
    mask = _box((6, 6), 1, 5, 1, 5)
    mask[1, 1] = False  # not a plain rectangle
    if touch_border:
        mask[0, 2:4] = True
        mask[3, 5] = True
    expected = _dense_poisson(target, source, mask)
    out = poisson_blend(target, source, mask)
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_poisson_grey_images() -> None:
    target = _rng(5).random((6, 6))
    source = _rng(6).random((6, 6))
    mask = _box((6, 6), 2, 5, 1, 4)
    out = poisson_blend(target, source, mask)
    assert out.shape == (6, 6)
    expected = _dense_poisson(target[..., None], source[..., None], mask)[..., 0]
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_poisson_mask_covering_image_keeps_source_shape_at_target_mean() -> None:
    # No boundary values at all: the solution is only defined up to a constant.
    target = _rng(7).random((8, 8, 3))
    source = _rng(8).random((8, 8, 3)) + 3.0
    out = poisson_blend(target, source, np.ones((8, 8), dtype=bool))
    np.testing.assert_allclose(out - out.mean(axis=(0, 1)), source - source.mean(axis=(0, 1)))
    np.testing.assert_allclose(out.mean(axis=(0, 1)), target.mean(axis=(0, 1)))


# --- graph cut -----------------------------------------------------------------------------


def test_graphcut_respects_keep_and_region() -> None:
    rng = _rng(9)
    canvas = rng.random((32, 32, 3))
    source = rng.random((32, 32, 3))
    region = _box((32, 32), 6, 26, 4, 28)
    keep = _box((32, 32), 12, 20, 10, 22)
    mask = graphcut_mask(canvas, source, region, keep)
    assert mask.dtype == bool and mask.shape == (32, 32)
    assert mask[keep].all()
    assert not mask[~region].any()


def test_graphcut_seam_follows_stripe_where_images_agree() -> None:
    # Canvas and source differ everywhere except in columns 12 and 13. The seam has to cross
    # every row between the kept columns (0-3) and the outside of the region (24+); the only
    # zero-cost place is the edge between columns 12 and 13, so the optimum is known exactly.
    rng = _rng(10)
    canvas = rng.random((24, 32, 3))
    source = canvas + 0.2 + rng.random((24, 32, 3))
    source[:, 12:14] = canvas[:, 12:14]
    region = _box((24, 32), 0, 24, 0, 24)
    keep = _box((24, 32), 0, 24, 0, 4)
    mask = graphcut_mask(canvas, source, region, keep)
    np.testing.assert_array_equal(mask, _box((24, 32), 0, 24, 0, 13))


def test_graphcut_seam_avoids_stripe_of_disagreement() -> None:
    # Identical images except a vertical stripe of large difference: any seam that does not
    # touch the stripe is free, so the cut must never separate a stripe pixel from a neighbour.
    rng = _rng(11)
    canvas = rng.random((24, 32, 3))
    source = canvas.copy()
    source[:, 10:12] += 5.0
    region = _box((24, 32), 0, 24, 0, 24)
    keep = _box((24, 32), 0, 24, 0, 4)
    mask = graphcut_mask(canvas, source, region, keep)
    stripe_and_neighbours = mask[:, 9:13]
    assert (stripe_and_neighbours == stripe_and_neighbours[0, 0]).all()
    assert mask[keep].all() and not mask[~region].any()


def test_graphcut_rejects_keep_outside_region() -> None:
    image = np.zeros((8, 8, 3))
    with pytest.raises(GantkError, match="keep"):
        graphcut_mask(image, image, _box((8, 8), 2, 6, 2, 6), _box((8, 8), 0, 3, 0, 3))


# --- paste_constraints ---------------------------------------------------------------------


def _placed_texture(
    seed: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canvas, placed source (zeros outside), region and keep core for a 32x32 box at (16, 16).

    Inside the region the source equals the canvas plus small noise near the region's border
    and a large bump in the middle: the network reproduced the texture's surroundings well but
    not its centre, which is the situation the post-processing is for.
    """
    rng = _rng(seed)
    canvas = rng.random((64, 64, 3)) * 0.5 + 0.25
    region = _box((64, 64), 16, 48, 16, 48)
    keep = _box((64, 64), 24, 40, 24, 40)  # region eroded by 32 // 4 = 8
    y, x = np.mgrid[0:64, 0:64]
    # Narrow enough (sigma 3) to be below 0.005 anywhere outside keep, where the seam lies.
    bump = 0.4 * np.exp(-((y - 31.5) ** 2 + (x - 31.5) ** 2) / (2 * 3.0**2))
    source = canvas + bump[..., None] + 0.002 * rng.standard_normal((64, 64, 3))
    source[~region] = 0.0
    return canvas, source, region, keep


def test_paste_none_returns_canvas_unchanged() -> None:
    canvas, source, region, _ = _placed_texture()
    out = paste_constraints(canvas, [(source, region)], "none")
    np.testing.assert_array_equal(out, canvas)
    assert out is not canvas


def test_paste_unknown_blend_lists_valid_values() -> None:
    canvas, source, region, _ = _placed_texture()
    with pytest.raises(GantkError) as info:
        paste_constraints(canvas, [(source, region)], "graphcut+feather")
    message = str(info.value)
    assert "\n" not in message
    for name in BLENDS:
        assert name in message


def test_paste_graphcut_copies_source_in_keep_and_nothing_outside_region() -> None:
    canvas, source, region, keep = _placed_texture()
    out = paste_constraints(canvas, [(source, region)], "graphcut")
    np.testing.assert_array_equal(out[keep], source[keep])
    np.testing.assert_array_equal(out[~region], canvas[~region])
    # Every pixel comes from one of the two images.
    assert np.all((out == canvas).all(axis=2) | (out == source).all(axis=2))


def test_paste_graphcut_poisson_reproduces_source_in_keep() -> None:
    canvas, source, region, keep = _placed_texture()
    out = paste_constraints(canvas, [(source, region)], "graphcut+poisson")
    np.testing.assert_array_equal(out[~region], canvas[~region])
    # The seam lies where the images agree up to the noise and the bump's tail (together
    # < 0.015), and the correction, a harmonic function, is bounded by that boundary mismatch
    # (maximum principle), so inside keep the result is the source ...
    np.testing.assert_allclose(out[keep], source[keep], atol=0.02)
    # ... while the canvas there was far from the source: the source was really put back.
    assert np.abs(canvas[keep] - source[keep]).max() > 0.3


def test_paste_poisson_hides_the_region_border() -> None:
    # The placed source is zero outside its footprint; blending must not rebuild that edge.
    canvas, source, region, _ = _placed_texture()
    out = paste_constraints(canvas, [(source, region)], "poisson")
    np.testing.assert_array_equal(out[~region], canvas[~region])
    assert out[region].min() > 0.1
    # Across the region's left border the jump is no larger than the canvas' own texture.
    jump = np.abs(out[16:48, 16] - out[16:48, 15]).max()
    assert jump < np.abs(np.diff(canvas, axis=1)).max()


def test_paste_later_constraint_wins_where_they_overlap() -> None:
    canvas, source, region, keep = _placed_texture()
    other_region = _box((64, 64), 20, 44, 28, 60)
    other = np.where(other_region[..., None], 0.9, 0.0) * np.ones(3)
    out = paste_constraints(canvas, [(source, region), (other, other_region)], "graphcut")
    other_keep = _box((64, 64), 26, 38, 34, 54)  # eroded by 24 // 4 = 6
    np.testing.assert_array_equal(out[other_keep], 0.9)
    first_only = keep & ~other_region
    np.testing.assert_array_equal(out[first_only], source[first_only])


def test_paste_blend_parts_in_any_order() -> None:
    canvas, source, region, _ = _placed_texture()
    a = paste_constraints(canvas, [(source, region)], "graphcut+poisson")
    b = paste_constraints(canvas, [(source, region)], "poisson+graphcut")
    np.testing.assert_array_equal(a, b)
