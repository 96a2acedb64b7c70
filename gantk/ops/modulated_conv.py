"""Modulated convolution with demodulation (StyleGAN2, Karras et al. 2020).

Each sample gets its own weights: w' = w * s (``styles`` s scale the input channels), then,
with demodulation, w'' = w' / sqrt(sum over in-channels and taps of w'^2 + 1e-8) so each output
channel has unit expected variance. Two equivalent evaluations:

- fused: build the per-sample weights and run one grouped convolution (groups = batch);
- unfused: scale the input by s, run the shared convolution, scale the output by the
  demodulation coefficients: no per-sample weight tensor, cheaper for training.

The reference below is the specification. For CUDA tensors, :func:`modulated_conv2d` runs the
compiled "scaled convolution" kernel (``csrc/modulated_conv.cu``) when :mod:`gantk.ops` allows
it: styles are applied as the input is loaded and demodulation in the epilogue, so neither the
per-sample weights nor a scaled copy of ``x`` is written to memory.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.ops import dispatch
from gantk.ops.autograd_routing import reference_gradients

# What the compiled kernel handles: stride 1, "same" padding, these kernel sizes and dtypes.
KERNEL_SIZES = (1, 3)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_KERNEL_BATCH = 65535  # the kernel's grid puts the batch on gridDim.z


def demodulation(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-output-channel coefficients 1/sqrt(sum (w*s)^2 + 1e-8): (B, Cout)."""
    w2 = weight.square().sum(dim=[2, 3])  # (Cout, Cin)
    return (styles.square() @ w2.t() + 1e-8).rsqrt()


def modulated_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    fused: bool = True,
) -> torch.Tensor:
    """x (B, Cin, H, W), weight (Cout, Cin, k, k), styles (B, Cin) -> (B, Cout, H', W')."""
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[0]
    if weight.shape[1] != in_channels or styles.shape != (batch, in_channels):
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} "
            f"and styles {tuple(styles.shape)} do not agree"
        )
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if not fused:
        x = x * styles[:, :, None, None]
        x = F.conv2d(x, weight, padding=padding)
        if demodulate:
            x = x * demodulation(weight, styles)[:, :, None, None]
        return x
    w = weight[None] * styles[:, None, :, None, None]  # (B, Cout, Cin, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, batch * in_channels, height, width)
    out = F.conv2d(
        x,
        w.reshape(batch * out_channels, in_channels, *weight.shape[2:]),
        padding=padding,
        groups=batch,
    )
    return out.reshape(batch, out_channels, *out.shape[2:])


