"""Texture Mixer: latent operations, networks, tiled decoding, Gram statistics, the mixing
operations (strip, palette, dissolve, brush, fill) and training with exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_TEXTURE_MIXER
from PIL import Image

from gantk.errors import GantkError
from gantk.nn.layers import EqualConv2d
from gantk.texture.gram import GramNet, gram_distance, gram_matrix, load_gram_net
from gantk.texture.latent import (
    blend,
    brush_weights,
    cover,
    palette_weights,
    ramp,
    random_shuffle,
    shuffle_scales,
    strip_weights,
    to_latent_grid,
    training_tiles,
    uniform_weights,
)
from gantk.texture.mixing import (
    Mixer,
    Placement,
    pad_to_latent_grid,
    palette_placements,
    restore_placed,
    strip_placements,
    to_float,
)
from gantk.texture.networks import (
    TextureCritic,
    TextureMixer,
    TextureMixerConfig,
    spread,
)
from gantk.texture.train import (
    TextureTrainConfig,
    TextureTrainer,
    load_texture_mixer,
    save_texture_mixer,
    start_or_resume,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TINY_TEXTURE_MIXER


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0, **overrides: int | str) -> TextureMixer:
    """A tiny random Texture Mixer with random (not zero) biases, in eval mode."""
    torch.manual_seed(seed)
    model = TextureMixer(TextureMixerConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.3)
    return model.eval().requires_grad_(False)


def _texture(seed: int, size: int = 16) -> torch.Tensor:
    """A structured 1 x 3 x size x size texture in [-1, 1] (stripes plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    base = (
        np.sin(xx / (1.5 + seed) + yy / (2.0 + seed))[None]
        * np.array([0.8, 0.4, -0.6])[:, None, None]
    )
    noise = rng.normal(0.0, 0.2, (3, size, size))
    return torch.from_numpy(np.clip(base + noise, -1, 1)).float()[None]


# --- shuffling ------------------------------------------------------------------------------


def test_shuffle_scales_are_powers_of_two_up_to_half_the_tile() -> None:
    assert shuffle_scales(1) == [1]
    assert shuffle_scales(2) == [1]
    assert shuffle_scales(4) == [1, 2]
    assert shuffle_scales(8) == [1, 2, 4]
    assert shuffle_scales(32) == [1, 2, 4, 8, 16]


def test_random_shuffle_is_a_permutation_of_each_sample() -> None:
    z = torch.arange(2 * 3 * 12 * 10, dtype=torch.float32).reshape(2, 3, 12, 10)
    out = random_shuffle(z, 4, _gen(0))
    assert out.shape == z.shape
    assert not torch.equal(out, z)
    # Every (unique) value appears exactly once, and stays in its own sample and channel.
    assert torch.equal(out.flatten().sort().values, z.flatten())
    for b in range(2):
        for c in range(3):
            assert torch.equal(out[b, c].flatten().sort().values, z[b, c].flatten())
    # The same spatial permutation for every channel of one sample: channel offsets persist.
    assert torch.equal(out[:, 1] - out[:, 0], z[:, 1] - z[:, 0])


def _sweep_reference(cells: int, coins: list[bool]) -> list[int]:
    """The paper's sweep: neighbour swaps with probability 1/2, forward then backward."""
    order = list(range(cells))
    positions = list(range(cells - 1)) + list(range(cells - 2, -1, -1))
    for pos, flip in zip(positions, coins, strict=True):
        if flip:
            order[pos], order[pos + 1] = order[pos + 1], order[pos]
    return order


def _shuffle_reference(length: int, scales: list[int], gen: torch.Generator) -> np.ndarray:
    """Moves whole cells of an index array, coarsest scale first (P_n is applied first);
    the pixels after the last whole cell stay where they are."""
    arr = np.arange(length)
    for s in sorted(scales, reverse=True):
        cells = length // s
        if cells < 2:
            continue
        coins = (torch.rand(2 * (cells - 1), generator=gen) < 0.5).tolist()
        order = _sweep_reference(cells, coins)
        moved = [arr[k * s : (k + 1) * s] for k in order]
        arr = np.concatenate([*moved, arr[cells * s :]])
    return arr


@pytest.mark.parametrize(("tile_size", "height", "width"), [(2, 5, 7), (4, 13, 9), (8, 16, 11)])
def test_random_shuffle_matches_a_cell_by_cell_reference(
    tile_size: int, height: int, width: int
) -> None:
    z = torch.randn(2, 3, height, width, generator=_gen(5))
    out = random_shuffle(z, tile_size, _gen(7))
    ref_gen = _gen(7)
    scales = shuffle_scales(tile_size)
    for b in range(2):
        rows = torch.from_numpy(_shuffle_reference(height, scales, ref_gen))
        cols = torch.from_numpy(_shuffle_reference(width, scales, ref_gen))
        assert torch.equal(out[b], z[b][:, rows][:, :, cols])


def test_random_shuffle_at_scale_one_only_permutes_rows_and_columns() -> None:
    # Value = 100 * row + column: every output row must be one input row (with its columns
    # permuted the same way in every row), never a mix of rows.
    rows, cols = 6, 9
    z = (100 * torch.arange(rows)[:, None] + torch.arange(cols)[None, :]).float()[None, None]
    out = random_shuffle(z, 2, _gen(3))[0, 0]
    source_rows = (out // 100).long()
    source_cols = (out % 100).long()
    assert torch.equal(source_rows, source_rows[:, :1].expand(rows, cols))
    assert torch.equal(source_cols, source_cols[:1].expand(rows, cols))
    assert sorted(source_rows[:, 0].tolist()) == list(range(rows))
    assert sorted(source_cols[0].tolist()) == list(range(cols))


def test_random_shuffle_depends_on_the_generator_only() -> None:
    z = torch.randn(1, 2, 16, 16, generator=_gen(0))
    a = random_shuffle(z, 8, _gen(1))
    assert torch.equal(a, random_shuffle(z, 8, _gen(1)))
    assert not torch.equal(a, random_shuffle(z, 8, _gen(2)))
    # Samples of a batch are shuffled independently.
    pair = random_shuffle(torch.cat([z, z]), 8, _gen(1))
    assert not torch.equal(pair[0], pair[1])


# --- tiles, cover, weights, blend ------------------------------------------------------------


def test_training_tiles_keep_the_corners_and_shuffle_the_rest() -> None:
    z = torch.randn(2, 3, 4, 4, generator=_gen(0))
    plain = training_tiles(z, _gen(1), shuffle=False)
    assert torch.equal(plain, z.repeat(1, 1, 3, 3))
    out = training_tiles(z, _gen(1))
    assert out.shape == (2, 3, 12, 12)
    for y, x in ((0, 0), (0, 8), (8, 0), (8, 8)):
        assert torch.equal(out[:, :, y : y + 4, x : x + 4], z)
    assert not torch.equal(out, plain)
    # Shuffling only moves values: every value of the shuffled canvas comes from z.
    assert torch.isin(out, z).all()


def test_cover_is_periodic_and_exact_at_aligned_anchors() -> None:
    z = torch.randn(1, 2, 4, 4, generator=_gen(0))
    anchors = [(1, 2), (5, 10)]  # both congruent to (1, 2) modulo the tile size
    out = cover(z, 11, 14, anchors, None)
    ys = (torch.arange(11) - 1) % 4
    xs = (torch.arange(14) - 2) % 4
    assert torch.equal(out, z[:, :, ys][:, :, :, xs])
    for y, x in anchors:
        assert torch.equal(out[:, :, y : y + 4, x : x + 4], z)
    assert torch.equal(out[:, :, :, :-4], out[:, :, :, 4:])  # period 4 in x
    assert torch.equal(out[:, :, :-4], out[:, :, 4:])  # and in y


def test_cover_places_z_exactly_even_off_the_grid_and_clips_at_borders() -> None:
    z = torch.randn(1, 2, 4, 4, generator=_gen(0))
    anchors = [(0, 0), (3, 5), (8, 12)]  # the last one hangs over the bottom-right corner
    for generator in (None, _gen(4)):
        out = cover(z, 10, 14, anchors, generator)
        assert torch.equal(out[:, :, 0:4, 0:4], z)
        assert torch.equal(out[:, :, 3:7, 5:9], z)
        assert torch.equal(out[:, :, 8:10, 12:14], z[:, :, :2, :2])
    shuffled = cover(z, 10, 14, [(0, 0)], _gen(4))
    assert torch.equal(shuffled[:, :, :4, :4], z)
    assert not torch.equal(shuffled, cover(z, 10, 14, [(0, 0)], None))


def test_ramp_is_zero_then_linear_then_one() -> None:
    r = ramp(12, 3)
    assert r.shape == (12,)
    assert torch.equal(r[:3], torch.zeros(3)) and torch.equal(r[-3:], torch.ones(3))
    middle = r[3:9]
    assert (middle.diff() > 0).all() and (middle > 0).all() and (middle < 1).all()
    assert torch.allclose(middle.diff(), torch.full((5,), 1 / 6))  # linear
    assert torch.allclose(r + r.flip(0), torch.ones(12))  # symmetric about the middle


def test_strip_weights_sum_to_one_and_fix_the_ends() -> None:
    w = strip_weights(5, 14, 4)
    assert w.shape == (2, 5, 14)
    assert torch.allclose(w.sum(0), torch.ones(5, 14))
    assert torch.equal(w[0, :, :4], torch.ones(5, 4)) and torch.equal(
        w[1, :, -4:], torch.ones(5, 4)
    )
    assert torch.equal(w[1, :, :4], torch.zeros(5, 4))
    assert (w[1].diff(dim=1) >= 0).all() and (w[1].diff(dim=0) == 0).all()


def test_palette_weights_are_bilinear_over_four_fixed_corners() -> None:
    n, t = 12, 3
    w = palette_weights(n, n, t)
    assert w.shape == (4, n, n)
    assert torch.allclose(w.sum(0), torch.ones(n, n))
    corners = [(slice(0, t), slice(0, t)), (slice(0, t), slice(n - t, n)),
               (slice(n - t, n), slice(0, t)), (slice(n - t, n), slice(n - t, n))]  # fmt: skip
    for k, (ys, xs) in enumerate(corners):
        assert torch.equal(w[k][ys, xs], torch.ones(t, t))
        for other in range(4):
            if other != k:
                assert torch.equal(w[other][ys, xs], torch.zeros(t, t))
    assert (w[0].diff(dim=0) <= 0).all() and (w[0].diff(dim=1) <= 0).all()
    assert (w[3].diff(dim=0) >= 0).all() and (w[3].diff(dim=1) >= 0).all()
    u = ramp(n, t)
    assert torch.allclose(w[1], (1 - u)[:, None] * u[None, :])  # top-right = (1-v) * u


def test_uniform_weights() -> None:
    w = uniform_weights(3, 4, 0.25)
    assert torch.allclose(w[1], torch.full((3, 4), 0.25))
    assert torch.allclose(w.sum(0), torch.ones(3, 4))


def test_brush_weights_follow_the_mask_with_soft_edges() -> None:
    ones, zeros = torch.ones(8, 10), torch.zeros(8, 10)
    assert torch.allclose(brush_weights(ones, 1.5)[1], ones)
    assert torch.allclose(brush_weights(ones, 1.5)[0], zeros, atol=1e-6)
    assert torch.equal(brush_weights(zeros, 1.5)[0], ones)
    half = torch.zeros(8, 20)
    half[:, :10] = 1
    assert torch.equal(brush_weights(half, 0)[1], half)  # sigma 0: the mask itself
    w = brush_weights(half, 1.5)
    assert torch.allclose(w.sum(0), torch.ones(8, 20))
    brush_row = w[1, 0]
    assert (brush_row.diff() <= 1e-6).all()  # falls off monotonically across the edge
    assert 0 < brush_row[9] < 1 and 0 < brush_row[10] < 1  # edge cells are blended
    assert brush_row[9] > 0.5 > brush_row[10]
    assert brush_row[0] == pytest.approx(1.0, abs=1e-6)
    assert brush_row[-1] == pytest.approx(0.0, abs=1e-6)


def test_to_latent_grid_averages_blocks() -> None:
    mask = torch.zeros(8, 12)
    mask[:4, :4] = 1
    mask[4:, 8:10] = 1  # half of a 4x4 block
    grid = to_latent_grid(mask, 2, 3)
    assert torch.allclose(grid, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))


def test_blend_with_one_hot_weights_is_the_cover_of_that_texture() -> None:
    z = [torch.randn(1, 3, 4, 4, generator=_gen(i)) for i in range(2)]
    g = [torch.randn(1, 2, generator=_gen(10 + i)) for i in range(2)]
    anchors = [[(0, 0)], [(0, 6)]]
    ones, zeros = torch.ones(6, 10), torch.zeros(6, 10)
    # Texture 1 everywhere, no shuffling.
    zl, zg = blend(z, g, torch.stack([zeros, ones]), anchors, None)
    assert torch.equal(zl, cover(z[1], 6, 10, anchors[1], None))
    assert zg is not None and torch.equal(zg, g[1][:, :, None, None].expand(1, 2, 6, 10))
    # Texture 0 everywhere with shuffling: the first cover draws first from the generator.
    zl, _ = blend(z, g, torch.stack([ones, zeros]), anchors, _gen(3))
    assert torch.equal(zl, cover(z[0], 6, 10, anchors[0], _gen(3)))
    # Half and half; no global codes.
    zl, zg = blend(z, [None, None], torch.full((2, 6, 10), 0.5), anchors, None)
    expected = 0.5 * cover(z[0], 6, 10, anchors[0], None) + 0.5 * cover(
        z[1], 6, 10, anchors[1], None
    )
    assert zg is None and torch.allclose(zl, expected)


# --- networks -------------------------------------------------------------------------------


def test_config_validation_and_derived_sizes() -> None:
    for bad, message in (
        ({"resolution": 24}, "power of two"),
        ({"resolution": 8}, "power of two"),
        ({"channels": 6}, "multiple of 4"),
        ({"global_dim": -1}, "global-dim"),
        ({"latent_channels": 0}, "latent-channels"),
    ):
        with pytest.raises(GantkError, match=message):
            TextureMixerConfig(**{**TINY, **bad}).validate()
    cfg = TextureMixerConfig(**{**TINY, "res_blocks": 3})
    assert cfg.latent_size == 4 and cfg.receptive_radius == 9
    assert TextureMixerConfig.from_dict({**cfg.to_dict(), "gram_net": "vgg19"}) == cfg


def test_decode_gives_four_times_the_latent_size_in_range() -> None:
    model = _model()
    for h, w in ((4, 4), (5, 7), (9, 6)):
        z = torch.randn(2, 4, h, w, generator=_gen(h))
        out = model.decode(z * 50, spread(torch.randn(2, 4, generator=_gen(0)) * 50, z))
        assert out.shape == (2, 3, 4 * h, 4 * w)
        assert out.abs().max() <= 1.0
    images = torch.rand(2, 3, 24, 40) * 2 - 1
    z_local, z_global = model.encode(images)
    assert z_local.shape == (2, 4, 6, 10) and z_global is not None and z_global.shape == (2, 4)
    assert model(images).shape == (2, 3, 24, 40)


def test_no_global_code() -> None:
    model = _model(global_dim=0)
    assert model.global_encoder is None
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    z_local, z_global = model.encode(images)
    assert z_global is None and spread(z_global, z_local) is None
    assert torch.allclose(model(images), model.decode(z_local, None))
    assert model.generator.head.weight.shape[1] == 4  # only the local latent goes in


def test_reflect_padding_keeps_constant_images_constant() -> None:
    model = _model()
    flat = torch.full((1, 3, 16, 16), 0.3)
    z = model.local_encoder(flat)
    assert torch.allclose(z, z[:, :, :1, :1].expand_as(z), atol=1e-5)
    out = model(flat)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out), atol=1e-5)
    # Zero padding would darken the border: the same layer with zeros is not constant.
    torch.manual_seed(0)
    zeros = EqualConv2d(3, 4, 3, padding_mode="zeros")
    reflect = EqualConv2d(3, 4, 3, padding_mode="reflect")
    reflect.load_state_dict(zeros.state_dict())
    x = torch.full((1, 3, 8, 8), 0.5)
    assert not torch.allclose(zeros(x)[..., 0, 0], zeros(x)[..., 4, 4])
    assert torch.allclose(reflect(x)[..., 0, 0], reflect(x)[..., 4, 4])


