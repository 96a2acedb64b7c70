"""A generator with its styles folded into its convolutions: the deployable instance.

A scalable-fingerprint run (:mod:`gantk.fingerprint.scalable`) ships one generator per user
with that user's fingerprint baked in: each modulated convolution's style becomes a fixed,
demodulated weight (:meth:`FoldedLayer.fold`), leaving an ordinary z -> image network with no
mapping, embedding or decoder inside. :class:`GeneratorInstance` is that network, a checkpoint kind
(``gan-instance``) that ``gantk generate`` and every metric load like any generator
(:func:`gantk.gan.generate.load_generator`); folding a fingerprint into it is
:func:`gantk.fingerprint.scalable.instances.fold_instance`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.gan.networks import (
    AttentionLayer,
    NetworkConfig,
    SynthesisLayer,
    ToRGB,
    parse_attn,
    upsampling_conv,
)
from gantk.nn.layers import EqualLinear, bias_act
from gantk.nn.resample import make_filter, upsample2d

INSTANCE_KIND = "gan-instance"
# A scalable-fingerprint training run's checkpoint (generator + decoder): not a generator,
# but named here so that loading one as a generator can say what to do instead.
FINGERPRINTED_KIND = "gan-fingerprinted"


def normalize_latents(z: torch.Tensor) -> torch.Tensor:
    """z over its root mean square (the fingerprinted generator's input normalisation)."""
    return z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class FoldedLayer(nn.Module):
    """A SynthesisLayer whose style is baked into the weight: a plain conv (after upsampling),
    noise, bias, leaky ReLU."""

    add_noise = SynthesisLayer.add_noise

    def __init__(
        self, in_channels: int, out_channels: int, resolution: int, up: bool,
        clamp: float | None = None, resampling: str = "reference",
    ) -> None:  # fmt: skip
        super().__init__()
        self.clamp, self.resampling = clamp, resampling
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.zeros(resolution, resolution))
        self.register_buffer("resample_filter", make_filter())
        self.up, self.resolution = up, resolution

    def forward(self, x: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        def conv(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return F.conv2d(inputs, weight.to(inputs.dtype), padding=1)

        if self.up:
            x = upsampling_conv(conv, x, self.weight, self.resample_filter, 1, self.resampling)
        else:
            x = conv(x, self.weight)
        return bias_act(self.add_noise(x, noise_mode), self.bias, "lrelu", clamp=self.clamp)

    @torch.no_grad()
    def fold(self, layer: SynthesisLayer, w: torch.Tensor) -> None:
        """Bake the style of ``w`` (w_dim,) into ``layer``'s weight, demodulated exactly as the
        modulated convolution does."""
        styles = layer.affine(w[None])[0]
        weight = layer.weight * layer.weight_gain * styles[None, :, None, None]
        weight = weight * (weight.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()[:, None, None, None]
        self.weight.copy_(weight)
        self.bias.copy_(layer.bias)
        self.resample_filter.copy_(layer.resample_filter)
        self.noise_strength.copy_(layer.noise_strength)
        self.noise_const.copy_(layer.noise_const)


class FoldedToRGB(nn.Module):
    def __init__(self, in_channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.clamp = clamp
        self.weight = nn.Parameter(torch.zeros(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(F.conv2d(x, self.weight.to(x.dtype)), self.bias, clamp=self.clamp)

    @torch.no_grad()
    def fold(self, layer: ToRGB, w: torch.Tensor) -> None:
        styles = layer.affine(w[None])[0] * layer.weight_gain
        self.weight.copy_(layer.weight * styles[None, :, None, None])
        self.bias.copy_(layer.bias)


class FoldedBlock(nn.Module):
    def __init__(self, config: NetworkConfig, resolution: int, attn: str | None) -> None:
        super().__init__()
        out_ch = config.channels(resolution)
        self.first = resolution == 4
        if not self.first:
            self.conv0 = FoldedLayer(config.channels(resolution // 2), out_ch, resolution, True,
                                     config.conv_clamp, config.resampling)  # fmt: skip
        self.conv1: nn.Module = (
            AttentionLayer(attn, out_ch, resolution, config.attn_kernel)
            if attn
            else FoldedLayer(out_ch, out_ch, resolution, False, config.conv_clamp)
        )
        self.torgb = FoldedToRGB(out_ch, config.conv_clamp)
        self.num_conv = 1 if self.first else 2
        self.register_buffer("resample_filter", make_filter())

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.first:
            x = self.conv0(x, noise_mode)
        # AttentionLayer keeps its (ignored) style argument.
        x = self.conv1(x, None, noise_mode) if isinstance(self.conv1, AttentionLayer) else (
            self.conv1(x, noise_mode)
        )  # fmt: skip
        rgb = self.torgb(x)
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img


class GeneratorInstance(nn.Module):
    """A fingerprinted generator with one fingerprint folded in: z -> image, nothing else."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        attn = parse_attn(config.g_attn, ("san", "sagan"), "--g-attn", config.resolutions())
        self.input = EqualLinear(config.z_dim, config.channels(4) * 16)
        self.blocks = nn.ModuleList(
            FoldedBlock(config, res, attn[0] if attn and attn[1] == res else None)
            for res in config.resolutions()
        )

    def forward(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        noise_mode: str = "random",
        c: torch.Tensor | None = None,  # the Generator's signature; instances have no classes
    ) -> torch.Tensor:
        if psi != 1.0:
            raise GantkError(
                "a fingerprinted instance has no mapping network, so no truncation; "
                "leave out --truncation"
            )
        x = self.input(normalize_latents(z)).reshape(len(z), -1, 4, 4)
        img = None
        for block in self.blocks:
            x, img = block(x, img, noise_mode)
        return img
