"""StyleGAN2 config E networks: mapping + skip generator, residual discriminator.

Resolution 4…1024 (a power of two); channels at resolution r are
min(channel_base // r, channel_max), so a 16 px model with channel_base 128 and channel_max 8
trains in seconds on a CPU while the defaults give the published architecture.

Attention (thesis ch.2): ``g_attn=("san"|"sagan", RES)`` replaces the second conv of the
generator block at RES with an attention layer; ``d_attn=("self"|"reference", RES)`` replaces
the first conv of the discriminator block whose input is RES. With reference attention the
discriminator also takes a real reference image: both pass through the shared (Siamese) layers
above RES, keys and queries come from the reference, values and the residual from the primary
image, and only the primary branch continues below.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.gan.attention import make_attention, parse_attention_spec
from gantk.io.images import check_resolution
from gantk.nn.layers import LRELU_GAIN, EqualConv2d, EqualLinear, MinibatchStd, bias_act
from gantk.nn.resample import downsample2d, make_filter, upsample2d
from gantk.ops.modulated_conv import modulated_conv2d

# Checkpoint kind of a plain generator (latest.safetensors, snapshots).
GENERATOR_KIND = "gan-generator"
LEGACY_RESAMPLING = "gantk-0.1"
G_ARCHS = ("skip", "resnet", "orig")
D_ARCHS = ("resnet", "skip", "orig")
RESAMPLING = ("reference", LEGACY_RESAMPLING)


@dataclass
class NetworkConfig:
    """Everything needed to rebuild G and D (stored in every checkpoint)."""

    resolution: int = 128
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    g_attn: str | None = None  # "san@32", "sagan@32"
    d_attn: str | None = None  # "reference@32", "self@32"
    attn_kernel: int = 7
    mbstd_group: int = 4
    # Scalable fingerprints (thesis ch.6): bits of the fingerprint that modulates the generator
    # (0: an ordinary StyleGAN2), and the resolutions it modulates ("all", "8-32", "4,8").
    fingerprint_bits: int = 0
    modulate_res: str = "all"
    # Clamp of every conv's output (StyleGAN2-ADA's conv_clamp, 256 in its configs; None in
    # config E). Set for imported NVIDIA models so their outputs match the reference code.
    conv_clamp: float | None = None
    # The 2x upsampling conv: "reference" computes what StyleGAN2's code does; "gantk-0.1" is
    # the correlation after upsampling of gantk 0.1, kept for the runs trained with it (their
    # checkpoints hold no resampling filters: see with_resampling_of).
    resampling: str = "reference"
    # Class-conditional networks (`train gan --cond`, or NVIDIA's with c_dim > 0): the class,
    # one-hot, is embedded into the mapping's input, and D projects its features on a mapping of
    # the class (cmap, as wide as D's 4x4 layer) through its own d_mapping_layers-deep mapping
    # network. class_names: the dataset's names of the classes (empty: unnamed, e.g. NVIDIA's).
    c_dim: int = 0
    d_mapping_layers: int = 8
    class_names: list[str] = field(default_factory=list)
    # StyleGAN2's architectures (Fig. 7): G "skip" (RGB outputs summed over resolutions, config
    # E/F), "resnet" or "orig" (one RGB output); D "resnet" (config E/F), "skip" or "orig".
    g_arch: str = "skip"
    d_arch: str = "resnet"

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))

    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> NetworkConfig:
        """Ranges a network can be built with (also checked for configs read from files)."""
        check_resolution(self.resolution, low=4, high=4096)
        checks = [
            (
                min(self.z_dim, self.w_dim, self.mapping_layers, self.channel_base) >= 1
                and 1 <= self.channel_max <= 65536
                and max(self.z_dim, self.w_dim) <= 65536,
                "--z-dim, --w-dim, --mapping-layers, --channel-base and --channel-max "
                "must be at least 1 (z, w and channels at most 65536)",
            ),
            (self.mapping_layers <= 64, "--mapping-layers must be at most 64"),
            (
                self.attn_kernel >= 1 and self.attn_kernel % 2 == 1,
                "--attn-kernel must be odd (e.g. 7)",
            ),
            (self.mbstd_group >= 1, "the minibatch-std group must be at least 1"),
            (0 <= self.fingerprint_bits <= 4096, "--fingerprint-bits must be in 0..4096"),
            (self.conv_clamp is None or self.conv_clamp > 0, "conv_clamp must be above 0"),
            (self.resampling in RESAMPLING, f"resampling must be one of {', '.join(RESAMPLING)}"),
            (0 <= self.c_dim <= 100_000, "the number of classes must be in 0..100000"),
            (
                len(self.class_names) in (0, self.c_dim),
                "class_names must name every class (c_dim of them) or none",
            ),
            (self.g_arch in G_ARCHS, f"the generator architecture must be one of {G_ARCHS}"),
            (self.d_arch in D_ARCHS, f"the discriminator architecture must be one of {D_ARCHS}"),
            (
                self.g_arch == "skip" or not (self.g_attn or self.fingerprint_bits),
                "attention and fingerprints need the skip generator",
            ),
            (self.d_arch == "resnet" or not self.d_attn, "D attention needs the resnet D"),
            (1 <= self.d_mapping_layers <= 64, "D's mapping depth must be in 1..64"),
        ]
        for ok, message in checks:
            if not ok:
                raise GantkError(message)
        return self

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def parse_attn(
    spec: str | None, kinds: tuple[str, ...], flag: str, resolutions: list[int]
) -> tuple[str, int] | None:
    """'san@32' -> ('san', 32), also checking that the network has a layer at that resolution."""
    parsed = parse_attention_spec(spec, kinds, option=flag)
    if parsed is not None and parsed[1] not in resolutions:
        raise GantkError(
            f"{flag} {spec!r}: the network has no {parsed[1]}px layer for it; use "
            "one of " + ", ".join(str(r) for r in resolutions)
        )
    return parsed


# --- generator -----------------------------------------------------------------------------


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """z (and a class c) -> w through ``layers`` FC layers (lr multiplier 0.01), broadcast to
    ``num_ws`` styles. Tracks the running mean of w for the truncation trick. With ``c_dim`` the
    class is embedded, normalized and concatenated to z (as StyleGAN2-ADA); with ``z_dim`` 0 and
    ``num_ws`` None it maps the class alone to one vector (the conditional D's cmap)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int | None,
        layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
        c_dim: int = 0,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        self.c_dim = c_dim
        if c_dim:
            self.embed = EqualLinear(c_dim, w_dim)
        dims = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * layers
        self.net = nn.Sequential(
            *[
                EqualLinear(a, b, lr_multiplier=lr_multiplier, activation="lrelu")
                for a, b in itertools.pairwise(dims)
            ]
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor | None,
        psi: float = 1.0,
        cutoff: int | None = None,
        update_w_avg: bool = False,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = [normalize_2nd_moment(z)] if self.z_dim and z is not None else []
        if self.c_dim:
            if c is None:
                raise GantkError(
                    f"this network is class-conditional ({self.c_dim} classes): give a class "
                    "(gantk generate --class K); to measure it, generate each class into a "
                    "folder and evaluate the folder"
                )
            parts.append(normalize_2nd_moment(self.embed(c.to(self.net[0].weight.dtype))))
        w = self.net(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        if self.num_ws is None:
            return w
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1.0:
            end = self.num_ws if cutoff is None else cutoff
            ws[:, :end] = self.w_avg.to(ws.dtype).lerp(ws[:, :end], psi)
        return ws


def with_resampling_of(config: NetworkConfig, tensors: Iterable[str]) -> NetworkConfig:
    """``config`` for a network stored as ``tensors`` (names): one saved before gantk kept its
    resampling filters was trained with gantk 0.1's upsampling conv, and must run with it."""
    if config.resampling == "reference" and not any(
        name.endswith("resample_filter") for name in tensors
    ):
        return replace(config, resampling=LEGACY_RESAMPLING)
    return config


def conv_after_upsampling(
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """A k x k convolution of ``x`` upsampled 2x, exactly as StyleGAN2's reference code computes
    it (conv2d_resample with up=2: a transposed convolution, then the low-pass filter): the
    zero-inserted, filtered image keeps ``padding`` more pixels on each side, and the kernel is
    applied flipped (a convolution, not a correlation) without padding. ``conv(input, weight)``
    is a same-padded correlation (so the fused kernel still covers it), cropped back here."""
    y = conv(upsample2d(x, f, extra=padding), weight.flip([2, 3]))
    return y[:, :, padding:-padding, padding:-padding] if padding else y


def upsampling_conv(
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    f: torch.Tensor,
    padding: int,
    resampling: str,
) -> torch.Tensor:
    """The 2x upsampling conv as ``resampling`` says (see NetworkConfig.resampling)."""
    if resampling == LEGACY_RESAMPLING:
        return conv(upsample2d(x, f), weight)
    return conv_after_upsampling(conv, x, weight, f, padding)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally after 2x upsampling) + per-pixel noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        kernel_size: int = 3,
        clamp: float | None = None,
        resampling: str = "reference",
    ) -> None:
        super().__init__()
        self.clamp, self.resampling = clamp, resampling
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", make_filter())  # saved: checkpoints may differ
        self.up, self.resolution, self.padding = up, resolution, kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def add_noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if noise_mode == "random":
            noise = torch.randn(
                x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype
            )
            return x + noise * self.noise_strength.to(x.dtype)
        if noise_mode == "const":
            return x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        return x

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0
    ) -> torch.Tensor:
        styles = self.affine(w)

        def conv(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return modulated_conv2d(inputs, weight, styles, demodulate=True, padding=self.padding)

        weight = self.weight * self.weight_gain
        if self.up:
            f = self.resample_filter
            x = upsampling_conv(conv, x, weight, f, self.padding, self.resampling)
        else:
            x = conv(x, weight)
        x = self.add_noise(x, noise_mode)
        clamp = None if self.clamp is None else self.clamp * gain
        return bias_act(x, self.bias, "lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class AttentionLayer(nn.Module):
    """Stands in for a SynthesisLayer: self-attention (residual) + noise. It receives the
    replaced layer's style and ignores it, so style indexing and mixing stay the same."""

    def __init__(self, kind: str, channels: int, resolution: int, kernel_size: int) -> None:
        super().__init__()
        self.attn = make_attention(kind, channels, kernel_size)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.resolution = resolution

    add_noise = SynthesisLayer.add_noise

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        return self.add_noise(self.attn(x, x), noise_mode)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, w_dim: int, clamp: float | None = None) -> None:
        super().__init__()
        self.clamp = clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.clamp)


class UpsampleSkip(nn.Module):
    """The resnet generator's shortcut: a 1x1 conv without bias, then 2x upsampling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.register_buffer("resample_filter", make_filter())

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = F.conv2d(x, (self.weight * self.weight_gain).to(x.dtype))
        return upsample2d(x, self.resample_filter) * gain


class SynthesisBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        attn: str | None,
        attn_kernel: int,
        const_input: bool = True,
        clamp: float | None = None,
        resampling: str = "reference",
        architecture: str = "skip",
        is_last: bool = True,
    ) -> None:
        super().__init__()
        self.first, self.resolution, self.architecture = resolution == 4, resolution, architecture
        # Without const_input the 4x4 block takes its input from the caller (the scalable-
        # fingerprint generator feeds z there).
        if self.first:
            if const_input:
                self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True,
                                        clamp=clamp, resampling=resampling)  # fmt: skip
        self.conv1 = (
            AttentionLayer(attn, out_channels, resolution, attn_kernel)
            if attn
            else SynthesisLayer(out_channels, out_channels, w_dim, resolution, clamp=clamp)
        )
        # Every block draws RGB in the skip architecture, only the last one otherwise.
        self.has_torgb = is_last or architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGB(out_channels, w_dim, clamp)
        if architecture == "resnet" and not self.first:
            self.skip = UpsampleSkip(in_channels, out_channels)
        self.num_conv = 1 if self.first else 2
        self.register_buffer("resample_filter", make_filter())  # saved: checkpoints may differ

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws`` holds num_conv + 1 styles: one per conv, then the ToRGB's."""
        if self.first:
            if x is None:
                x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        elif self.architecture == "resnet":
            shortcut = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = shortcut + self.conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5))
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.has_torgb:
            rgb = self.torgb(x, ws[:, self.num_conv])
            img = rgb if img is None else img + rgb
        return x, img


