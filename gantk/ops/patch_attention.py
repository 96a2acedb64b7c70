"""Patch-wise attention aggregation (the core of SAN, Zhao et al. 2020, "patchwise" variant).

Every output pixel is a weighted sum of the ``k x k`` (optionally dilated) patch of values
centred on it, with a separate weight per patch offset, per pixel and per weight channel:

    out[b, c, i, j] = sum_p weights[b, c % Cw, p, i, j]
                            * values_zero_padded[b, c, i + dy_p * dilation, j + dx_p * dilation]

Patch offsets ``p`` are in row-major order (``dy`` outer, ``dx`` inner, each running from
``-(k // 2)`` to ``k // 2``), the same order :func:`torch.nn.functional.unfold` uses. Channel
``c`` reads weight channel ``c % Cw``, so the ``C / Cw`` channel groups share one set of weights
(SAN's "share planes").

:func:`patch_attention_ref` is the definition in plain PyTorch; :func:`patch_attention` is the
entry point the networks call, and picks an implementation through :mod:`gantk.ops`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk import ops

OP_NAME = "patch_attention"

PatchAttentionImpl = Callable[[Tensor, Tensor, int, int], Tensor]

# Implementations by backend name. A compiled implementation is used only when it is listed here
# *and* its op name is in ``gantk.ops.CUDA_KERNELS`` (see :func:`_choose_backend`).
_IMPLEMENTATIONS: dict[str, PatchAttentionImpl] = {}

# Accumulating a 49-term sum in bfloat16/float16 loses most of the mantissa; the reference is the
# specification, so it computes these types in float32 and rounds once at the end.
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def _check_kernel(kernel_size: int, dilation: int) -> None:
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


def _check_inputs(values: Tensor, weights: Tensor, kernel_size: int, dilation: int) -> None:
    _check_kernel(kernel_size, dilation)
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


def unfold_patches(x: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """The zero-padded ``k x k`` patch around every pixel: ``(B, C, H, W) -> (B, C, k*k, H, W)``.

    ``result[b, c, p, i, j] = x_zero_padded[b, c, i + dy_p * dilation, j + dx_p * dilation]``
    with the offsets ``p`` in the row-major order described in the module docstring. The result is
    ``k*k`` times the size of ``x`` (49x for SAN's 7x7 patches).
    """
    _check_kernel(kernel_size, dilation)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    # Padding of dilation * (k // 2) on each side keeps the output H x W for odd k and centres
    # the patch on the pixel; unfold lays out channels outer and patch offsets inner, row-major.
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
    return cols.view(batch, channels, kernel_size * kernel_size, height, width)


def patch_attention_ref(
    values: Tensor, weights: Tensor, kernel_size: int, dilation: int = 1
) -> Tensor:
    """Reference implementation of :func:`patch_attention` in plain PyTorch.

    Differentiable (twice, since unfold's backward is fold), any device, float32/float64 in their
    own precision and float16/bfloat16 computed in float32. It materializes the unfolded values
    (``k*k`` times the size of ``values``), which is what makes it simple to check.
    """
    _check_inputs(values, weights, kernel_size, dilation)
    out_dtype = values.dtype
    if out_dtype in _UPCAST_DTYPES:
        values = values.float()
        weights = weights.float()
    batch, channels, height, width = values.shape
    w_channels = weights.shape[1]
    groups = channels // w_channels
    patches = unfold_patches(values, kernel_size, dilation)
    # Channel c = g * Cw + r reads weight channel r = c % Cw: split C into (groups, Cw) and
    # broadcast the weights over the group axis.
    patches = patches.view(batch, groups, w_channels, kernel_size * kernel_size, height, width)
    out = (patches * weights.unsqueeze(1)).sum(dim=3)
    return out.reshape(batch, channels, height, width).to(out_dtype)


_IMPLEMENTATIONS["ref"] = patch_attention_ref


def _choose_backend(requested: str, on_cuda: bool) -> str:
    """The backend to run: ``"cuda"`` or ``"ref"``.

    The compiled kernel runs only when it is allowed (``GANTK_OPS`` is ``auto`` or ``cuda``), the
    tensors live on a GPU, and the kernel is both announced in ``gantk.ops.CUDA_KERNELS`` and
    present in this module. In every other case the reference runs, without complaint: asking for
    ``cuda`` where no kernel exists must not stop a run that the reference can do.
    """
    if requested == "ref" or not on_cuda:
        return "ref"
    if OP_NAME in ops.CUDA_KERNELS and "cuda" in _IMPLEMENTATIONS:
        return "cuda"
    return "ref"


def patch_attention(values: Tensor, weights: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Aggregate each pixel's ``k x k`` value patch with per-pixel weights.

    Args:
        values: ``(B, C, H, W)``.
        weights: ``(B, Cw, kernel_size**2, H, W)`` with ``C % Cw == 0``; channel ``c`` uses
            weight channel ``c % Cw``. Same dtype and device as ``values``.
        kernel_size: odd patch side ``k``.
        dilation: spacing between patch taps.

    Returns:
        ``(B, C, H, W)``: see the module docstring for the exact formula (zero padding outside the
        image).

    Raises:
        ValueError: for an even or non-positive ``kernel_size``, a bad ``dilation`` or tensors whose
            shapes, dtypes or devices do not fit together.
        gantk.errors.GantkError: when ``GANTK_OPS`` holds an unknown value.
    """
    _check_inputs(values, weights, kernel_size, dilation)
    backend = _choose_backend(ops.requested_backend(), values.is_cuda)
    return _IMPLEMENTATIONS[backend](values, weights, kernel_size, dilation)
