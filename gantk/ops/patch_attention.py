"""Patch-wise attention aggregation (the core of SAN, Zhao et al. 2020, "patchwise" variant).

Every output pixel is a weighted sum of the ``k x k`` (optionally dilated) patch of values
centred on it, with a separate weight per patch offset, per pixel and per weight channel:

    out[b, c, i, j] = sum_p weights[b, c % Cw, p, i, j]
                            * values_padded[b, c, i + dy_p * dilation, j + dx_p * dilation]

Patch offsets ``p`` are in row-major order (``dy`` outer, ``dx`` inner, each running from
``-(k // 2)`` to ``k // 2``), the same order :func:`torch.nn.functional.unfold` uses. Channel
``c`` reads weight channel ``c % Cw``, so the ``C / Cw`` channel groups share one set of weights
(SAN's "share planes"). Padding is zeros or reflect (torch's ``"reflect"``: mirrored about the
edge pixel, which is not repeated).

:func:`patch_attention_ref` is the definition in plain PyTorch; :func:`patch_attention` is the
entry point the networks call, and runs the CUDA kernel for CUDA tensors when :mod:`gantk.ops`
allows it. :func:`key_patch_linear` is the other half of a SAN block: the linear layer applied to
every pixel's ``k x k`` key patch, computed as a convolution so that patch is never unfolded.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.ops import dispatch
from gantk.ops.autograd_routing import reference_gradients

PADDING_MODES = ("zeros", "reflect")

# Accumulating a 49-term sum in bfloat16/float16 loses most of the mantissa; the reference is the
# specification, so it computes these types in float32 and rounds once at the end.
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def _check_kernel(kernel_size: int, dilation: int, padding_mode: str = "zeros") -> None:
    # bool is an int subclass; ``kernel_size=True`` is a caller bug, not a 1x1 patch.
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
        raise ValueError(f"kernel_size must be an int, got {type(kernel_size).__name__}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be a positive odd number so the patch has a centre, "
            f"got {kernel_size}"
        )
    if not isinstance(dilation, int) or isinstance(dilation, bool) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def _check_reflect_fits(x: Tensor, kernel_size: int, dilation: int, padding_mode: str) -> None:
    pad = dilation * (kernel_size // 2)
    if padding_mode == "reflect" and (pad >= x.shape[-2] or pad >= x.shape[-1]):
        raise ValueError(
            f"reflect padding of {pad} needs an image larger than {pad} pixels on each side, "
            f"got {tuple(x.shape[-2:])}"
        )


def _check_inputs(
    values: Tensor, weights: Tensor, kernel_size: int, dilation: int, padding_mode: str
) -> None:
    _check_kernel(kernel_size, dilation, padding_mode)
    if values.dim() != 4:
        raise ValueError(f"values must be (B, C, H, W), got shape {tuple(values.shape)}")
    if weights.dim() != 5:
        raise ValueError(
            f"weights must be (B, Cw, kernel_size**2, H, W), got shape {tuple(weights.shape)}"
        )
    batch, channels, height, width = values.shape
    w_batch, w_channels, w_taps, w_height, w_width = weights.shape
    taps = kernel_size * kernel_size
    if w_batch != batch or w_taps != taps or (w_height, w_width) != (height, width):
        raise ValueError(
            f"weights shape {tuple(weights.shape)} does not match values shape "
            f"{tuple(values.shape)} and kernel_size {kernel_size}: expected "
            f"({batch}, Cw, {taps}, {height}, {width})"
        )
    if w_channels < 1 or channels % w_channels != 0:
        raise ValueError(
            f"values channels ({channels}) must be a multiple of weight channels ({w_channels})"
        )
    if values.dtype != weights.dtype:
        raise ValueError(
            f"values and weights must have the same dtype, got {values.dtype} and {weights.dtype}"
        )
    if values.device != weights.device:
        raise ValueError(
            f"values and weights must be on the same device, got {values.device} and "
            f"{weights.device}"
        )
    _check_reflect_fits(values, kernel_size, dilation, padding_mode)


def _pad(x: Tensor, kernel_size: int, dilation: int, padding_mode: str) -> tuple[Tensor, int]:
    """``x`` padded for a "same"-size patch op, and the padding still left to the op itself."""
    pad = dilation * (kernel_size // 2)
    if padding_mode == "reflect" and pad > 0:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect"), 0
    return x, pad


def unfold_patches(
    x: Tensor, kernel_size: int, dilation: int = 1, padding_mode: str = "zeros"
) -> Tensor:
    """The padded ``k x k`` patch around every pixel: ``(B, C, H, W) -> (B, C, k*k, H, W)``.

    ``result[b, c, p, i, j] = x_padded[b, c, i + dy_p * dilation, j + dx_p * dilation]`` with
    the offsets ``p`` in the row-major order described in the module docstring. The result is
    ``k*k`` times the size of ``x`` (49x for SAN's 7x7 patches).
    """
    _check_kernel(kernel_size, dilation, padding_mode)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    _check_reflect_fits(x, kernel_size, dilation, padding_mode)
    batch, channels, height, width = x.shape
    # Padding of dilation * (k // 2) on each side keeps the output H x W for odd k and centres
    # the patch on the pixel; unfold lays out channels outer and patch offsets inner, row-major.
    padded, pad = _pad(x, kernel_size, dilation, padding_mode)
    cols = F.unfold(padded, kernel_size, dilation=dilation, padding=pad)
    return cols.view(batch, channels, kernel_size * kernel_size, height, width)


def patch_attention_ref(
    values: Tensor,
    weights: Tensor,
    kernel_size: int,
    dilation: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """Reference implementation of :func:`patch_attention` in plain PyTorch.

    Differentiable (twice, since unfold's backward is fold), any device, float32/float64 in their
    own precision and float16/bfloat16 computed in float32. It materializes the unfolded values
    (``k*k`` times the size of ``values``), which is what makes it simple to check.
    """
    _check_inputs(values, weights, kernel_size, dilation, padding_mode)
    out_dtype = values.dtype
    if out_dtype in _UPCAST_DTYPES:
        values = values.float()
        weights = weights.float()
    batch, channels, height, width = values.shape
    w_channels = weights.shape[1]
    groups = channels // w_channels
    patches = unfold_patches(values, kernel_size, dilation, padding_mode)
    # Channel c = g * Cw + r reads weight channel r = c % Cw: split C into (groups, Cw) and
    # broadcast the weights over the group axis.
    patches = patches.view(batch, groups, w_channels, kernel_size * kernel_size, height, width)
    out = (patches * weights.unsqueeze(1)).sum(dim=3)
    return out.reshape(batch, channels, height, width).to(out_dtype)


class PatchAttentionKernel(torch.autograd.Function):
    """:func:`patch_attention` through compiled kernels (``kernels``: the module gantk.ops.build
    loads, or anything with its ``patch_attention_forward``/``patch_attention_backward``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        kernels: ModuleType,
        values: Tensor,
        weights: Tensor,
        kernel_size: int,
        dilation: int,
        padding_mode: str,
    ) -> Tensor:
        reflect = padding_mode == "reflect"
        ctx.save_for_backward(values, weights)
        ctx.kernels = kernels
        ctx.geometry = (kernel_size, dilation, padding_mode)
        return kernels.patch_attention_forward(values, weights, kernel_size, dilation, reflect)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        values, weights = ctx.saved_tensors
        kernel_size, dilation, padding_mode = ctx.geometry
        needs = ctx.needs_input_grad[1:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiable reference backward
            grads = reference_gradients(
                lambda v, w: patch_attention_ref(v, w, kernel_size, dilation, padding_mode),
                (values, weights),
                needs,
                grad_out,
            )
            return (None, *grads, None, None, None)
        grad_values, grad_weights = ctx.kernels.patch_attention_backward(
            grad_out.contiguous(),
            values,
            weights,
            kernel_size,
            dilation,
            padding_mode == "reflect",
            needs[0],
            needs[1],
        )
        return None, grad_values, grad_weights, None, None, None


def patch_attention(
    values: Tensor,
    weights: Tensor,
    kernel_size: int,
    dilation: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """Aggregate each pixel's ``k x k`` value patch with per-pixel weights.

    Args:
        values: ``(B, C, H, W)``.
        weights: ``(B, Cw, kernel_size**2, H, W)`` with ``C % Cw == 0``; channel ``c`` uses
            weight channel ``c % Cw``. Same dtype and device as ``values``.
        kernel_size: odd patch side ``k``.
        dilation: spacing between patch taps.
        padding_mode: ``"zeros"`` or ``"reflect"``.

    Returns:
        ``(B, C, H, W)``: see the module docstring for the exact formula.

    Raises:
        ValueError: for an even or non-positive ``kernel_size``, a bad ``dilation`` or padding
            mode, or tensors whose shapes, dtypes or devices do not fit together.
        gantk.errors.GantkError: when ``GANTK_OPS`` holds an unknown value, or is ``cuda`` and
            the kernels cannot be built.
    """
    _check_inputs(values, weights, kernel_size, dilation, padding_mode)
    kernels = dispatch.kernels_for(values)
    if kernels is None:
        return patch_attention_ref(values, weights, kernel_size, dilation, padding_mode)
    # contiguous() here, outside the Function: a copy made inside forward would be detached
    # from the inputs' history, and create_graph backward would lose its way back to them.
    return PatchAttentionKernel.apply(
        kernels, values.contiguous(), weights.contiguous(), kernel_size, dilation, padding_mode
    )


def key_patch_linear(
    keys: Tensor,
    weight: Tensor,
    kernel_size: int,
    dilation: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """A linear map of every pixel's flattened ``k x k`` key patch, without unfolding it.

    Equal to ``F.conv2d(unfold_patches(keys, k, dilation, padding_mode).flatten(1, 2), weight)``
    for a 1x1 ``weight`` of shape ``(Cout, C * k*k, 1, 1)`` whose input channels are ordered like
    that flattening (channel outer, patch offset inner). Since an output is a sum over channels
    and offsets of weight times shifted key, that is exactly a ``k x k`` convolution with the
    same weights viewed as ``(Cout, C, k, k)``: cuDNN/oneDNN do it in the memory of the output,
    instead of the ``k*k``-times-larger patch tensor (bias, if any, is added by the caller).
    """
    _check_kernel(kernel_size, dilation, padding_mode)
    if keys.dim() != 4:
        raise ValueError(f"keys must be (B, C, H, W), got shape {tuple(keys.shape)}")
    channels = keys.shape[1]
    taps = kernel_size * kernel_size
    if weight.dim() != 4 or weight.shape[1] != channels * taps or weight.shape[2:] != (1, 1):
        raise ValueError(
            f"weight must be (Cout, {channels * taps}, 1, 1) for {channels} key channels and "
            f"{kernel_size}x{kernel_size} patches, got {tuple(weight.shape)}"
        )
    _check_reflect_fits(keys, kernel_size, dilation, padding_mode)
    padded, pad = _pad(keys, kernel_size, dilation, padding_mode)
    conv_weight = weight.reshape(weight.shape[0], channels, kernel_size, kernel_size)
    return F.conv2d(padded, conv_weight, padding=pad, dilation=dilation)
