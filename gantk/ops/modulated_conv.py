"""Modulated convolution with demodulation (StyleGAN2, Karras et al. 2020).

Each sample gets its own weights: w' = w * s (``styles`` s scale the input channels), then,
with demodulation, w'' = w' / sqrt(sum over in-channels and taps of w'^2 + 1e-8) so each output
channel has unit expected variance. Two equivalent evaluations:

- fused: build the per-sample weights and run one grouped convolution (groups = batch);
- unfused: scale the input by s, run the shared convolution, scale the output by the
  demodulation coefficients: no per-sample weight tensor, cheaper for training.

The reference below is the specification; a compiled kernel must match it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    fused: bool | None = None,
) -> torch.Tensor:
    """Public entry point: ``fused=None`` picks the unfused form when gradients are needed
    (training) and the fused one otherwise (inference), which is faster for each."""
    if fused is None:
        fused = not torch.is_grad_enabled()
    return modulated_conv2d_ref(x, weight, styles, demodulate, padding, fused)
