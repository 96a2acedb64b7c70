"""The compiled-kernel paths of the ops, checked without a GPU.

- The patch-attention kernels' per-element math (gantk/ops/csrc/patch_attention_math.h) is built
  for the CPU from tests/csrc and compared with the reference and a naive loop, through the same
  autograd Function the CUDA module plugs into.
- The modulated-conv autograd Function is checked with a Python stand-in for the kernel that
  computes the kernel's contract; this verifies the backward formulas (flipped transposed weight
  for the input gradient, style and demodulation gradients) and the create_graph routing.
GPU runs of the real kernels are in test_ops_gpu.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import numpy as np
import pytest
import torch
from naive_ops import naive_patch_attention
from torch import Tensor

from gantk.ops.modulated_conv import (
    ScaledConvKernel,
    modulated_conv2d_kernel,
    modulated_conv2d_ref,
    scaled_conv2d_ref,
)
from gantk.ops.patch_attention import PatchAttentionKernel, patch_attention_ref

pytestmark = pytest.mark.usefixtures("one_thread")


def _patch_inputs(kernel_size: int, w_channels: int, shape=(2, 4, 5, 6), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    batch, _, height, width = shape
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    weights = torch.randn(
        batch, w_channels, kernel_size**2, height, width, generator=gen, dtype=torch.float64
    )
    return values, weights


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize(
    ("kernel_size", "dilation", "w_channels"), [(1, 1, 4), (3, 1, 2), (3, 2, 1), (5, 1, 2)]
)
def test_kernel_math_forward_and_backward_match_reference(
    cpu_patch_kernels: ModuleType,
    kernel_size: int,
    dilation: int,
    w_channels: int,
    padding_mode: str,
) -> None:
    values, weights = _patch_inputs(kernel_size, w_channels)
    reflect = padding_mode == "reflect"
    out = cpu_patch_kernels.patch_attention_forward(values, weights, kernel_size, dilation, reflect)
    expected = naive_patch_attention(values, weights, kernel_size, dilation, reflect=reflect)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)

    grad_out = torch.randn_like(values)
    v = values.clone().requires_grad_(True)
    w = weights.clone().requires_grad_(True)
    patch_attention_ref(v, w, kernel_size, dilation, padding_mode).backward(grad_out)
    grad_v, grad_w = cpu_patch_kernels.patch_attention_backward(
        grad_out, values, weights, kernel_size, dilation, reflect, True, True
    )
    torch.testing.assert_close(grad_v, v.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_w, w.grad, rtol=0, atol=1e-12)
    only_w = cpu_patch_kernels.patch_attention_backward(
        grad_out, values, weights, kernel_size, dilation, reflect, False, True
    )
    assert only_w[0] is None and torch.equal(only_w[1], grad_w)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_patch_kernel_function_gradcheck_and_double_backward(
    cpu_patch_kernels: ModuleType, padding_mode: str
) -> None:
    values, weights = _patch_inputs(3, 2, shape=(1, 4, 4, 5), seed=1)
    values.requires_grad_(True)
    weights.requires_grad_(True)

    def op(v: Tensor, w: Tensor) -> Tensor:
        return PatchAttentionKernel.apply(cpu_patch_kernels, v, w, 3, 1, padding_mode)

    assert torch.autograd.gradcheck(op, (values, weights))
    # Second order goes through the reference: gradients of gradients must be right too.
    assert torch.autograd.gradgradcheck(op, (values, weights))


# ----------------------------------------------------------------------------------------------
# Modulated convolution


class ScaledConvContract:
    """Stands in for the CUDA module: computes exactly what ``scaled_conv2d`` promises."""

    calls: ClassVar[list[tuple[int, ...]]] = []

    @classmethod
    def scaled_conv2d(cls, x, weight, in_scale, out_scale=None):
        cls.calls.append(tuple(weight.shape))
        return scaled_conv2d_ref(x, weight, in_scale, out_scale)


def _conv_inputs(kernel_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, kernel_size, kernel_size, generator=gen, dtype=torch.float64)
    styles = torch.randn(2, 3, generator=gen, dtype=torch.float64) + 1.5
    return x, weight, styles


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_modulated_conv_kernel_path_matches_reference(kernel_size: int, demodulate: bool) -> None:
    x, weight, styles = _conv_inputs(kernel_size)
    tensors = [t.clone().requires_grad_(True) for t in (x, weight, styles)]
    ref_tensors = [t.clone().requires_grad_(True) for t in (x, weight, styles)]
    out = modulated_conv2d_kernel(ScaledConvContract, *tensors, demodulate)
    expected = modulated_conv2d_ref(*ref_tensors, demodulate, kernel_size // 2, fused=True)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    ScaledConvContract.calls.clear()
    out.backward(grad)
    expected.backward(grad)
    # The input gradient ran the kernel once, on the transposed (Cin, Cout, k, k) weight.
    assert ScaledConvContract.calls == [(3, 4, kernel_size, kernel_size)]
    for got, want in zip(tensors, ref_tensors, strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-10)


def test_scaled_conv_function_gradcheck_and_double_backward() -> None:
    x, weight, styles = _conv_inputs(3, seed=2)
    demod = torch.rand(2, 4, dtype=torch.float64) + 0.5
    inputs = tuple(t.requires_grad_(True) for t in (x, weight, styles, demod))

    def op(*args: Tensor) -> Tensor:
        return ScaledConvKernel.apply(ScaledConvContract, *args)

    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)
    # Without the demodulation scale (ToRGB layers).
    assert torch.autograd.gradcheck(
        lambda a, b, c: ScaledConvKernel.apply(ScaledConvContract, a, b, c, None), inputs[:3]
    )


def test_modulated_conv_sends_covered_cuda_calls_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gantk.ops import dispatch, modulated_conv

    seen: list[str] = []
    monkeypatch.setattr(dispatch, "kernels_for", lambda tensor: ScaledConvContract)
    monkeypatch.setattr(
        modulated_conv,
        "modulated_conv2d_kernel",
        lambda kernels, x, weight, styles, demodulate: seen.append("kernel") or x,
    )
    x, weight, styles = _conv_inputs(3)
    # CPU tensors: never the kernel, whatever kernels_for says.
    modulated_conv.modulated_conv2d(x, weight, styles, True, 1)
    assert seen == []
    monkeypatch.setattr(Tensor, "is_cuda", property(lambda self: True))
    modulated_conv.modulated_conv2d(x, weight, styles, True, 1)
    assert seen == ["kernel"]
    # Not covered (padding 0 on a 3x3): the reference, which then runs on these CPU tensors.
    out = modulated_conv.modulated_conv2d(x, weight, styles, True, 0)
    assert seen == ["kernel"] and out.shape == (2, 4, 3, 2)
