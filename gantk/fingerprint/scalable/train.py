"""Training scalable fingerprints: the StyleGAN2 trainer with the fingerprint losses.

Losses (the paper's weights): adversarial 1, z reconstruction 1, fingerprint BCE 2, and
consistency 2 (G(z, c1) and G(z, c2) should look alike, so a fingerprint changes only what it
must). Fingerprints are drawn afresh every step so F generalises to unseen ones.
:class:`ScalableTrainer` reuses :class:`gantk.gan.trainer.Trainer` through its public hooks
(``build_networks``, ``generator_side``, ``state``/``load_state``, ``exported``,
``train_step``, ``grid_images``) and registers itself for runs with ``--fingerprint-bits``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.fingerprint.scalable.networks import (
    FingerprintedGenerator,
    make_decoder,
    parse_modulate_res,
)
from gantk.gan.config import TrainConfig
from gantk.gan.folded import FINGERPRINTED_KIND
from gantk.gan.networks import Discriminator
from gantk.gan.trainer import Trainer, register
from gantk.io.config_schema import with_defaults
from gantk.io.images import to_uint8
from gantk.perturb import RandomPerturbation, parse_names

# Loss weights of the paper (adversarial 1).
Z_WEIGHT, BITS_WEIGHT, CONSISTENCY_WEIGHT = 1.0, 2.0, 2.0


@register
class ScalableTrainer(Trainer):
    """The StyleGAN2 trainer with the fingerprint losses (see the module docstring).

    Path-length regularization follows the authors' code (``EG_logistic_ns_pathreg``): weight 2,
    every ``pl_interval`` steps, on the styles the fingerprint drives. Style mixing stays off:
    mixing two fingerprints' styles would write two fingerprints into one image with no label
    for F to decode. ``immunize`` perturbs generated images before F.
    """

    @classmethod
    def uses(cls, config: TrainConfig) -> bool:
        net = config.network
        return bool(net.fingerprint_bits or config.immunize or net.modulate_res != "all")

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        check_config(config)

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


def check_config(config: TrainConfig) -> None:
    """Settings a fingerprinted run refuses (run for every config that uses them)."""
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
