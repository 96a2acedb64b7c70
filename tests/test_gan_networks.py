"""StyleGAN2 building blocks and networks, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.gan.attention import SAGANAttention, SANAttention
from gantk.gan.networks import AttentionLayer, Discriminator, Generator, NetworkConfig, ToRGB
from gantk.nn.layers import EqualConv2d, EqualLinear, MinibatchStd
from gantk.nn.resample import downsample2d, filter2d, make_filter, upsample2d
from gantk.ops.modulated_conv import modulated_conv2d, modulated_conv2d_ref

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> NetworkConfig:
    base = dict(
        resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=128, channel_max=16
    )
    base.update(kw)
    return NetworkConfig(**base)


# --- FIR resampling -------------------------------------------------------------------------


def fir_kernel() -> np.ndarray:
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    k = np.outer(taps, taps)
    return k / k.sum()


def convolve_loops(img: np.ndarray, k: np.ndarray, before: int, after: int) -> np.ndarray:
    """True 2-D convolution (kernel flipped) of a zero-padded 2-D image, as plain loops."""
    padded = np.pad(img, ((before, after), (before, after)))
    kh, kw = k.shape
    out = np.zeros((padded.shape[0] - kh + 1, padded.shape[1] - kw + 1))
    for p in range(out.shape[0]):
        for q in range(out.shape[1]):
            total = 0.0
            for a in range(kh):
                for b in range(kw):
                    total += padded[p + a, q + b] * k[kh - 1 - a, kw - 1 - b]
            out[p, q] = total
    return out


def test_make_filter_is_the_normalized_outer_product() -> None:
    assert np.allclose(make_filter().numpy(), fir_kernel(), atol=1e-7)


def test_upsample2d_matches_zero_insertion_and_convolution() -> None:
    rng = np.random.default_rng(0)
    img = rng.standard_normal((8, 8))
    zeros = np.zeros((16, 16))
    zeros[::2, ::2] = img  # each pixel followed by a zero, on both axes
    expected = convolve_loops(zeros, fir_kernel() * 4, before=2, after=1)
    got = upsample2d(torch.tensor(img, dtype=torch.float32)[None, None], make_filter())
    assert got.shape == (1, 1, 16, 16)
    assert np.allclose(got[0, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_upsample2d_and_downsample2d_keep_constants_away_from_the_border() -> None:
    x = torch.full((2, 3, 8, 8), 0.7)
    up = upsample2d(x, make_filter())
    assert up.shape == (2, 3, 16, 16)
    assert torch.allclose(up[:, :, 1:-1, 1:-1], torch.tensor(0.7), atol=1e-6)
    down = downsample2d(x, make_filter())
    assert down.shape == (2, 3, 4, 4)
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.tensor(0.7), atol=1e-6)
    # The zero padding shows at the border (a corner sees 3/4 of the filter on each axis).
    assert up[0, 0, 0, 0].item() == pytest.approx(0.7 * 0.75 * 0.75, abs=1e-6)


def test_downsample2d_matches_convolution_then_decimation() -> None:
    rng = np.random.default_rng(1)
    img = rng.standard_normal((8, 8))
    expected = convolve_loops(img, fir_kernel(), before=1, after=1)[::2, ::2]
    got = downsample2d(torch.tensor(img, dtype=torch.float32)[None, None], make_filter())
    assert got.shape == (1, 1, 4, 4)
    assert np.allclose(got[0, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_filter2d_is_a_true_depthwise_convolution() -> None:
    rng = np.random.default_rng(2)
    img = rng.standard_normal((2, 6, 6))
    k = rng.standard_normal((3, 3))  # asymmetric: a correlation would give another answer
    got = filter2d(torch.tensor(img)[None], torch.tensor(k), (2, 1), gain=3.0)[0].numpy()
    for c in range(2):
        expected = 3.0 * convolve_loops(img[c], k, before=2, after=1)
        assert got[c].shape == expected.shape == (7, 7)
        assert np.allclose(got[c], expected, atol=1e-10)


def test_filter2d_negative_padding_crops() -> None:
    rng = np.random.default_rng(3)
    img = rng.standard_normal((6, 6))
    k = np.zeros((1, 1))
    k[0, 0] = 1.0
    got = filter2d(torch.tensor(img)[None, None], torch.tensor(k), (-1, -2))[0, 0].numpy()
    assert np.array_equal(got, img[1:-2, 1:-2])


# --- modulated convolution ------------------------------------------------------------------


def modconv_loop(x, weight, styles, demodulate: bool, padding: int) -> torch.Tensor:
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, :, None, None]
        if demodulate:
            norms = torch.sqrt((w**2).sum(dim=(1, 2, 3)) + 1e-8)
            w = w / norms[:, None, None, None]
        outs.append(F.conv2d(x[i : i + 1], w, padding=padding))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("padding", [0, 1])
def test_modulated_conv_fused_unfused_and_per_sample(demodulate: bool, padding: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    fused = modulated_conv2d_ref(x, weight, styles, demodulate, padding, fused=True)
    unfused = modulated_conv2d_ref(x, weight, styles, demodulate, padding, fused=False)
    expected = modconv_loop(x, weight, styles, demodulate, padding)
    assert fused.shape == expected.shape == (3, 5, 6 - 2 + 2 * padding, 6 - 2 + 2 * padding)
    assert torch.allclose(fused, unfused, atol=1e-10, rtol=0)
    assert torch.allclose(fused, expected, atol=1e-10, rtol=0)
    assert torch.allclose(modulated_conv2d(x, weight, styles, demodulate, padding), expected)


def test_demodulated_outputs_do_not_depend_on_the_style_scale() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    a = modulated_conv2d_ref(x, weight, styles, True, 1)
    b = modulated_conv2d_ref(x, weight, styles * 7.0, True, 1)
    assert torch.allclose(a, b, atol=1e-9)
    c = modulated_conv2d_ref(x, weight, styles * 7.0, False, 1)
    assert torch.allclose(c, 7.0 * modulated_conv2d_ref(x, weight, styles, False, 1))


def test_modulated_conv_shape_errors() -> None:
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match="do not agree"):
        modulated_conv2d_ref(x, torch.randn(3, 5, 3, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="do not agree"):
        modulated_conv2d_ref(x, torch.randn(3, 4, 3, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="do not agree"):
        modulated_conv2d_ref(x, torch.randn(3, 4, 3, 3), torch.randn(3, 4), fused=False)


# --- layers ---------------------------------------------------------------------------------


def mbstd_by_hand(x: np.ndarray, group: int) -> np.ndarray:
    n = x.shape[0]
    stat = np.zeros(n)
    for start in range(0, n, group):
        members = x[start : start + group]
        var = ((members - members.mean(axis=0)) ** 2).mean(axis=0)
        stat[start : start + group] = np.sqrt(var + 1e-8).mean()
    extra = np.broadcast_to(stat[:, None, None, None], (n, 1, *x.shape[2:]))
    return np.concatenate([x, extra], axis=1)


@pytest.mark.parametrize(("batch", "group"), [(8, 4), (6, 3), (2, 2)])
def test_minibatch_std_by_hand(batch: int, group: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 4, 4, generator=gen, dtype=torch.float64)
    x[group:] *= 5  # groups with different spreads get different statistics
    got = MinibatchStd(4)(x)  # 6 is not divisible by 4: the group shrinks to 3
    assert got.shape == (batch, 4, 4, 4)
    assert np.allclose(got.numpy(), mbstd_by_hand(x.numpy(), group), atol=1e-12)


def test_minibatch_std_of_shards_equals_the_whole_batch() -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(8, 3, 4, 4, generator=gen)
    x[4:] *= 3
    layer = MinibatchStd(4)
    whole = layer(x)
    assert torch.allclose(torch.cat([layer(x[:4]), layer(x[4:])]), whole, atol=1e-6)
    assert not torch.allclose(whole[0, -1], whole[4, -1])


@pytest.mark.parametrize("lr_multiplier", [1.0, 0.01])
def test_equal_linear_scales_weights_at_run_time(lr_multiplier: float) -> None:
    torch.manual_seed(0)
    layer = EqualLinear(6, 4, bias_init=0.5, lr_multiplier=lr_multiplier)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(4) * 10)
    x = torch.randn(3, 6, dtype=torch.float64)
    w = layer.weight.detach().double() * (lr_multiplier / math.sqrt(6))
    b = layer.bias.detach().double() * lr_multiplier
    assert torch.allclose(layer(x), F.linear(x, w, b), atol=1e-10)
    act = EqualLinear(6, 4, activation="lrelu")
    w = act.weight.detach().double() / math.sqrt(6)
    expected = F.leaky_relu(F.linear(x, w), 0.2) * math.sqrt(2)
    assert torch.allclose(act(x), expected, atol=1e-10)


def test_equal_linear_initialization() -> None:
    layer = EqualLinear(5, 3, bias_init=1.0, lr_multiplier=0.01)
    assert torch.equal(layer.bias, torch.ones(3))
    # Stored as N(0, 1) / lr_multiplier: large numbers, small steps.
    assert layer.weight.abs().mean() > 10


def test_equal_conv2d_scales_weights_at_run_time() -> None:
    torch.manual_seed(1)
    layer = EqualConv2d(4, 5, 3, activation="lrelu")
    with torch.no_grad():
        layer.bias.copy_(torch.randn(5))
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = layer.weight.detach().double() / math.sqrt(4 * 3 * 3)
    pre = F.conv2d(x, w, layer.bias.detach().double(), padding=1)
    assert torch.allclose(layer(x), F.leaky_relu(pre, 0.2) * math.sqrt(2), atol=1e-10)
    assert torch.allclose(
        layer(x, gain=0.5), F.leaky_relu(pre, 0.2) * math.sqrt(2) * 0.5, atol=1e-10
    )


@pytest.mark.parametrize("kernel", [3, 1])
def test_equal_conv2d_down_low_passes_then_strides(kernel: int) -> None:
    torch.manual_seed(2)
    layer = EqualConv2d(2, 3, kernel, bias=False, down=2)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    got = layer(x)
    assert got.shape == (1, 3, 4, 4)
    # StyleGAN2's padding: the conv's own (kernel // 2) plus the 4-tap filter's (1 each side).
    pad = kernel // 2 + 1
    blurred = np.stack([convolve_loops(x[0, c].numpy(), fir_kernel(), pad, pad) for c in range(2)])
    w = layer.weight.detach().double() / math.sqrt(2 * kernel * kernel)
    expected = F.conv2d(torch.tensor(blurred)[None], w, stride=2)
    assert torch.allclose(got, expected, atol=1e-10)


def test_torgb_is_an_unnormalized_modulated_1x1_conv() -> None:
    torch.manual_seed(10)
    layer = ToRGB(8, 32)
    with torch.no_grad():
        layer.bias.normal_()
        layer.affine.bias.normal_()
    x, w = torch.randn(2, 8, 4, 4), torch.randn(2, 32)
    styles = w @ layer.affine.weight.t() / math.sqrt(32) + layer.affine.bias  # equalized affine
    weight = layer.weight[:, :, 0, 0] / math.sqrt(8)
    expected = torch.einsum("bchw,oc,bc->bohw", x, weight, styles) + layer.bias[None, :, None, None]
    with torch.no_grad():
        assert torch.allclose(layer(x, w), expected, atol=1e-5)


# --- generator ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(tiny()).eval()


def test_generator_shapes_and_style_count(G: Generator) -> None:
    assert G.num_ws == 2 * int(math.log2(16)) - 2 == 6
    z = torch.randn(3, 32)
    ws = G.mapping(z)
    assert ws.shape == (3, 6, 32)
    with torch.no_grad():
        img = G(z)
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()


def test_generator_channels_follow_base_and_cap() -> None:
    cfg = tiny()
    assert [cfg.channels(r) for r in cfg.resolutions()] == [16, 16, 8]
    assert cfg.resolutions() == [4, 8, 16]


def test_truncation(G: Generator) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        G.mapping(torch.randn(16, 32), update_w_avg=True)
        assert G.mapping.w_avg.abs().sum() > 0
        z = torch.randn(4, 32)
        ws = G.mapping(z, psi=0.0)
        assert torch.allclose(ws, G.mapping.w_avg.expand(4, 6, 32))
        same = G(z, psi=0.0, noise_mode="const")
        assert torch.allclose(same, same[:1].expand_as(same), atol=1e-6)
        varied = G(z, psi=1.0, noise_mode="const")
        assert not torch.allclose(varied[0], varied[1], atol=1e-3)
        half = G.mapping(z, psi=0.5)
        full = G.mapping(z)
        assert torch.allclose(half, (full + G.mapping.w_avg) / 2, atol=1e-6)
        cut = G.mapping(z, psi=0.0, cutoff=2)
        assert torch.allclose(cut[:, :2], G.mapping.w_avg.expand(4, 2, 32))
        assert torch.allclose(cut[:, 2:], full[:, 2:])


def test_mapping_tracks_the_mean_w(G: Generator) -> None:
    with torch.no_grad():
        z = torch.randn(8, 32)
        before = G.mapping.w_avg.clone()
        w = G.mapping(z)[:, 0]
        assert torch.equal(G.mapping.w_avg, before)  # no update unless asked
        G.mapping(z, update_w_avg=True)
        expected = 0.005 * w.mean(dim=0) + 0.995 * before
        assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)


def test_mapping_normalizes_z(G: Generator) -> None:
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.allclose(G.mapping(z), G.mapping(z * 10), atol=1e-5)


def test_noise_modes() -> None:
    torch.manual_seed(2)
    G = Generator(tiny()).eval()
    with torch.no_grad():
        for block in G.blocks:
            for layer in (getattr(block, "conv0", None), block.conv1):
                if layer is not None:
                    layer.noise_strength.fill_(0.5)
        ws = G.mapping(torch.randn(2, 32))
        a, b = G.synthesis(ws, "const"), G.synthesis(ws, "const")
        assert torch.equal(a, b)
        r1, r2 = G.synthesis(ws, "random"), G.synthesis(ws, "random")
        assert not torch.allclose(r1, r2)
        n1, n2 = G.synthesis(ws, "none"), G.synthesis(ws, "none")
        assert torch.equal(n1, n2) and not torch.allclose(n1, a)


def changed_by_style(G: Generator, ws: torch.Tensor, index: int) -> bool:
    with torch.no_grad():
        base = G.synthesis(ws, "const")
        other = ws.clone()
        other[:, index] = torch.randn_like(other[:, index]) * 3
        return not torch.allclose(G.synthesis(other, "const"), base, atol=1e-6)


def test_every_style_is_consumed(G: Generator) -> None:
    torch.manual_seed(3)
    ws = G.mapping(torch.randn(2, 32)).detach()
    assert [changed_by_style(G, ws, k) for k in range(G.num_ws)] == [True] * 6


def test_attention_layer_ignores_its_style() -> None:
    torch.manual_seed(4)
    G = Generator(tiny(g_attn="san@8")).eval()
    assert isinstance(G.blocks[1].conv1, AttentionLayer)
    assert G.num_ws == 6
    ws = G.mapping(torch.randn(2, 32)).detach()
    # ws index 2 is the 8px block's second layer: the attention layer ignores it.
    assert not changed_by_style(G, ws, 2)
    assert changed_by_style(G, ws, 1)  # the 8px block's first conv (and 4px ToRGB)
    assert changed_by_style(G, ws, 3)


@pytest.mark.parametrize(
    ("spec", "index", "kind"),
    [("san@8", 1, SANAttention), ("sagan@16", 2, SAGANAttention), ("san@4", 0, SANAttention)],
)
def test_generator_attention_variants(spec: str, index: int, kind: type) -> None:
    torch.manual_seed(5)
    G = Generator(tiny(g_attn=spec))
    layers = [b.conv1 for b in G.blocks]
    assert isinstance(layers[index], AttentionLayer)
    assert isinstance(layers[index].attn, kind)
    assert sum(isinstance(layer, AttentionLayer) for layer in layers) == 1
    img = G(torch.randn(2, 32))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    img.mean().backward()


# --- discriminator --------------------------------------------------------------------------


def test_discriminator_shapes_and_features() -> None:
    torch.manual_seed(6)
    D = Discriminator(tiny())
    img = torch.randn(4, 3, 16, 16)
    logits = D(img)
    assert logits.shape == (4,)
    logits2, features = D(img, return_features=True)
    assert torch.equal(logits, logits2)
    assert features.shape == (4, 16)
    assert not D.needs_reference


@pytest.mark.parametrize("spec", ["self@8", "reference@16", "reference@8"])
def test_discriminator_attention_variants(spec: str) -> None:
    torch.manual_seed(7)
    D = Discriminator(tiny(d_attn=spec))
    img, ref = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    needs_ref = spec.startswith("reference")
    assert D.needs_reference == needs_ref
    logits = D(img, ref) if needs_ref else D(img)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    logits.sum().backward()


@pytest.mark.parametrize("spec", ["reference@16", "reference@8"])
def test_reference_attention_uses_the_reference(spec: str) -> None:
    torch.manual_seed(8)
    D = Discriminator(tiny(d_attn=spec))
    img, ref1, ref2 = (torch.randn(4, 3, 16, 16) for _ in range(3))
    with pytest.raises(ValueError, match="ref"):
        D(img)
    with torch.no_grad():
        # A fresh SAN block is the identity: the reference cannot matter yet.
        assert torch.allclose(D(img, ref1), D(img, ref2))
        (block,) = [b for b in D.blocks if b.attn_kind == "reference"]
        block.conv0.proj.weight.normal_()
        block.conv0.proj.bias.normal_()
        out1, out2 = D(img, ref1), D(img, ref2)
        assert not torch.allclose(out1, out2, atol=1e-4)
        assert torch.equal(out1, D(img, ref1))


def test_self_attention_discriminator_ignores_a_reference() -> None:
    torch.manual_seed(9)
    D = Discriminator(tiny(d_attn="self@8"))
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        D.blocks[1].conv0.proj.weight.normal_()
        assert torch.equal(D(img), D(img, torch.randn(4, 3, 16, 16)))


# --- bad configurations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "kw", "words"),
    [
        (Generator, {"g_attn": "san@32"}, ["--g-attn", "no 32px layer", "4, 8, 16"]),
        (Generator, {"g_attn": "foo@8"}, ["--g-attn", "unknown kind 'foo'", "san, sagan"]),
        (Generator, {"g_attn": "reference@8"}, ["unknown kind 'reference'"]),
        (Generator, {"g_attn": "san@12"}, ["not a power of two"]),
        (Generator, {"g_attn": "san"}, ["missing @RES"]),
        (Discriminator, {"d_attn": "reference@4"}, ["--d-attn", "no 4px layer", "8, 16"]),
        (Discriminator, {"d_attn": "reference@32"}, ["no 32px layer"]),
        (Discriminator, {"d_attn": "san@8"}, ["--d-attn", "unknown kind 'san'", "reference"]),
    ],
)
def test_bad_attention_configs(net: type, kw: dict, words: list[str]) -> None:
    with pytest.raises(GantkError) as info:
        net(tiny(**kw))
    for word in words:
        assert word in str(info.value)


def test_network_config_round_trip() -> None:
    cfg = tiny(g_attn="san@8", d_attn="reference@8")
    data = cfg.to_dict()
    data["unknown_future_field"] = 1
    assert NetworkConfig.from_dict(data) == cfg
