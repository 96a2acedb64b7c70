"""Texture Mixer networks (thesis ch. 3, Fig. 3.2).

A local encoder maps a texture to a latent tensor a quarter of its size, a global encoder to one
vector; the fully convolutional generator decodes [z_l, z_g tiled] back to pixels, so the output
grows with the latent tensor: tiling and blending latents gives textures of any size. Two
WGAN-GP critics of the same shape judge reconstructions and interpolations.

Conventions of the paper: reflect padding, equalized learning rate, leaky ReLU 0.2, nearest
upsampling, average-pool downsampling. ``upsample="bilinear"`` is gantk's alternative for small
generators: nearest upsampling leaves a 4-pixel block pattern that a narrow generator (16
channels at full resolution at width 64) does not smooth away where latents are shuffled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.nn.layers import EqualConv2d, EqualLinear

KIND = "texture-mixer"
LATENT_FACTOR = 4  # the local latent is 1/4 of the image size (two 2x downsamplings)
UPSAMPLING = ("nearest", "bilinear")


@dataclass(frozen=True)
class TextureMixerConfig:
    resolution: int = 128  # training crop; the discriminators see exactly this size
    latent_channels: int = 128
    global_dim: int = 128  # 0 removes the global code (the paper's "no z^g" ablation)
    channels: int = 256  # width of the generator's residual blocks
    res_blocks: int = 5
    d_channels: int = 64  # critic width at full resolution, doubled per downsampling
    d_max_channels: int = 512
    upsample: str = "nearest"  # the generator's 2x upsampling: nearest (paper) or bilinear

    def validate(self) -> TextureMixerConfig:
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise GantkError(f"--resolution must be a power of two >= 16, got {r}")
        for name in ("latent_channels", "channels", "d_channels", "res_blocks"):
            if getattr(self, name) < 1:
                raise GantkError(f"--{name.replace('_', '-')} must be positive")
        if self.channels % 4:
            raise GantkError(f"--channels must be a multiple of 4, got {self.channels}")
        if self.global_dim < 0:
            raise GantkError("--global-dim must be 0 (no global code) or positive")
        if self.upsample not in UPSAMPLING:
            raise GantkError(
                f"--upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}"
            )
        return self

    @property
    def latent_size(self) -> int:
        return self.resolution // LATENT_FACTOR

    @property
    def receptive_radius(self) -> int:
        """Latent pixels on each side that influence one output latent cell: what a tiled
        decode needs as halo to equal the whole-canvas decode."""
        # head, residual blocks, then the two upsampling stages' convolutions (one latent
        # cell and half of one); bilinear upsampling reads one more pixel at each.
        return 1 + 2 * self.res_blocks + (3 if self.upsample == "bilinear" else 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TextureMixerConfig:
        kinds = {f.name: type(f.default) for f in fields(cls)}  # int, or str (upsample)
        return cls(**{k: kinds[k](v) for k, v in data.items() if k in kinds}).validate()


def _conv(cin: int, cout: int, k: int = 3, act: str = "lrelu") -> EqualConv2d:
    return EqualConv2d(cin, cout, k, activation=act, padding_mode="reflect")


class LocalEncoder(nn.Module):
    """Texture -> latent tensor at 1/4 size (no activation at the end: latents are blended
    linearly, so they should live in an unbounded linear space)."""

    def __init__(self, cfg: TextureMixerConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.body = nn.Sequential(
            _conv(3, c // 4, 1),
            _conv(c // 4, c // 4),
            nn.AvgPool2d(2),
            _conv(c // 4, c // 2),
            _conv(c // 2, c // 2),
            nn.AvgPool2d(2),
            _conv(c // 2, c),
            _conv(c, c),
            _conv(c, cfg.latent_channels, 1, act="linear"),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class GlobalEncoder(nn.Module):
    """Texture -> one vector: downsample to 4x4, average over space (so any input size works),
    then a linear layer."""

    def __init__(self, cfg: TextureMixerConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, cfg.d_channels, 1)]
        ch, res = cfg.d_channels, cfg.resolution
        while res > 4:
            nxt = min(ch * 2, cfg.d_max_channels)
            layers += [_conv(ch, nxt), nn.AvgPool2d(2)]
            ch, res = nxt, res // 2
        self.body = nn.Sequential(*layers)
        self.fc = EqualLinear(ch, cfg.global_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        # 1/sqrt(2) keeps the variance of the sum of two unit-variance branches at one.
        return (x + self.conv2(self.conv1(x))) * (1 / math.sqrt(2))


class TextureGenerator(nn.Module):
    """[z_l, z_g map] -> image, 4x the latent's size; tanh output in [-1, 1]."""

    def __init__(self, cfg: TextureMixerConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.head = _conv(cfg.latent_channels + cfg.global_dim, c)
        self.blocks = nn.Sequential(*[ResBlock(c) for _ in range(cfg.res_blocks)])
        self.up1 = nn.Sequential(_conv(c, c // 2), _conv(c // 2, c // 2))
        self.up2 = nn.Sequential(_conv(c // 2, c // 4), _conv(c // 4, c // 4))
        self.to_rgb = _conv(c // 4, 3, 1, act="linear")
        self.upsample = cfg.upsample

    def _up(self, x: Tensor) -> Tensor:
        if self.upsample == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, z_local: Tensor, z_global_map: Tensor | None) -> Tensor:
        x = z_local if z_global_map is None else torch.cat([z_local, z_global_map], dim=1)
        x = self.blocks(self.head(x))
        x = self.up1(self._up(x))
        x = self.up2(self._up(x))
        return torch.tanh(self.to_rgb(x))


class TextureMixer(nn.Module):
    """Both encoders and the generator: the part that is exported and used at test time."""

    def __init__(self, cfg: TextureMixerConfig) -> None:
        super().__init__()
        self.config = cfg.validate()
        self.local_encoder = LocalEncoder(cfg)
        self.global_encoder = GlobalEncoder(cfg) if cfg.global_dim else None
        self.generator = TextureGenerator(cfg)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        z_global = self.global_encoder(images) if self.global_encoder is not None else None
        return self.local_encoder(images), z_global

    def decode(self, z_local: Tensor, z_global_map: Tensor | None) -> Tensor:
        """``z_global_map`` is the global code already spread over space (B, G, h, w): it may
        vary spatially at test time, e.g. across a palette."""
        return self.generator(z_local, z_global_map)

    def forward(self, images: Tensor) -> Tensor:
        z_local, z_global = self.encode(images)
        return self.decode(z_local, spread(z_global, z_local))


def spread(z_global: Tensor | None, like: Tensor) -> Tensor | None:
    """Repeat a (B, G) global code over the spatial size of ``like`` (B, C, h, w)."""
    if z_global is None:
        return None
    return z_global[:, :, None, None].expand(-1, -1, *like.shape[2:])


class TextureCritic(nn.Module):
    """WGAN-GP critic for ``resolution``-sized crops (no normalisation layers: the gradient
    penalty is computed per sample). ``aspect`` > 1 takes crops ``aspect`` times as wide as
    tall (the repetition classifier of :mod:`gantk.texture.classifiers`)."""

    def __init__(self, cfg: TextureMixerConfig, aspect: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, cfg.d_channels, 1)]
        ch, res = cfg.d_channels, cfg.resolution
        while res > 4:
            nxt = min(ch * 2, cfg.d_max_channels)
            layers += [_conv(ch, ch), _conv(ch, nxt), nn.AvgPool2d(2)]
            ch, res = nxt, res // 2
        self.body = nn.Sequential(*layers)
        self.fc = EqualLinear(ch * 16 * aspect, ch, activation="lrelu")  # a 4 x 4·aspect map
        self.out = EqualLinear(ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc(self.body(x).flatten(1))).squeeze(1)
