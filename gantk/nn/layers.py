"""Equalized-learning-rate layers and other StyleGAN2 building blocks.

Equalized learning rate (Karras et al.): weights are stored as N(0, 1) / lr_multiplier and
scaled at run time by lr_multiplier / sqrt(fan_in), so every layer learns at the same speed
under Adam whatever its fan-in. ``lr_multiplier`` < 1 slows a layer down (the mapping network
uses 0.01).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gantk.nn.resample import DEFAULT_FILTER, downsample2d, filter2d, make_filter

LRELU_GAIN = math.sqrt(2.0)  # keeps activations' variance through leaky ReLU 0.2 layers


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation and its variance-preserving gain."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * (LRELU_GAIN if gain is None else gain)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}")
    elif gain is not None:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class EqualLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: str = "linear",
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Conv with equalized lr; ``down=2`` low-passes then strides (the discriminator's path)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        resample_filter: tuple[float, ...] = DEFAULT_FILTER,
        clamp: float | None = None,
        padding_mode: str = "zeros",
        persistent_filter: bool = False,
    ) -> None:
        super().__init__()
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation, self.down, self.kernel_size, self.clamp = (
            activation,
            down,
            kernel_size,
            clamp,
        )
        # Saved with the weights where a network may come with its own filter (StyleGAN2
        # checkpoints carry theirs, see gantk.io.config_schema.build_matching).
        self.register_buffer(
            "resample_filter", make_filter(resample_filter), persistent=persistent_filter
        )

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.down > 1:
            # Low-pass with enough padding for the conv, then a strided conv without padding.
            taps = self.resample_filter.shape[0]
            total = (taps - self.down) + (self.kernel_size - 1)
            x = filter2d(x, self.resample_filter, ((total + 1) // 2, total // 2))
            x = F.conv2d(x, w, stride=self.down)
        elif self.padding_mode == "reflect" and self.kernel_size > 1:
            # Reflect padding keeps borders texture-like, so tiles of a fully convolutional
            # generator do not show dark frames (Texture Mixer).
            x = F.conv2d(F.pad(x, [self.kernel_size // 2] * 4, mode="reflect"), w)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        act_gain = LRELU_GAIN * gain if self.activation == "lrelu" else gain
        clamp = self.clamp * gain if self.clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=act_gain, clamp=clamp)


class MinibatchStd(nn.Module):
    """Appends the average standard deviation over groups of samples as extra feature maps, so
    the discriminator can see a lack of variety (mode collapse) in a batch.

    Groups are runs of consecutive samples, so splitting a batch into contiguous per-GPU shards
    (with shard sizes divisible by the group size) gives exactly the single-process statistics.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:  # the largest group size that divides the batch
            g -= 1
        f = self.num_channels
        y = x.reshape(n // g, g, f, c // f, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (n/g, f)
        y = y.reshape(n // g, 1, f, 1, 1).expand(n // g, g, f, h, w).reshape(n, f, h, w)
        return torch.cat([x, y], dim=1)


__all__ = ["EqualConv2d", "EqualLinear", "MinibatchStd", "bias_act", "downsample2d"]
