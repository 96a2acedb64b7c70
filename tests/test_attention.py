"""Patch-wise attention op and the SAN / SAGAN attention blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from naive_ops import naive_patch_attention, naive_unfold
from torch import Tensor

from gantk.errors import GantkError
from gantk.gan.attention import (
    ATTENTION_KINDS,
    SAGANAttention,
    SANAttention,
    make_attention,
    parse_attention_spec,
)
from gantk.ops import dispatch
from gantk.ops.patch_attention import (
    key_patch_linear,
    patch_attention,
    patch_attention_ref,
    unfold_patches,
)


def _inputs(
    kernel_size: int,
    w_channels: int = 2,
    shape: tuple[int, int, int, int] = (2, 4, 5, 6),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch, _, height, width = shape
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    weights = torch.randn(
        (batch, w_channels, kernel_size**2, height, width), generator=gen, dtype=torch.float64
    )
    return values.to(dtype), weights.to(dtype)


# ----------------------------------------------------------------------------------------------
# The op


@pytest.mark.parametrize("w_channels", [1, 2, 4])
@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (3, 1), (3, 2), (5, 1), (5, 2)])
def test_patch_attention_matches_naive_loop(
    kernel_size: int, dilation: int, w_channels: int
) -> None:
    values, weights = _inputs(kernel_size, w_channels)
    expected = naive_patch_attention(values, weights, kernel_size, dilation)
    out = patch_attention(values, weights, kernel_size, dilation)
    assert out.shape == values.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_unfold_patches_matches_naive_loop(kernel_size: int, dilation: int) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = unfold_patches(x, kernel_size, dilation)
    assert out.shape == (2, 3, kernel_size**2, 5, 6)
    np.testing.assert_array_equal(out.numpy(), naive_unfold(x, kernel_size, dilation))


def test_patch_attention_centre_tap_only_is_scaling() -> None:
    # Only the centre offset weighted: each channel is scaled by its group's weight.
    values, _ = _inputs(3)
    weights = torch.zeros(2, 2, 9, 5, 6, dtype=torch.float64)
    weights[:, :, 4] = torch.tensor([2.0, -3.0], dtype=torch.float64).view(1, 2, 1, 1)
    out = patch_attention(values, weights, 3)
    scale = torch.tensor([2.0, -3.0, 2.0, -3.0], dtype=torch.float64).view(1, 4, 1, 1)
    torch.testing.assert_close(out, values * scale, rtol=0, atol=0)


@pytest.mark.parametrize("dilation", [1, 2])
def test_patch_attention_gradcheck(dilation: int) -> None:
    values, weights = _inputs(3, shape=(1, 4, 3, 4))
    values.requires_grad_(True)
    weights.requires_grad_(True)

    def fn(v: Tensor, w: Tensor) -> Tensor:
        return patch_attention(v, w, 3, dilation)

    assert torch.autograd.gradcheck(fn, (values, weights))
    # Second order too: an R1 penalty differentiates through the discriminator twice. The fast
    # mode (random projections) keeps this quick; first order above is checked in full.
    assert torch.autograd.gradgradcheck(fn, (values, weights), fast_mode=True)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_patch_attention_reduced_precision(dtype: torch.dtype, tol: float) -> None:
    values, weights = _inputs(3, dtype=dtype)
    out = patch_attention(values, weights, 3, 2)
    assert out.dtype == dtype
    expected = naive_patch_attention(values, weights, 3, 2)  # inputs as rounded to dtype
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_patch_attention_cuda_matches_cpu(dtype: torch.dtype, tol: float) -> None:
    values, weights = _inputs(5, dtype=dtype)
    values.requires_grad_(True)
    out = patch_attention(values.cuda(), weights.cuda(), 5, 1)
    assert out.is_cuda and out.dtype == dtype
    expected = naive_patch_attention(values, weights, 5, 1)
    np.testing.assert_allclose(out.detach().double().cpu().numpy(), expected, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad.float()).all()


def _bad_shape_cases() -> list[tuple[str, tuple[int, ...], tuple[int, ...], int, int]]:
    # (id, values shape, weights shape, kernel_size, dilation)
    return [
        ("even kernel", (1, 4, 5, 6), (1, 2, 4, 5, 6), 2, 1),
        ("zero kernel", (1, 4, 5, 6), (1, 2, 0, 5, 6), 0, 1),
        ("zero dilation", (1, 4, 5, 6), (1, 2, 9, 5, 6), 3, 0),
        ("C not a multiple of Cw", (1, 4, 5, 6), (1, 3, 9, 5, 6), 3, 1),
        ("Cw larger than C", (1, 4, 5, 6), (1, 8, 9, 5, 6), 3, 1),
        ("height mismatch", (1, 4, 5, 6), (1, 2, 9, 4, 6), 3, 1),
        ("width mismatch", (1, 4, 5, 6), (1, 2, 9, 5, 7), 3, 1),
        ("taps mismatch", (1, 4, 5, 6), (1, 2, 25, 5, 6), 3, 1),
        ("batch mismatch", (2, 4, 5, 6), (1, 2, 9, 5, 6), 3, 1),
        ("values not 4-D", (4, 5, 6), (1, 2, 9, 5, 6), 3, 1),
        ("weights not 5-D", (1, 4, 5, 6), (1, 18, 5, 6), 3, 1),
    ]


@pytest.mark.parametrize(
    ("values_shape", "weights_shape", "kernel_size", "dilation"),
    [case[1:] for case in _bad_shape_cases()],
    ids=[case[0] for case in _bad_shape_cases()],
)
def test_patch_attention_bad_shapes(
    values_shape: tuple[int, ...], weights_shape: tuple[int, ...], kernel_size: int, dilation: int
) -> None:
    values = torch.zeros(values_shape)
    weights = torch.zeros(weights_shape)
    with pytest.raises(ValueError):
        patch_attention(values, weights, kernel_size, dilation)
    with pytest.raises(ValueError):
        patch_attention_ref(values, weights, kernel_size, dilation)


def test_patch_attention_bad_arguments() -> None:
    values, weights = _inputs(3)
    with pytest.raises(ValueError, match="odd"):
        patch_attention(values, weights[:, :, :4], 2)
    with pytest.raises(ValueError, match="int"):
        patch_attention(values, weights, 3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        patch_attention(values, weights.float(), 3)
    with pytest.raises(ValueError):
        unfold_patches(values, 4)
    with pytest.raises(ValueError):
        unfold_patches(values[0], 3)


# ----------------------------------------------------------------------------------------------
# Reflect padding


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 2), (5, 1)])
def test_reflect_padding_matches_naive_loop(kernel_size: int, dilation: int) -> None:
    values, weights = _inputs(kernel_size, 2)
    expected = naive_patch_attention(values, weights, kernel_size, dilation, reflect=True)
    out = patch_attention(values, weights, kernel_size, dilation, "reflect")
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(
        unfold_patches(values, kernel_size, dilation, "reflect").numpy(),
        naive_unfold(values, kernel_size, dilation, reflect=True),
    )
    # Reflect differs from zeros exactly where a patch crosses the border.
    assert not torch.allclose(out, patch_attention(values, weights, kernel_size, dilation))


def test_reflect_padding_needs_a_larger_image() -> None:
    values, weights = _inputs(5, shape=(1, 4, 2, 6))
    with pytest.raises(ValueError, match="reflect padding of 2"):
        patch_attention(values, weights, 5, 1, "reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        patch_attention(values, weights, 5, 1, "circular")


# ----------------------------------------------------------------------------------------------
# Backend dispatch


@pytest.mark.parametrize("requested", ["auto", "ref", "cuda"])
def test_cpu_tensors_use_the_reference_without_building(
    requested: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gantk.ops import build

    def no_build(required: bool = False):
        raise AssertionError("CPU tensors must never trigger a kernel build")

    monkeypatch.setattr(build, "load_kernels", no_build)
    monkeypatch.setenv("GANTK_OPS", requested)
    values, weights = _inputs(3)
    assert torch.equal(patch_attention(values, weights, 3), patch_attention_ref(values, weights, 3))


def test_dispatch_rejects_unknown_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTK_OPS", "triton")
    values, weights = _inputs(3)
    with pytest.raises(GantkError, match="GANTK_OPS"):
        patch_attention(values, weights, 3)


def test_dispatch_sends_kernel_calls_to_the_loaded_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, bool]] = []

    class FakeKernels:
        @staticmethod
        def patch_attention_forward(values, weights, kernel_size, dilation, reflect):
            calls.append((kernel_size, dilation, reflect))
            return torch.full_like(values, 7.0)

    monkeypatch.setattr(dispatch, "kernels_for", lambda tensor: FakeKernels)
    values, weights = _inputs(3)
    out = patch_attention(values, weights, 3, 2, "reflect")
    assert calls == [(3, 2, True)] and bool((out == 7.0).all())


# ----------------------------------------------------------------------------------------------
# SAN attention


def _randomize_projection(module: SANAttention, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.proj.weight.copy_(0.2 * torch.randn(module.proj.weight.shape, generator=gen))
        module.proj.bias.copy_(0.2 * torch.randn(module.proj.bias.shape, generator=gen))


def _pair(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=gen, dtype=torch.float64),
        torch.randn(shape, generator=gen, dtype=torch.float64),
    )


def test_san_sizes_and_shape() -> None:
    torch.manual_seed(0)
    module = SANAttention(64).double()
    assert (module.kernel_size, module.rel_channels, module.mid_channels) == (7, 4, 16)
    assert module.weight_channels == 8
    kq, v = _pair((2, 64, 8, 8))
    assert module(kq, v).shape == (2, 64, 8, 8)
    # Tiny channel counts clamp every reduced width to at least 1.
    small = SANAttention(4, kernel_size=3)
    assert (small.rel_channels, small.mid_channels, small.weight_channels) == (1, 1, 1)
    assert small(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)


def test_san_fresh_module_is_identity() -> None:
    torch.manual_seed(0)
    module = SANAttention(16, kernel_size=3).double()
    kq, v = _pair((2, 16, 6, 7))
    assert torch.equal(module(kq, v), v)
    assert torch.equal(module(v, v), v)  # self-attention form


def test_san_reference_attention_depends_on_kq_source() -> None:
    torch.manual_seed(0)
    module = SANAttention(16, kernel_size=3).double()
    _randomize_projection(module)
    kq, v = _pair((2, 16, 6, 7))
    other_kq, _ = _pair((2, 16, 6, 7), seed=1)
    diff = (module(kq, v) - module(other_kq, v)).abs().max()
    assert diff > 1e-6


def test_san_is_local_in_both_sources() -> None:
    """Output at (i, j) reads values and keys only inside the k x k window around (i, j).

    V and K are 1x1 convs (per pixel), the weights at (i, j) come from Q(i, j) and the K patch
    around (i, j), the aggregation reads the V patch around (i, j), the projection is 1x1 and the
    residual is v_source(i, j). So changing either source outside the window must leave the
    output at (i, j) unchanged, while changing it at a window pixel other than the centre must
    not.
    """
    torch.manual_seed(0)
    k, (i, j) = 3, (3, 4)
    module = SANAttention(16, kernel_size=k).double()
    _randomize_projection(module)
    kq, v = _pair((1, 16, 8, 9))
    base = module(kq, v)[..., i, j]

    outside = torch.ones(8, 9, dtype=torch.bool)
    outside[i - k // 2 : i + k // 2 + 1, j - k // 2 : j + k // 2 + 1] = False
    noise = torch.randn(1, 16, 8, 9, dtype=torch.float64) * outside

    out_v = module(kq, v + noise)
    torch.testing.assert_close(out_v[..., i, j], base, rtol=0, atol=1e-12)
    out_kq = module(kq + noise, v)
    torch.testing.assert_close(out_kq[..., i, j], base, rtol=0, atol=1e-12)
    # The perturbation did change the output where it lies (so the check above is not vacuous).
    assert (out_v[..., 0, 0] - module(kq, v)[..., 0, 0]).abs().max() > 1e-6

    # Positive control: a change at a window corner (not the centre) does reach (i, j).
    corner = torch.zeros(1, 16, 8, 9, dtype=torch.float64)
    corner[..., i - k // 2, j + k // 2] = 1.0
    assert (module(kq, v + corner)[..., i, j] - base).abs().max() > 1e-6
    assert (module(kq + corner, v)[..., i, j] - base).abs().max() > 1e-6


@pytest.mark.parametrize(
    ("kernel_size", "dilation", "padding_mode"),
    [(3, 1, "zeros"), (5, 2, "zeros"), (3, 1, "reflect"), (5, 1, "reflect")],
)
def test_key_patch_linear_equals_unfold_then_linear(
    kernel_size: int, dilation: int, padding_mode: str
) -> None:
    gen = torch.Generator().manual_seed(3)
    keys = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3 * kernel_size**2, 1, 1, generator=gen, dtype=torch.float64)
    unfolded = torch.from_numpy(
        naive_unfold(keys, kernel_size, dilation, reflect=padding_mode == "reflect")
    ).flatten(1, 2)
    expected = torch.nn.functional.conv2d(unfolded, weight)
    out = key_patch_linear(keys, weight, kernel_size, dilation, padding_mode)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="weight must be"):
        key_patch_linear(keys, weight[:, :-1], kernel_size, dilation, padding_mode)


def test_san_forward_is_the_unfolded_formula() -> None:
    # The block computes its weight MLP's first layer as a convolution; the definition is that
    # layer applied to concat(query, unfolded key patch).
    torch.manual_seed(0)
    module = SANAttention(16, kernel_size=3).double()
    _randomize_projection(module)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    leaky = torch.nn.functional.leaky_relu
    query = leaky(module.query(x), 0.2)
    key = leaky(module.key(x), 0.2)
    value = leaky(module.value(x), 0.2)
    # Patches reflect at the border, as the SAN reference pads (nn.ReflectionPad2d).
    patches = torch.from_numpy(naive_unfold(key, 3, 1, reflect=True)).flatten(1, 2)
    weights = module.weight_mlp(torch.cat([query, patches], dim=1)).view(2, 2, 9, 5, 5)
    attended = torch.from_numpy(naive_patch_attention(value, weights, 3, 1, reflect=True))
    expected = x + module.proj(attended)
    torch.testing.assert_close(module(x, x), expected, rtol=0, atol=1e-10)


def test_san_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        SANAttention(16, kernel_size=4)
    with pytest.raises(ValueError, match="multiple"):
        SANAttention(10, share_planes=3)  # Cw = 3 does not divide 10
    with pytest.raises(ValueError):
        SANAttention(0)
    with pytest.raises(ValueError):
        SANAttention(16, rel_reduction=0)
    module = SANAttention(16, kernel_size=3)
    with pytest.raises(ValueError, match="same shape"):
        module(torch.zeros(1, 16, 5, 5), torch.zeros(1, 16, 5, 6))
    with pytest.raises(ValueError, match="kq_source"):
        module(torch.zeros(1, 8, 5, 5), torch.zeros(1, 8, 5, 5))


# ----------------------------------------------------------------------------------------------
# SAGAN attention


def test_sagan_fresh_module_is_identity() -> None:
    torch.manual_seed(0)
    module = SAGANAttention(16).double()
    assert module.gamma.detach().item() == 0.0
    kq, v = _pair((2, 16, 5, 6))
    assert torch.equal(module(kq, v), v)


def test_sagan_attention_is_global() -> None:
    torch.manual_seed(0)
    module = SAGANAttention(16).double()
    with torch.no_grad():
        module.gamma.fill_(1.0)
    kq, v = _pair((1, 16, 6, 7))
    base = module(kq, v)[..., 0, 0]
    far = torch.zeros_like(v)
    far[..., -1, -1] = 1.0
    # The opposite corner influences pixel (0, 0) through both values and keys.
    assert (module(kq, v + far)[..., 0, 0] - base).abs().max() > 1e-6
    assert (module(kq + far, v)[..., 0, 0] - base).abs().max() > 1e-6
    assert module(kq, v).shape == v.shape


def test_sagan_validation() -> None:
    module = SAGANAttention(16)
    with pytest.raises(ValueError):
        module(torch.zeros(1, 16, 4, 4), torch.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError):
        SAGANAttention(0)


# ----------------------------------------------------------------------------------------------
# Gradients


def _nonzero_blocks() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    san = SANAttention(16, kernel_size=3).double()
    _randomize_projection(san)
    sagan = SAGANAttention(16).double()
    with torch.no_grad():
        sagan.gamma.fill_(0.5)
    return [san, sagan]


@pytest.mark.parametrize("index", [0, 1], ids=["san", "sagan"])
def test_backward_reaches_every_parameter(index: int) -> None:
    module = _nonzero_blocks()[index]
    kq, v = _pair((2, 16, 5, 6))
    module(kq, v).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


@pytest.mark.parametrize("index", [0, 1], ids=["san", "sagan"])
def test_double_backward_for_r1_penalty(index: int) -> None:
    module = _nonzero_blocks()[index]
    kq, v = _pair((2, 16, 5, 6))
    v.requires_grad_(True)
    (grad,) = torch.autograd.grad(module(kq, v).sum(), v, create_graph=True)
    grad.square().sum().backward()
    for name, param in module.named_parameters():
        # Output-side biases add a constant, so the input gradient (and the penalty) ignores them.
        if param.grad is None:
            assert name.endswith("bias"), name
        else:
            assert torch.isfinite(param.grad).all(), name
        if name.endswith("weight"):
            assert param.grad is not None and param.grad.abs().max() > 0, name


# ----------------------------------------------------------------------------------------------
# Factory and spec parsing


def test_make_attention() -> None:
    san = make_attention("san", 32, kernel_size=5)
    assert isinstance(san, SANAttention) and san.kernel_size == 5 and san.channels == 32
    sagan = make_attention("sagan", 32)
    assert isinstance(sagan, SAGANAttention) and sagan.channels == 32
    for bad in ("foo", "", "SAN"):
        with pytest.raises(ValueError, match="unknown attention kind"):
            make_attention(bad, 32)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("san@32", ("san", 32)),
        ("sagan@64", ("sagan", 64)),
        (" SAN@16 ", ("san", 16)),
        ("san @ 8", ("san", 8)),
        ("san@1", ("san", 1)),
        (None, None),
        ("", None),
        ("   ", None),
        ("none", None),
        ("None", None),
    ],
)
def test_parse_attention_spec_valid(spec: str | None, expected: tuple[str, int] | None) -> None:
    assert parse_attention_spec(spec, ATTENTION_KINDS) == expected


@pytest.mark.parametrize(
    ("spec", "allowed", "reason"),
    [
        ("foo@32", ATTENTION_KINDS, "unknown kind 'foo'"),
        ("sagan@32", ("san",), "unknown kind 'sagan'"),
        ("san", ATTENTION_KINDS, "missing @RES"),
        ("32", ATTENTION_KINDS, "missing @RES"),
        ("san@", ATTENTION_KINDS, "missing resolution"),
        ("@32", ATTENTION_KINDS, "missing KIND"),
        ("san@32@64", ATTENTION_KINDS, "more than one"),
        ("san@abc", ATTENTION_KINDS, "not an integer"),
        ("san@3.5", ATTENTION_KINDS, "not an integer"),
        ("san@+32", ATTENTION_KINDS, "not an integer"),
        ("san@-32", ATTENTION_KINDS, "not an integer"),
        ("san@3_2", ATTENTION_KINDS, "not an integer"),
        ("san@24", ATTENTION_KINDS, "not a power of two"),
        ("san@0", ATTENTION_KINDS, "not a power of two"),
    ],
)
def test_parse_attention_spec_errors(spec: str, allowed: tuple[str, ...], reason: str) -> None:
    with pytest.raises(GantkError) as info:
        parse_attention_spec(spec, allowed)
    message = str(info.value)
    assert "\n" not in message
    assert reason in message
    assert repr(spec) in message
    assert f"expected KIND@RES with KIND one of {', '.join(allowed)}" in message
    assert "power of two" in message


def test_parse_attention_spec_names_the_option() -> None:
    with pytest.raises(GantkError) as info:
        parse_attention_spec("foo@32", ATTENTION_KINDS, option="--g-attn")
    assert str(info.value).startswith(
        "--g-attn 'foo@32': unknown kind 'foo'; expected KIND@RES with KIND one of san, sagan "
        "and RES a power of two"
    )


def test_parse_attention_spec_needs_allowed_kinds() -> None:
    with pytest.raises(ValueError):
        parse_attention_spec("san@32", ())


def test_san_block_zero_pads_maps_too_small_to_reflect() -> None:
    """A 3-pixel-high map cannot reflect k // 2 = 3 pixels: the block zero-pads instead."""
    torch.manual_seed(0)
    k, height, padding = 7, 3, "zeros"
    module = SANAttention(16, kernel_size=k).double()
    _randomize_projection(module)
    kq, v = _pair((2, 16, height, height + 1))
    act = torch.nn.functional.leaky_relu
    q, key, val = (act(conv(x), 0.2) for conv, x in
                   ((module.query, kq), (module.key, kq), (module.value, v)))  # fmt: skip
    patches = unfold_patches(key, k, 1, padding).flatten(1, 2)  # (B, rel * k*k, H, W)
    hidden = module.weight_mlp[0](torch.cat([q, patches], dim=1))
    weights = module.weight_mlp[2](module.weight_mlp[1](hidden))
    weights = weights.view(2, module.weight_channels, k * k, height, height + 1)
    expected = v + module.proj(patch_attention_ref(val, weights, k, 1, padding))
    torch.testing.assert_close(module(kq, v), expected, rtol=1e-9, atol=1e-12)
