"""Scalable fingerprinting (Yu et al., ICLR 2022; thesis ch.6): one training run, then any
number of generator instances, each carrying its own fingerprint.

The fingerprinted generator G(z, c): the latent z enters at the input (an FC layer to the 4×4
tensor, replacing StyleGAN2's learned constant) and the fingerprint c (bits) goes through an
8-layer mapping network E whose output styles modulate every convolution in the modulated range
(``modulate_res``); layers outside it take one learned, fingerprint-independent style. A decoder F
shaped like the discriminator (no minibatch statistics) recovers z and c from an image.
Losses (the paper's weights): adversarial 1, z reconstruction 1, fingerprint BCE 2, and
consistency 2 (G(z, c1) and G(z, c2) should look alike, so a fingerprint changes only what it
must). Fingerprints are drawn afresh every step so F generalises to unseen ones.

Deployment folds one fingerprint's styles into the convolution weights
(:func:`fold_instance`): the instance is an ordinary z -> image generator with no E, F or D
inside, which ``gantk generate`` loads like any other.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.gan.networks import (
    AttentionLayer,
    Discriminator,
    MappingNetwork,
    NetworkConfig,
    SynthesisLayer,
    ToRGB,
    parse_attn,
    synthesis_blocks,
    upsampling_conv,
    with_resampling_of,
)
from gantk.gan.train import Trainer
from gantk.io.checkpoint import load_checkpoint
from gantk.io.config_schema import (
    build_matching,
    checked_config,
    section,
    tensors_under,
    with_defaults,
)
from gantk.io.images import to_uint8
from gantk.nn.layers import EqualLinear, bias_act
from gantk.nn.resample import make_filter, upsample2d
from gantk.perturb import RandomPerturbation, parse_names

FINGERPRINTED_KIND = "gan-fingerprinted"
INSTANCE_KIND = "gan-instance"
# Loss weights of the paper (adversarial 1).
Z_WEIGHT, BITS_WEIGHT, CONSISTENCY_WEIGHT = 1.0, 2.0, 2.0


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


def _normalize(z: torch.Tensor) -> torch.Tensor:
    return z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


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
        x = self.input(_normalize(z)).reshape(len(z), -1, 4, 4).to(ws.dtype)
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


# --- instances -----------------------------------------------------------------------------


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
        x = self.input(_normalize(z)).reshape(len(z), -1, 4, 4)
        img = None
        for block in self.blocks:
            x, img = block(x, img, noise_mode)
        return img


@torch.no_grad()
def fold_instance(G: FingerprintedGenerator, fingerprint: torch.Tensor) -> GeneratorInstance:
    """The instance of ``G`` for one fingerprint (bits,), equal to G(z, fingerprint)."""
    instance = GeneratorInstance(G.config).to(next(G.parameters()).device)
    instance.input.load_state_dict(G.input.state_dict())
    ws = G.styles(fingerprint[None].to(G.w_fixed.device))[0]
    index = 0
    for folded, block in zip(instance.blocks, G.blocks, strict=True):
        if not folded.first:
            folded.conv0.fold(block.conv0, ws[index])
        conv1_w = ws[index + folded.num_conv - 1]
        if isinstance(folded.conv1, AttentionLayer):
            folded.conv1.load_state_dict(block.conv1.state_dict())
        else:
            folded.conv1.fold(block.conv1, conv1_w)
        folded.torgb.fold(block.torgb, ws[index + folded.num_conv])
        folded.resample_filter.copy_(block.resample_filter)
        index += folded.num_conv
    return instance.eval().requires_grad_(False)


def instance_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of an instance's weights (tensor names and bytes, not the file, whose metadata
    may change), recorded in the registry."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- loading -------------------------------------------------------------------------------


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


def save_instance(path: Path, instance: GeneratorInstance, meta: dict, force: bool) -> str:
    from gantk.io.checkpoint import save_checkpoint

    tensors = instance.state_dict()
    digest = instance_digest(tensors)
    save_checkpoint(path, tensors, INSTANCE_KIND,
                    {"network": instance.config.to_dict(), **meta}, force=force)  # fmt: skip
    return digest


# --- training ------------------------------------------------------------------------------


class ScalableTrainer(Trainer):
    """The StyleGAN2 trainer with the fingerprint losses (see the module docstring).

    Path-length regularization follows the authors' code (``EG_logistic_ns_pathreg``): weight 2,
    every ``pl_interval`` steps, on the styles the fingerprint drives. Style mixing stays off:
    mixing two fingerprints' styles would write two fingerprints into one image with no label
    for F to decode. ``immunize`` perturbs generated images before F.
    """

    def build_networks(self) -> None:
        cfg = self.cfg
        self.G = FingerprintedGenerator(cfg.network).to(self.device)
        self.D = Discriminator(cfg.network).to(self.device)
        self.F = make_decoder(cfg.network).to(self.device)
        self.immunize = RandomPerturbation(cfg.immunize, p_clean=0.5) if cfg.immunize else None

    def generator_side(self) -> nn.Module:
        # F learns with G (one optimizer) so the two agree on how fingerprints are written.
        return nn.ModuleDict({"G": self.G, "F": self.F})

    def state(self) -> dict:
        return {**super().state(), "F": self.F.state_dict()}

    def load_state(self, state: dict) -> None:
        self.F.load_state_dict(with_defaults(self.F, state["F"]))
        super().load_state(state)

    def exported(self) -> tuple[dict[str, torch.Tensor], str]:
        tensors = {f"G.{k}": v for k, v in self.G_ema.state_dict().items()}
        tensors.update({f"F.{k}": v for k, v in self.F.state_dict().items()})
        return tensors, FINGERPRINTED_KIND

    def _fingerprints(self, n: int) -> torch.Tensor:
        bits = self.cfg.network.fingerprint_bits
        c = torch.randint(0, 2, (self.cfg.batch_size, bits), generator=self.latent_gen)
        return c[self.dist.rank * n : (self.dist.rank + 1) * n].float().to(self.device)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        n, z_dim = real.shape[0], self.cfg.network.z_dim
        kind = self._loss_kind()
        with torch.no_grad(), self._autocast():
            fake = self.G(self._latents(n), self._fingerprints(n))
        stats = self.discriminator_step(real, fake, kind)

        z, c, c2 = self._latents(n), self._fingerprints(n), self._fingerprints(n)
        with self._autocast():
            fake = self.G(z, c)
            adv = self.adversarial_loss(fake, real, kind)
            seen = self.immunize(fake, self.latent_gen) if self.immunize else fake
            decoded = self.F(seen).float()
            z_loss = F.mse_loss(decoded[:, :z_dim], z)
            bits_loss = F.binary_cross_entropy_with_logits(decoded[:, z_dim:], c)
            consistency = F.mse_loss(fake.float(), self.G(z, c2).float())
        total = adv + Z_WEIGHT * z_loss + BITS_WEIGHT * bits_loss
        total = total + CONSISTENCY_WEIGHT * consistency
        if self.path_length_due():
            # As the authors' EG_logistic_ns_pathreg: path length of the image with respect to
            # the fingerprint-driven styles (gradients reach the embedding network E through
            # them), on a half batch of fresh latents and fingerprints.
            m = max(1, n // 2)
            z_pl, c_pl = self._latents(m), self._fingerprints(m)
            total = total + self.path_length_term(
                lambda ws: self.G.synthesis(z_pl, ws), self.G.styles(c_pl), stats
            )
        self._check("the generator loss", total)
        self._backward_and_step(total, self.generator_side(), self.opt_G)
        with torch.no_grad():
            bit_acc = ((decoded[:, z_dim:] > 0).float() == c).float().mean()
        stats.update({
            "loss_g": float(self.dist.mean(adv)), "z_rec": float(self.dist.mean(z_loss)),
            "bits_bce": float(self.dist.mean(bits_loss)), "bit_acc": float(self.dist.mean(bit_acc)),
            "consistency": float(self.dist.mean(consistency)),
        })  # fmt: skip
        self._update_ema(n)
        self.step += 1
        return stats

    @torch.no_grad()
    def grid_images(self) -> np.ndarray:
        """One fingerprint per row, one latent per column: rows differ only by fingerprint."""
        grid, bits = self.cfg.grid, self.cfg.network.fingerprint_bits
        gen = torch.Generator().manual_seed(self.cfg.seed + 777)
        z = torch.randn(grid, self.cfg.network.z_dim, generator=gen).repeat(grid, 1)
        c = torch.randint(0, 2, (grid, bits), generator=gen).float().repeat_interleave(grid, 0)
        images = [
            to_uint8(self.G_ema(zc.to(self.device), cc.to(self.device), noise_mode="const"))
            for zc, cc in zip(z.split(16), c.split(16), strict=True)
        ]
        return torch.cat(images).cpu().numpy()


def check_config(config) -> None:
    """Settings a fingerprinted run refuses (called by TrainConfig.validate)."""
    net = config.network
    if net.fingerprint_bits < 0:
        raise GantkError("--fingerprint-bits must be 0 (off) or more")
    if config.immunize and not net.fingerprint_bits:
        raise GantkError("--immunize trains the fingerprint decoder; add --fingerprint-bits")
    if net.fingerprint_bits:
        parse_modulate_res(net.modulate_res, net.resolutions())
    if config.immunize:
        parse_names(",".join(config.immunize))
    if net.modulate_res != "all" and not net.fingerprint_bits:
        raise GantkError(
            "--modulate-res says what the fingerprint modulates; add --fingerprint-bits"
        )