def test_equal_conv_reflect_matches_torch() -> None:
    torch.manual_seed(0)
    conv = EqualConv2d(3, 5, 3, padding_mode="reflect")
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 7, 9)
    expected = F.conv2d(
        F.pad(x, [1, 1, 1, 1], mode="reflect"), conv.weight / math.sqrt(27), conv.bias
    )
    assert torch.allclose(conv(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="padding_mode"):
        EqualConv2d(3, 5, 3, padding_mode="circular")


def test_critic_gives_one_value_per_sample() -> None:
    torch.manual_seed(0)
    critic = TextureCritic(TextureMixerConfig(**TINY))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    out = critic(x)
    assert out.shape == (3,)
    assert out.unique().numel() == 3


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_receptive_radius_bounds_the_influence_of_one_latent_cell(upsample: str) -> None:
    for res_blocks in (1, 2):
        model = _model(res_blocks=res_blocks, upsample=upsample)
        radius = model.config.receptive_radius
        size = 2 * radius + 9
        z = torch.randn(1, 4, size, size, generator=_gen(0))
        g = spread(torch.randn(1, 4, generator=_gen(1)), z)
        bumped = z.clone()
        centre = size // 2
        bumped[:, :, centre, centre] += 5.0
        diff = (model.decode(bumped, g) - model.decode(z, g)).abs().amax(dim=(0, 1))
        ys, xs = torch.nonzero(diff > 0, as_tuple=True)
        reach = max((ys // 4 - centre).abs().max().item(), (xs // 4 - centre).abs().max().item())
        assert 0 < reach <= radius


def test_the_generator_upsamples_as_its_config_says() -> None:
    nearest, bilinear = _model(), _model(upsample="bilinear")
    bilinear.load_state_dict(nearest.state_dict())  # the same weights: only the mode differs
    x = torch.randn(1, 3, 4, 5, generator=_gen(0))
    torch.testing.assert_close(
        bilinear.generator._up(x), F.interpolate(x, scale_factor=2, mode="bilinear")
    )
    torch.testing.assert_close(
        nearest.generator._up(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    )
    z = torch.randn(1, 4, 6, 6, generator=_gen(0))
    g = spread(torch.randn(1, 4, generator=_gen(1)), z)
    assert not torch.allclose(nearest.decode(z, g), bilinear.decode(z, g))


# --- tiled decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("res_blocks", [1, 2])
def test_tiled_decode_equals_whole_canvas_decode(res_blocks: int, upsample: str) -> None:
    model = _model(res_blocks=res_blocks, upsample=upsample)
    z = torch.randn(1, 4, 13, 10, generator=_gen(0))
    g = torch.randn(1, 4, 13, 10, generator=_gen(1))  # a spatially varying global code
    whole = Mixer(model, decode_tile=64).decode_tiled(z, g)
    tiled = Mixer(model, decode_tile=4).decode_tiled(z, g)
    assert whole.shape == tiled.shape == (1, 3, 52, 40)
    assert torch.allclose(tiled, whole, atol=1e-5)
    # A halo one cell too small would not do: the tiles would see reflected borders.
    torch.testing.assert_close(tiled, model.decode(z, g), atol=1e-5, rtol=0)


def test_mixer_decodes_in_its_precision_and_leaves_the_callers_model_as_it_was() -> None:
    model = _model()
    layout = {name: p.stride() for name, p in model.named_parameters()}
    z = torch.randn(1, 4, 9, 11, generator=_gen(0))
    g = torch.randn(1, 4, 9, 11, generator=_gen(1))
    exact = model.decode(z, g)
    fp32 = Mixer(model, decode_tile=4).decode_tiled(z, g)
    torch.testing.assert_close(fp32, exact, atol=1e-5, rtol=0)  # channels-last: same pixels
    half = Mixer(model, decode_tile=4, precision="bf16").decode_tiled(z, g)
    assert half.dtype == torch.float32 and not torch.equal(half, fp32)
    assert float((half - fp32).abs().mean()) < 0.02  # bf16 rounding, on a [-1, 1] image
    assert {name: p.stride() for name, p in model.named_parameters()} == layout
    with pytest.raises(GantkError, match="precision"):
        Mixer(model, precision="fp8")


def test_tiled_decode_without_global_code() -> None:
    model = _model(global_dim=0)
    z = torch.randn(1, 4, 9, 11, generator=_gen(0))
    torch.testing.assert_close(
        Mixer(model, decode_tile=3).decode_tiled(z, None), model.decode(z, None), atol=1e-5, rtol=0
    )


# --- gram ---------------------------------------------------------------------------------


def test_gram_matrix_matches_einsum() -> None:
    feats = torch.randn(2, 5, 3, 4, generator=_gen(0), dtype=torch.float64)
    arr = feats.numpy()
    expected = np.einsum("bchw,bdhw->bcd", arr, arr) / (5 * 3 * 4)
    np.testing.assert_allclose(gram_matrix(feats).numpy(), expected, rtol=1e-12)


def test_gram_distance() -> None:
    a = [torch.randn(2, 3, 3, generator=_gen(i)) for i in range(2)]
    b = [torch.randn(2, 3, 3, generator=_gen(5 + i)) for i in range(2)]
    assert torch.equal(gram_distance(a, a), torch.zeros(2))
    expected = sum(((x - y) ** 2).sum(dim=(1, 2)) for x, y in zip(a, b, strict=True))
    assert torch.allclose(gram_distance(a, b), expected)
    assert (gram_distance(a, b) > 0).all()


def test_random_gram_net_is_deterministic_and_auto_falls_back_to_it(
    random_gram: GramNet, torch_hub: Path
) -> None:
    auto = load_gram_net("auto")  # the temporary TORCH_HOME holds no VGG-19 file
    assert auto.name == "random-vgg19" and auto.path is None and random_gram.name == "random-vgg19"
    images = _texture(0, 32)
    outs_a, outs_b = auto(images), random_gram(images)
    assert len(outs_a) == 5
    assert [o.shape[1] for o in outs_a] == [64, 128, 256, 512, 512]
    for a, b in zip(outs_a, outs_b, strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in auto.parameters())


def test_auto_gram_net_takes_the_vgg19_file_when_present(torch_hub: Path) -> None:
    import torchvision

    # torchvision's VGG-19 state dict shapes, every tensor a stride-0 view of one number: the
    # file is tiny but loads into the real architecture.
    shapes = {k: v.shape for k, v in torchvision.models.vgg19(weights=None).state_dict().items()}
    state = {k: torch.full((1,), 0.01).expand(s) for k, s in shapes.items()}
    torch.save(state, torch_hub / "vgg19-dcbb9e9d.pth")
    net = load_gram_net("auto")
    assert net.name == "vgg19" and net.path == str(torch_hub / "vgg19-dcbb9e9d.pth")
    weight = net.features[0].weight
    assert torch.equal(weight, torch.full_like(weight, 0.01))


def test_vgg19_gram_net_without_its_file_names_it(torch_hub: Path) -> None:
    with pytest.raises(GantkError, match=r"vgg19-dcbb9e9d\.pth"):
        load_gram_net("vgg19")
    with pytest.raises(GantkError, match="not one of"):
        load_gram_net("vgg16")


# --- mixing operations ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> TextureMixer:
    return _model()


@pytest.fixture(scope="module")
def textures() -> list[torch.Tensor]:
    return [_texture(i) for i in range(4)]


def test_strip_sizes_and_errors(model: TextureMixer, textures: list[torch.Tensor]) -> None:
    mixer = Mixer(model)
    assert mixer.strip(textures[:2], 70).shape == (1, 3, 16, 70)
    assert mixer.strip(textures[:2], 37, height=22).shape == (1, 3, 22, 37)
    with pytest.raises(GantkError, match="shorter than two textures"):
        mixer.strip(textures[:2], 28)
    with pytest.raises(GantkError, match="needs 2 textures, got 1"):
        mixer.strip(textures[:1], 64)


def test_strip_of_one_texture_without_shuffle_decodes_its_tiling(
    model: TextureMixer, textures: list[torch.Tensor]
) -> None:
    # Both ends the same texture, anchors on the tile grid: the canvas latent is z tiled.
    t = textures[0]
    strip = Mixer(model, shuffle=False).strip([t, t], 64)
    z_local, z_global = model.encode(t)
    tiled = z_local.repeat(1, 1, 1, 4)
    torch.testing.assert_close(
        strip, model.decode(tiled, spread(z_global, tiled)), atol=1e-5, rtol=0
    )


def test_strip_seed_changes_the_shuffle(model: TextureMixer, textures: list[torch.Tensor]) -> None:
    mixer = Mixer(model)
    a = mixer.strip(textures[:2], 64, seed=1)
    assert torch.equal(a, mixer.strip(textures[:2], 64, seed=1))
    assert not torch.equal(a, mixer.strip(textures[:2], 64, seed=2))


def test_palette_needs_four_textures(model: TextureMixer, textures: list[torch.Tensor]) -> None:
    mixer = Mixer(model)
    assert mixer.palette(textures, 40).shape == (1, 3, 40, 40)
    with pytest.raises(GantkError, match="exactly 4 textures"):
        mixer.palette(textures[:3], 40)
    with pytest.raises(GantkError, match="smaller than two textures"):
        mixer.palette(textures, 28)


def test_dissolve_goes_gradually_from_the_first_to_the_second(
    model: TextureMixer, textures: list[torch.Tensor]
) -> None:
    mixer = Mixer(model)
    frames = mixer.dissolve(textures[:2], 5, (20, 24), seed=3)
    assert len(frames) == 5 and all(f.shape == (1, 3, 20, 24) for f in frames)
    # Frame 0 is texture 0 alone, the last frame texture 1 alone, both shuffled with the same
    # generator sequence (texture 0's cover draws first).
    (z0, z1), (g0, g1) = mixer.encode(textures[:2])
    gen = _gen(3)
    c0 = cover(z0, 5, 6, [], gen)
    c1 = cover(z1, 5, 6, [], gen)
    torch.testing.assert_close(frames[0], model.decode(c0, spread(g0, c0)), atol=1e-5, rtol=0)
    torch.testing.assert_close(frames[-1], model.decode(c1, spread(g1, c1)), atol=1e-5, rtol=0)
    total = (frames[-1] - frames[0]).abs().mean()
    steps = [(frames[i + 1] - frames[i]).abs().mean() for i in range(4)]
    assert total > 0.01
    assert all(0 < s < total for s in steps)
    with pytest.raises(GantkError, match="at least 2"):
        mixer.dissolve(textures[:2], 1, (20, 20))
    with pytest.raises(GantkError, match="needs 2 textures"):
        mixer.dissolve(textures[:1], 3, (20, 20))


def test_brush_with_empty_mask_reconstructs_the_background(
    model: TextureMixer, textures: list[torch.Tensor]
) -> None:
    mixer = Mixer(model)
    background = torch.rand(1, 3, 18, 22, generator=_gen(0)) * 2 - 1
    out = mixer.brush(background, textures[1], torch.zeros(18, 22), sigma=6.0)
    assert out.shape == (1, 3, 18, 22)
    padded = F.pad(background, [0, 2, 0, 2], mode="reflect")
    torch.testing.assert_close(out, model(padded)[:, :, :18, :22], atol=1e-5, rtol=0)
    with pytest.raises(GantkError, match="mask is 20x18 px but the background is 22x18"):
        mixer.brush(background, textures[1], torch.zeros(18, 20), sigma=6.0)


def test_brush_paints_only_near_the_mask(model: TextureMixer, textures: list[torch.Tensor]) -> None:
    mixer = Mixer(model)
    background = torch.rand(1, 3, 32, 64, generator=_gen(1)) * 2 - 1
    mask = torch.zeros(32, 64)
    mask[:, :12] = 1  # latent columns 0-2
    out = mixer.brush(background, textures[2], mask, sigma=0.0)
    recon = model(background)
    # Latent columns 3+ are the background's; its reconstruction survives past the radius.
    far = (3 + model.config.receptive_radius) * 4
    torch.testing.assert_close(out[..., far:], recon[..., far:], atol=1e-5, rtol=0)
    assert (out[..., :8] - recon[..., :8]).abs().mean() > 0.01


def test_pad_to_latent_grid_reflects() -> None:
    image = torch.rand(1, 3, 18, 21)
    padded = pad_to_latent_grid(image)
    assert padded.shape == (1, 3, 20, 24)
    assert torch.equal(padded[..., :18, :21], image)
    assert torch.equal(padded[..., 18, :21], image[..., 16, :])
    assert torch.equal(padded[..., :18, 21:], image[..., :, [19, 18, 17]])
    same = torch.rand(1, 3, 8, 12)
    assert pad_to_latent_grid(same) is same


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W in [-1, 1] (to_float gives arr / 255 back)."""
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1


def _laplacian(x: np.ndarray) -> np.ndarray:
    return 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]


@pytest.fixture
def placed_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 16 px texture and a 28 px canvas: the texture's edge pixels replicated around its
    footprint at (4, 4), and noise (a poor reconstruction) inside the footprint."""
    rng = np.random.default_rng(0)
    tex = rng.integers(40, 216, (16, 16, 3), dtype=np.uint8)
    canvas = np.pad(tex, ((4, 8), (4, 8), (0, 0)), mode="edge")
    canvas[4:20, 4:20] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    canvas[24:, 24:] = 7  # far away, untouched by every mode
    return tex, canvas


def test_restore_placed_modes(placed_scene: tuple[np.ndarray, np.ndarray]) -> None:
    tex, canvas_arr = placed_scene
    canvas, texture = _as_tensor(canvas_arr), _as_tensor(tex)
    base = to_float(canvas)
    source = tex.astype(np.float32) / 255.0
    placement = [Placement(0, 1, 1)]
    region = np.zeros((28, 28), dtype=bool)
    region[4:20, 4:20] = True

    assert np.array_equal(restore_placed(canvas, [texture], placement, "none"), base)

    cut = restore_placed(canvas, [texture], placement, "graphcut")
    assert np.array_equal(cut[~region], base[~region])
    assert np.array_equal(cut[8:16, 8:16], source[4:12, 4:12])  # the never-seamed core
    from_source = np.all(cut[4:20, 4:20] == source, axis=2)
    from_canvas = np.all(cut[4:20, 4:20] == base[4:20, 4:20], axis=2)
    assert (from_source | from_canvas).all()

    # Poisson: the boundary ring agrees with the texture's own edge, so the texture comes back
    # exactly over its whole footprint, whatever the network put there.
    poisson = restore_placed(canvas, [texture], placement, "poisson")
    assert np.array_equal(poisson[~region], base[~region])
    np.testing.assert_allclose(poisson[4:20, 4:20], source, atol=1 / 255)

    # Graph cut + Poisson: seams may run through the noise, so the texture is restored up to a
    # harmonic correction: the result keeps the texture's Laplacian inside the core.
    both = restore_placed(canvas, [texture], placement, "graphcut+poisson")
    assert np.array_equal(both[~region], base[~region])
    correction = both[8:16, 8:16].astype(np.float64) - source[4:12, 4:12]
    np.testing.assert_allclose(_laplacian(correction), 0, atol=1e-4)

    with pytest.raises(GantkError, match="unknown blend"):
        restore_placed(canvas, [texture], placement, "seamless")


def test_far_placements_stay_inside_sizes_not_multiple_of_four(
    placed_scene: tuple[np.ndarray, np.ndarray],
) -> None:
    # The right/bottom texture starts at the last whole latent cell that keeps it inside, and
    # the restoration puts it back exactly there (where the network drew it).
    assert strip_placements(30, 16) == [Placement(0, 0, 0), Placement(1, 0, 3)]  # 12 + 16 <= 30
    assert palette_placements(35, 16)[3] == Placement(3, 4, 4)  # 16 + 16 <= 35
    tex, canvas_arr = placed_scene
    canvas, texture = _as_tensor(canvas_arr), _as_tensor(tex)
    out = restore_placed(canvas, [texture], [Placement(0, 3, 3)], "graphcut")
    source = to_float(texture)
    # The graph cut always keeps the footprint's core (a quarter of the side in from each edge).
    np.testing.assert_array_equal(out[16:24, 16:24], source[4:12, 4:12])
    base = to_float(canvas)
    assert np.array_equal(out[:12, :], base[:12, :])  # the footprint starts at 3 * 4 = 12


def test_fill_changes_the_hole_only(model: TextureMixer, textures: list[torch.Tensor]) -> None:
    mixer = Mixer(model)
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 256, (40, 48, 3)) / 255.0).astype(np.float32)
    hole = np.zeros((40, 48), dtype=bool)
    hole[14:26, 18:30] = True
    out = mixer.fill(textures[:2], image, hole, seed=0)
    assert out.shape == image.shape
    # Changes stay within the hole's bounding box plus the seam ring (2 px for a 16 px model).
    outside = np.ones((40, 48), dtype=bool)
    outside[12:28, 16:32] = False
    assert np.array_equal(out[outside], image[outside])
    assert np.abs(out[hole] - image[hole]).mean() > 0.05
    hard = mixer.fill(textures[:2], image, hole, blend_mode="none", seed=0)
    assert np.array_equal(hard[~hole], image[~hole])
    content = mixer.fill_strip(textures[:2], 12, 12, seed=0)
    assert content.shape == (1, 3, 12, 12)
    with pytest.raises(GantkError, match="hole mask is 40x40 px but the image is 48x40"):
        mixer.fill(textures[:2], image, np.ones((40, 40), dtype=bool))
    with pytest.raises(GantkError, match="empty"):
        mixer.fill(textures[:2], image, np.zeros((40, 48), dtype=bool))


# --- training -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def texture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three structured 64x64 textures (training uses their top 48 rows)."""
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for i in range(3):
        wave = 127 + 100 * np.sin(xx / (2 + i) + yy / (3 + 2 * i))
        arr = wave[..., None] * np.array([1.0, 0.4 + 0.2 * i, 0.3]) + rng.normal(0, 15, (64, 64, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / f"tex{i}.png")
    return root


def _config(data: Path, **overrides: object) -> TextureTrainConfig:
    base: dict = {
        **TINY,
        "batch_size": 2,
        "steps": 2,
        "snapshot_every": 2,
        "gram_net": "random-vgg19",
    }
    return TextureTrainConfig(data=str(data), **{**base, **overrides})


def _tensors(trainer: TextureTrainer) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("model", "model_ema", "d_rec", "d_itp"):
        for key, value in getattr(trainer, name).state_dict().items():
            out[f"{name}.{key}"] = value
    return out


@pytest.mark.usefixtures("fast_gram")
def test_training_writes_its_files(texture_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = TextureTrainer(_config(texture_dir), run)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    final = trainer.run()
    assert trainer.step == 2 and final["step"] == 2
    for name in ("latest.safetensors", "state.safetensors", "log.jsonl", "config.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in (run / "samples").glob("*.png")] == ["strip-0000002.png"]
    with Image.open(run / "samples" / "strip-0000002.png") as sample:
        assert sample.size == (64, 16)
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [2]
    for key in ("l1", "gram_rec", "gram_itp", "adv_rec", "adv_itp", "d_rec", "d_itp"):
        assert math.isfinite(entries[0][key]), key
    assert json.loads((run / "config.json").read_text())["gram_net_used"] == "random-vgg19"
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned something
    loaded = load_texture_mixer(run / "latest.safetensors")
    assert loaded.gram_net == "random-vgg19"
    for key, value in trainer.model_ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.usefixtures("fast_gram")
def test_bf16_training_is_finite_close_to_fp32_and_recorded(
    texture_dir: Path, tmp_path: Path
) -> None:
    firsts = {}
    for name in ("fp32", "bf16"):
        trainer = TextureTrainer(_config(texture_dir, precision=name), tmp_path / name)
        firsts[name] = trainer.train_step(*trainer._pairs())
        final = trainer.run()
        assert all(math.isfinite(v) for v in final.values()), name
        assert json.loads((tmp_path / name / "config.json").read_text())["precision"] == name
    # The same weights and crops: the first L1 differs only by bf16's rounding.
    assert firsts["bf16"]["l1"] == pytest.approx(firsts["fp32"]["l1"], rel=0.05)


@pytest.mark.usefixtures("fast_gram")
def test_resume_equals_an_uninterrupted_run(texture_dir: Path, tmp_path: Path) -> None:
    first = TextureTrainer(_config(texture_dir), tmp_path / "a")
    first.run()
    with pytest.raises(GantkError, match="already holds a texture run"):
        start_or_resume(_config(texture_dir), tmp_path / "a", resume=False)
    resumed = start_or_resume(_config(texture_dir, steps=4, lr=1.0), tmp_path / "a", resume=True)
    assert resumed.step == 2 and resumed.config.lr == 0.0015  # the saved config wins
    resumed.run()
    whole = TextureTrainer(_config(texture_dir, steps=4), tmp_path / "b")
    whole.run()
    assert resumed.step == whole.step == 4
    a, b = _tensors(resumed), _tensors(whole)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(x)["step"] for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    with pytest.raises(GantkError, match=r"no state\.safetensors"):
        start_or_resume(_config(texture_dir), tmp_path / "c", resume=True)


@pytest.mark.usefixtures("fast_gram")
def test_init_starts_from_a_model_file(texture_dir: Path, tmp_path: Path) -> None:
    donor = TextureTrainer(_config(texture_dir), tmp_path / "donor")
    donor.run()
    model_file = tmp_path / "donor" / "latest.safetensors"
    run = start_or_resume(_config(texture_dir), tmp_path / "new", resume=False, init=model_file)
    assert run.step == 0
    for name in ("model", "model_ema"):  # both start at the file's (EMA) weights
        for key, value in getattr(run, name).state_dict().items():
            assert torch.equal(value, donor.model_ema.state_dict()[key]), (name, key)
    with pytest.raises(GantkError, match="pick one"):
        start_or_resume(_config(texture_dir), tmp_path / "donor", resume=True, init=model_file)
    wider = _config(texture_dir, channels=TINY["channels"] * 2)
    with pytest.raises(GantkError, match="another shape"):
        start_or_resume(wider, tmp_path / "wide", resume=False, init=model_file)
    # The upsampling has no weights: a nearest model starts a bilinear run, which keeps it.
    smooth = start_or_resume(_config(texture_dir, upsample="bilinear"), tmp_path / "smooth",
                             resume=False, init=model_file)  # fmt: skip
    assert smooth.model.config.upsample == "bilinear"
    smooth.run()
    assert load_texture_mixer(tmp_path / "smooth" / "latest.safetensors").config.upsample == (
        "bilinear"
    )


@pytest.mark.usefixtures("fast_gram")
@pytest.mark.parametrize(
    "ablation", [{"blend": False}, {"shuffle": False}, {"global_dim": 0}], ids=str
)
def test_ablations_train(texture_dir: Path, tmp_path: Path, ablation: dict) -> None:
    trainer = TextureTrainer(_config(texture_dir, steps=1, snapshot_every=1, **ablation), tmp_path)
    s1, s2 = trainer._pairs()
    assert torch.equal(s1, s2) == (ablation == {"blend": False})
    final = trainer.run()
    assert all(math.isfinite(v) for v in final.values())
    loaded = load_texture_mixer(tmp_path / "latest.safetensors")
    assert (loaded.global_encoder is None) == (ablation == {"global_dim": 0})


def test_train_config_validation(texture_dir: Path) -> None:
    for bad, message in (
        ({"batch_size": 0}, "batch-size"),
        ({"lr": 0.0}, "--lr"),
        ({"ema": 1.0}, "--ema"),
        ({"resolution": 20}, "power of two"),
        ({"gram_weight": -1.0}, "non-negative"),
        ({"upsample": "bicubic"}, "--upsample must be one of nearest, bilinear"),
    ):
        with pytest.raises(GantkError, match=message):
            _config(texture_dir, **bad).validate()


def test_save_and_load_round_trip(tmp_path: Path, model: TextureMixer) -> None:
    images = _texture(1, 24)
    path = save_texture_mixer(tmp_path / "m.safetensors", model, "random-vgg19", {"note": "x"})
    loaded = load_texture_mixer(path)
    assert loaded.gram_net == "random-vgg19" and loaded.config == model.config
    assert not loaded.training
    assert torch.equal(loaded(images), model(images))
    half = save_texture_mixer(tmp_path / "h.safetensors", model, "vgg19", dtype=torch.float16)
    from safetensors import safe_open

    with safe_open(str(half), "pt") as f:
        assert f.get_tensor("generator.head.weight").dtype == torch.float16
    loaded_half = load_texture_mixer(half)
    assert loaded_half.gram_net == "vgg19"
    assert all(p.dtype == torch.float32 for p in loaded_half.parameters())
    assert (loaded_half(images) - model(images)).abs().max() < 0.02
    assert half.stat().st_size < 0.6 * path.stat().st_size


def test_load_texture_mixer_errors(tmp_path: Path, model: TextureMixer) -> None:
    from gantk.io.checkpoint import save_checkpoint

    with pytest.raises(GantkError, match="does not exist"):
        load_texture_mixer(tmp_path / "missing.safetensors")
    other = save_checkpoint(tmp_path / "o.safetensors", {"w": torch.zeros(1)}, "stego", {})
    with pytest.raises(GantkError, match="holds a stego, not a"):
        load_texture_mixer(other)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("generator")}
    damaged = save_checkpoint(
        tmp_path / "d.safetensors", partial, "texture-mixer", model.config.to_dict()
    )
    with pytest.raises(GantkError, match="does not match its own Texture Mixer config"):
        load_texture_mixer(damaged)


@pytest.mark.usefixtures("fast_gram")
def test_ctrl_c_saves_after_the_step(texture_dir: Path, tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)

    def interrupt(entry: dict) -> None:
        if entry["step"] == 1:  # a real SIGINT, as `timeout -s INT` or Ctrl-C sends
            signal.raise_signal(signal.SIGINT)

    trainer = TextureTrainer(
        _config(texture_dir, steps=3, snapshot_every=100, log_every=1), tmp_path
    )
    trainer.run(on_log=interrupt)
    assert trainer.step == 1 and signal.getsignal(signal.SIGINT) is before
    for name in ("latest.safetensors", "state.safetensors"):
        assert (tmp_path / name).is_file(), name