def scaled_conv2d_ref(
    x: Tensor, weight: Tensor, in_scale: Tensor, out_scale: Tensor | None
) -> Tensor:
    """``out_scale * conv2d(x * in_scale, weight)`` with same padding: what the kernel computes.

    ``in_scale`` (B, Cin) and ``out_scale`` (B, Cout) or None are float32 (float64 for float64
    ``x``); the convolution runs in ``x``'s dtype.
    """
    y = F.conv2d(x * in_scale[:, :, None, None].to(x.dtype), weight, padding=weight.shape[-1] // 2)
    if out_scale is not None:
        y = y * out_scale[:, :, None, None].to(y.dtype)
    return y


class ScaledConvKernel(torch.autograd.Function):
    """:func:`scaled_conv2d_ref` through the compiled kernel, with a kernel backward.

    Backward: the input gradient is the same kernel run on the flipped, transposed weight (a
    transposed convolution of stride 1), scaled by the styles; the weight gradient is the
    framework's weight-gradient convolution; style and demodulation gradients are per-channel
    sums. ``create_graph=True`` calls go to the differentiable reference.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        kernels: ModuleType,
        x: Tensor,
        weight: Tensor,
        in_scale: Tensor,
        out_scale: Tensor | None,
    ) -> Tensor:
        out = kernels.scaled_conv2d(x, weight, in_scale, out_scale)
        ctx.kernels = kernels
        ctx.save_for_backward(x, weight, in_scale, out_scale, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, weight, in_scale, out_scale, out = ctx.saved_tensors
        need_x, need_w, need_in, need_out = ctx.needs_input_grad[1:5]
        if torch.is_grad_enabled():  # create_graph=True: differentiable reference backward
            grads = reference_gradients(
                scaled_conv2d_ref,
                (x, weight, in_scale, out_scale),
                ctx.needs_input_grad[1:5],
                grad_out,
            )
            return (None, *grads)
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_in = grad_out_scale = None
        if need_x or need_in:
            # u = conv_transpose(grad * out_scale, weight): the kernel with the output scale
            # applied on load and the flipped, transposed weight.
            load_scale = (
                out_scale
                if out_scale is not None
                else torch.ones(out.shape[:2], dtype=in_scale.dtype, device=out.device)
            )
            flipped = weight.transpose(0, 1).flip(2, 3).contiguous()
            u = ctx.kernels.scaled_conv2d(grad_out, flipped, load_scale, None)
            if need_x:
                grad_x = u * in_scale[:, :, None, None].to(u.dtype)
            if need_in:
                grad_in = (u.to(in_scale.dtype) * x.to(in_scale.dtype)).sum(dim=(2, 3))
        if need_w:
            scaled_grad = (
                grad_out
                if out_scale is None
                else grad_out * out_scale[:, :, None, None].to(grad_out.dtype)
            )
            grad_w = torch.nn.grad.conv2d_weight(
                x * in_scale[:, :, None, None].to(x.dtype),
                weight.shape,
                scaled_grad,
                padding=weight.shape[-1] // 2,
            )
        if need_out and out_scale is not None:
            # out = out_scale * z, so d loss / d out_scale = sum(grad * z) = sum(grad * out) / s.
            # Valid for positive scales only, which demodulation coefficients rsqrt(...) are;
            # callers of this Function must not pass zero or negative out_scale.
            grad_out_scale = (grad_out.to(out_scale.dtype) * out.to(out_scale.dtype)).sum(
                dim=(2, 3)
            ) / out_scale
        return None, grad_x, grad_w, grad_in, grad_out_scale


def kernel_covers(x: Tensor, weight: Tensor, styles: Tensor, padding: int) -> bool:
    """Whether the compiled kernel handles this call (shapes agree, supported size and dtype)."""
    if x.dim() != 4 or weight.dim() != 4 or styles.dim() != 2:
        return False
    k = weight.shape[-1]
    return (
        k in KERNEL_SIZES
        and weight.shape[-2] == k
        and padding == k // 2
        and x.dtype in KERNEL_DTYPES
        and weight.shape[1] == x.shape[1]
        and tuple(styles.shape) == (x.shape[0], x.shape[1])
        and x.shape[0] <= _MAX_KERNEL_BATCH
    )


def modulated_conv2d_kernel(
    kernels: ModuleType, x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool
) -> Tensor:
    """Modulated convolution through the compiled kernel (same padding, see ``kernel_covers``).

    Styles and demodulation coefficients are computed in float32 (float64 for float64 inputs)
    whatever ``x``'s dtype; autograd differentiates the coefficients through plain PyTorch.
    """
    if torch.is_autocast_enabled("cuda"):
        # A custom Function is invisible to autocast; cast like conv2d would under --amp.
        x = x.to(torch.get_autocast_dtype("cuda"))
    scale_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    in_scale = styles.to(scale_dtype).contiguous()
    out_scale = demodulation(weight.to(scale_dtype), in_scale).contiguous() if demodulate else None
    return ScaledConvKernel.apply(
        kernels, x.contiguous(), weight.to(x.dtype).contiguous(), in_scale, out_scale
    )


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    padding: int = 0,
    fused: bool | None = None,
) -> Tensor:
    """Public entry point.

    CUDA tensors use the compiled kernel when :mod:`gantk.ops` allows it and it covers the call;
    otherwise the reference runs, with ``fused=None`` picking the unfused form when gradients
    are needed (training) and the fused one otherwise (inference), which is faster for each.
    """
    if x.is_cuda and kernel_covers(x, weight, styles, padding):
        kernels = dispatch.kernels_for(x)
        if kernels is not None:
            return modulated_conv2d_kernel(kernels, x, weight, styles, demodulate)
    if fused is None:
        fused = not torch.is_grad_enabled()
    return modulated_conv2d_ref(x, weight, styles, demodulate, padding, fused)