def synthesis_blocks(config: NetworkConfig, const_input: bool = True) -> nn.ModuleList:
    """The synthesis blocks 4×4 … resolution, attention where ``config.g_attn`` puts it."""
    attn = parse_attn(config.g_attn, ("san", "sagan"), "--g-attn", config.resolutions())
    blocks = nn.ModuleList()
    for res in config.resolutions():
        in_ch = config.channels(res // 2) if res > 4 else 0
        kind = attn[0] if attn and attn[1] == res else None
        blocks.append(SynthesisBlock(in_ch, config.channels(res), config.w_dim, res, kind,
                                     config.attn_kernel, const_input,
                                     config.conv_clamp, config.resampling, config.g_arch,
                                     res == config.resolution))  # fmt: skip
    return blocks


class Generator(nn.Module):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = synthesis_blocks(config)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.mapping = MappingNetwork(
            config.z_dim, config.w_dim, self.num_ws, config.mapping_layers, c_dim=config.c_dim
        )

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index : index + block.num_conv + 1], noise_mode)
            index += block.num_conv
        return img

    def forward(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        noise_mode: str = "random",
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.synthesis(self.mapping(z, psi, c=c), noise_mode)


# --- discriminator -------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second halves the resolution); the resnet architecture adds a 1x1
    shortcut, the skip one reads the image again at this resolution (``fromrgb``, for every
    block after the first) and downsamples it for the next."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        resolution: int,
        attn: str | None,
        attn_kernel: int,
        clamp: float | None = None,
        architecture: str = "resnet",
        reads_image: bool = False,
    ) -> None:
        super().__init__()
        self.attn_kind, self.architecture = attn, architecture
        if reads_image:
            self.fromrgb = EqualConv2d(3, in_channels, 1, activation="lrelu", clamp=clamp)
        if architecture == "skip":
            self.register_buffer("resample_filter", make_filter())
        if attn:
            self.conv0 = make_attention("san", in_channels, attn_kernel)
        else:
            self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu", clamp=clamp)
        self.conv1 = EqualConv2d(
            in_channels, out_channels, 3, activation="lrelu", down=2, clamp=clamp,
            persistent_filter=True,
        )  # fmt: skip
        if architecture == "resnet":
            self.skip = EqualConv2d(
                in_channels, out_channels, 1, bias=False, down=2, persistent_filter=True
            )

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        if self.attn_kind == "reference":
            h = self.conv0(ref, x)  # keys/queries from the reference, values + residual from x
        elif self.attn_kind == "self":
            h = self.conv0(x, x)
        else:
            h = self.conv0(x)
        if self.architecture != "resnet":
            return self.conv1(h)
        return self.skip(x, gain=math.sqrt(0.5)) + self.conv1(h, gain=math.sqrt(0.5))


