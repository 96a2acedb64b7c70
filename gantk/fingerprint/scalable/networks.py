"""The networks of scalable fingerprinting (Yu et al., ICLR 2022; thesis ch.6).

The fingerprinted generator G(z, c): the latent z enters at the input (an FC layer to the 4×4
tensor, replacing StyleGAN2's learned constant) and the fingerprint c (bits) goes through an
8-layer mapping network E whose output styles modulate every convolution in the modulated range
(``modulate_res``); layers outside it take one learned, fingerprint-independent style. A decoder F
shaped like the discriminator (no minibatch statistics) recovers z and c from an image
(:class:`BitDecoder` reads the bits). Training is :mod:`gantk.fingerprint.scalable.train`;
deployment folds one fingerprint into an instance (:mod:`gantk.fingerprint.scalable.instances`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from gantk.errors import GantkError
from gantk.gan.folded import FINGERPRINTED_KIND, normalize_latents
from gantk.gan.networks import (
    Discriminator,
    MappingNetwork,
    NetworkConfig,
    synthesis_blocks,
    with_resampling_of,
)
from gantk.io.checkpoint import load_checkpoint
from gantk.io.config_schema import build_matching, checked_config, section, tensors_under
from gantk.nn.layers import EqualLinear


def parse_modulate_res(text: str, resolutions: list[int]) -> list[int]:
    """``all`` | ``LOW-HIGH`` | ``R1,R2,…`` -> the modulated resolutions."""
    text = text.strip()
    if text == "all":
        return list(resolutions)
    try:
        if "-" in text:
            low, high = (int(v) for v in text.split("-"))
            chosen = [r for r in resolutions if low <= r <= high]
        else:
            chosen = [int(v) for v in text.split(",")]
    except ValueError:
        chosen = []
    if not chosen or any(r not in resolutions for r in chosen):
        raise GantkError(
            f"--modulate-res {text!r}: give all, a range like 4-32 or a list like 8,16 of the "
            f"network's resolutions ({', '.join(map(str, resolutions))})"
        )
    return chosen


def _style_resolutions(blocks: nn.ModuleList) -> list[int]:
    """The resolution each style vector serves (a block's convs; its ToRGB's style is shared
    with the next block's first conv, as in StyleGAN2's indexing)."""
    out = []
    for block in blocks:
        out += [block.resolution] * block.num_conv
    return [*out, blocks[-1].resolution]


class FingerprintedGenerator(nn.Module):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.fingerprint_bits < 1:
            raise GantkError("a fingerprinted generator needs --fingerprint-bits of 1 or more")
        self.config = config
        self.blocks = synthesis_blocks(config, const_input=False)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.input = EqualLinear(config.z_dim, config.channels(4) * 16)
        self.embed = MappingNetwork(
            config.fingerprint_bits, config.w_dim, self.num_ws, config.mapping_layers
        )
        self.w_fixed = nn.Parameter(torch.zeros(config.w_dim))
        modulated = parse_modulate_res(config.modulate_res, config.resolutions())
        mask = [r in modulated for r in _style_resolutions(self.blocks)]
        self.register_buffer("modulated", torch.tensor(mask), persistent=False)

    def styles(self, c: torch.Tensor) -> torch.Tensor:
        """Per-layer style vectors (B, num_ws, w_dim) of fingerprints ``c`` (0/1 bits)."""
        ws = self.embed(c.float() * 2 - 1)  # +-1 bits: unit second moment, as z is
        fixed = self.w_fixed.to(ws.dtype).expand_as(ws)
        return torch.where(self.modulated[None, :, None], ws, fixed)

    def synthesis(
        self, z: torch.Tensor, ws: torch.Tensor, noise_mode: str = "random"
    ) -> torch.Tensor:
        x = self.input(normalize_latents(z)).reshape(len(z), -1, 4, 4).to(ws.dtype)
        img, index = None, 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index : index + block.num_conv + 1], noise_mode)
            index += block.num_conv
        return img

    def forward(self, z: torch.Tensor, c: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(z, self.styles(c), noise_mode)


def make_decoder(config: NetworkConfig) -> Discriminator:
    """F: discriminator-shaped, z_dim + bits outputs, no minibatch statistics, and no
    attention to a reference image (it decodes one image on its own)."""
    plain = replace(config, d_attn=None)
    return Discriminator(plain, outputs=config.z_dim + config.fingerprint_bits,
                         minibatch_std=False)  # fmt: skip


class BitDecoder(nn.Module):
    """F seen as a fingerprint decoder: images at F's resolution -> bit logits. Exposes
    ``config.bits`` and ``config.resolution`` like the stego decoder, so decoding reports and
    registries serve both kinds of fingerprint."""

    class Config:
        def __init__(self, bits: int, resolution: int) -> None:
            self.bits, self.resolution = bits, resolution

    def __init__(self, decoder: Discriminator, z_dim: int, bits: int) -> None:
        super().__init__()
        self.decoder, self.z_dim = decoder, z_dim
        self.config = self.Config(bits, decoder.config.resolution)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(images)[:, self.z_dim :]


def load_fingerprinted(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[FingerprintedGenerator, Discriminator, NetworkConfig]:
    """G (EMA) and F from a fingerprinted run's checkpoint (``runs/fp/latest.safetensors``)."""
    ckpt = load_checkpoint(path, device=device)
    if ckpt.kind != FINGERPRINTED_KIND:
        hint = (
            "it was trained without --fingerprint-bits; train one with "
            "`gantk train gan DATA --fingerprint-bits 128`"
            if ckpt.kind == "gan-generator"
            else "give the latest.safetensors of a `gantk train gan --fingerprint-bits` run"
        )
        raise GantkError(f"{path} holds a {ckpt.kind}, not a fingerprinted generator; {hint}")
    config = checked_config(NetworkConfig, section(ckpt.config, "network"), path, "generator")
    config = with_resampling_of(config, ckpt.tensors)
    if config.fingerprint_bits < 1:
        raise GantkError(f"{path} has an unusable generator config (no fingerprint bits)")

    G = build_matching(
        lambda: FingerprintedGenerator(config), tensors_under(ckpt.tensors, "G."), path, "generator"
    )
    Fnet = build_matching(
        lambda: make_decoder(config), tensors_under(ckpt.tensors, "F."), path, "decoder"
    )
    return G.to(device).eval(), Fnet.to(device).eval(), config