class Discriminator(nn.Module):
    """The residual discriminator; ``outputs`` > 1 and no minibatch std make it the decoder F of
    scalable fingerprints (per-image outputs must not depend on the rest of the batch)."""

    def __init__(self, config: NetworkConfig, outputs: int = 1, minibatch_std: bool = True) -> None:
        super().__init__()
        self.config = config
        attn = parse_attn(
            config.d_attn, ("reference", "self"), "--d-attn", config.resolutions()[1:]
        )
        self.attn = attn
        top = config.resolution
        clamp = config.conv_clamp
        self.fromrgb = EqualConv2d(3, config.channels(top), 1, activation="lrelu", clamp=clamp)
        self.blocks = nn.ModuleList()
        for res in reversed(config.resolutions()[1:]):
            kind = attn[0] if attn and attn[1] == res else None
            self.blocks.append(
                DiscriminatorBlock(
                    config.channels(res),
                    config.channels(res // 2),
                    res,
                    kind,
                    config.attn_kernel,
                    clamp,
                    config.d_arch,
                    reads_image=config.d_arch == "skip" and res != top,
                )
            )
        if config.d_arch == "skip":  # the 4x4 epilogue reads the image too
            self.fromrgb4 = EqualConv2d(3, config.channels(4), 1, activation="lrelu", clamp=clamp)
        ch = config.channels(4)
        self.mbstd = MinibatchStd(config.mbstd_group) if minibatch_std else None
        self.conv = EqualConv2d(ch + int(minibatch_std), ch, 3, activation="lrelu", clamp=clamp)
        self.fc = EqualLinear(ch * 16, ch, activation="lrelu")
        # Conditional: the logit is the features' projection on the class's cmap (width ch).
        self.c_dim = config.c_dim
        if config.c_dim:
            self.mapping = MappingNetwork(0, ch, None, config.d_mapping_layers, w_avg_beta=None,
                                          c_dim=config.c_dim)  # fmt: skip
        self.out = EqualLinear(ch, ch if config.c_dim else outputs)

    @property
    def needs_reference(self) -> bool:
        return self.attn is not None and self.attn[0] == "reference"

    def forward(
        self,
        img: torch.Tensor,
        ref: torch.Tensor | None = None,
        return_features: bool = False,
        c: torch.Tensor | None = None,
    ):
        """Logits (B,) for ``img``; with reference attention ``ref`` (real images, same shape)
        is required. ``return_features`` also returns the last hidden layer (B, C) (FDDF)."""
        if self.needs_reference and ref is None:
            raise ValueError("this discriminator uses reference attention: pass ref= real images")
        x = self.fromrgb(img)
        r = self.fromrgb(ref) if self.needs_reference else None
        for block in self.blocks:
            if block.architecture == "skip":  # the image again, at each resolution
                if hasattr(block, "fromrgb"):
                    x = x + block.fromrgb(img)
                img = downsample2d(img, block.resample_filter)
            if r is not None and block.attn_kind == "reference":
                x, r = block(x, r), None  # the branches fuse here
            else:
                if r is not None:
                    r = block(r)
                x = block(x)
        if hasattr(self, "fromrgb4"):
            x = x + self.fromrgb4(img)
        x = self.conv(self.mbstd(x) if self.mbstd is not None else x)
        features = self.fc(x.flatten(1))
        logits = self.out(features)
        if self.c_dim:
            cmap = self.mapping(None, c=c)
            logits = (logits * cmap).sum(dim=1, keepdim=True) / math.sqrt(cmap.shape[1])
        logits = logits.squeeze(1) if logits.shape[1] == 1 else logits
        return (logits, features) if return_features else logits


def count_parameters(module: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in module.parameters()))
