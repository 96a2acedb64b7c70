"""One training iteration of StyleGAN2: a discriminator step, then a generator step.

:class:`AdversarialSteps` is the half of :class:`gantk.gan.trainer.Trainer` that does the
arithmetic of one batch: the chosen adversarial loss (:mod:`gantk.gan.losses`) on D behind the
augmentation, R1 (every ``r1_interval`` D steps, weight ``gamma / 2 * r1_interval``) or
WGAN-GP, the path length penalty (every ``pl_interval`` G steps), style mixing, gradients
accumulated over the slices of ``--batch-gpu`` (:mod:`gantk.gan.microbatch`) and averaged over
processes, and the generator's EMA. Lazy regularization (Karras et al. 2020, appendix B) folds
each regularizer into these steps with its weight multiplied by its interval.

The trainer supplies the state these methods read (see the annotations below); subclasses
(IMLE-GAN, scalable fingerprints) replace :meth:`~AdversarialSteps.train_step` or add
:meth:`~AdversarialSteps.extra_generator_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gantk.gan import losses, microbatch
from gantk.gan.config import TrainConfig
from gantk.gan.losses import NonFiniteLoss
from gantk.nn.augment import AdaController, AdaptiveAugment, diff_augment
from gantk.nn.distributed import Dist


class AdversarialSteps:
    """The D and G steps of one iteration (mixed into the Trainer)."""

    # Set up by Trainer.__init__ and build_networks.
    cfg: TrainConfig
    dist: Dist
    device: torch.device
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    step: int
    pl_mean: torch.Tensor
    warmup_steps: int
    augment: AdaptiveAugment | None
    ada: AdaController | None
    aug_gen: torch.Generator
    latent_gen: torch.Generator
    scaler: torch.amp.GradScaler | None
    label_pool: torch.Tensor | None
    c_real: torch.Tensor | None
    c_fake: torch.Tensor | None
    batch_labels: torch.Tensor
    _replay: microbatch.RandomReplay

    @property
    def nimg(self) -> int:
        return self.step * self.cfg.batch_size

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return (
            torch.nn.functional.one_hot(labels.long(), self.cfg.network.c_dim)
            .float()
            .to(self.device)
        )

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        """Classes for this process's n fake images, drawn from the data's labels (global batch
        drawn on every process alike, then sharded, as the latents are)."""
        if self.label_pool is None:
            return None
        picks = torch.randint(len(self.label_pool), (self.cfg.batch_size,),
                              generator=self.latent_gen)  # fmt: skip
        labels = self.label_pool[picks][self.dist.rank * n : (self.dist.rank + 1) * n]
        return self.one_hot(labels)

    def _autocast(self):
        if self.cfg.amp == "none":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _latents(self, n: int) -> torch.Tensor:
        """This process's shard of the global batch of latents (same on every process)."""
        z = torch.randn(self.cfg.batch_size, self.cfg.network.z_dim, generator=self.latent_gen)
        return z[self.dist.rank * n : (self.dist.rank + 1) * n].to(self.device)

    def _mixed_ws(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        ws = self.G.mapping(self._latents(n), update_w_avg=True, c=c)
        mix = torch.rand([], generator=self.latent_gen).item() < self.cfg.style_mixing
        cutoff = int(torch.randint(1, self.G.num_ws, [], generator=self.latent_gen))
        z2 = self._latents(n)  # drawn every step so the latent stream does not depend on `mix`
        if mix:
            ws = ws.clone()
            ws[:, cutoff:] = self.G.mapping(z2, c=c)[:, cutoff:]
        return ws

    def _loss_kind(self) -> str:
        if self.cfg.loss == "contrastive" and self.step < self.warmup_steps:
            return "ns"
        return self.cfg.loss

    def _check(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLoss(
                f"{name} became {value.item()} at step {self.step} ({self.nimg / 1000:.2f} kimg)"
            )

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        n = real.shape[0]
        kind = self._loss_kind()
        parts = microbatch.slices(n, self.cfg.batch_gpu)
        if self.label_pool is not None:
            self.c_real = self.one_hot(self.batch_labels)
            self.c_fake = self._fake_labels(n)
        with torch.no_grad(), self._autocast():
            ws = self._mixed_ws(n, self.c_fake)
            fake = torch.cat([self.G.synthesis(ws[part]) for part in parts])
        stats = self.discriminator_step(real, fake, kind)

        # Generator step: gradients accumulated over the slices, then one update.
        self.opt_G.zero_grad(set_to_none=True)
        self.c_fake = self._fake_labels(n)
        loss_g = self._generator_adversarial(self._mixed_ws(n, self.c_fake), real, kind, parts)
        if self.path_length_due():
            m = max(1, n // 2)  # a half batch, as StyleGAN2 (pl_batch_shrink 2)
            ws_pl = self._mixed_ws(m, self._fake_labels(m))
            pl_parts = microbatch.slices(m, self.cfg.batch_gpu)
            if len(pl_parts) == 1:
                term = self.path_length_term(self.G.synthesis, ws_pl, stats)
                self._accumulate("the generator loss", term)
            else:
                with microbatch.StyleLeaf(ws_pl) as leaf:
                    for part in pl_parts:
                        term = self.path_length_term(self.G.synthesis, leaf.styles[part], stats)
                        self._accumulate("the generator loss", term * (len(leaf.styles[part]) / m))
        extra = self.extra_generator_loss(n, stats)
        if extra is not None:
            self._accumulate("the generator loss", extra)
        self._step(self.G, self.opt_G)
        stats["loss_g"] = float(self.dist.mean(loss_g))
        self._update_ema(n)
        self.step += 1
        if self.ada is not None and self.augment is not None:
            self.ada.step(self.augment, self.cfg.batch_size)
            stats["aug_p"] = float(self.augment.p)
        return stats

    def path_length_due(self) -> bool:
        return self.cfg.pl_weight > 0 and self.step % self.cfg.pl_interval == 0

    def path_length_term(
        self, synthesis: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor, stats: dict
    ) -> torch.Tensor:
        """StyleGAN2's path length penalty on ``synthesis`` at styles ``ws``, weighted for lazy
        regularization; updates the running mean length and logs ``pl_penalty``."""
        cfg = self.cfg
        lengths = losses.path_lengths(synthesis, ws)
        pl_mean = self.pl_mean.lerp(self.dist.mean(lengths.mean()), cfg.pl_decay)
        self.pl_mean = pl_mean.detach()
        penalty = (lengths - pl_mean).square().mean()
        stats["pl_penalty"] = float(self.dist.mean(penalty))
        return penalty * cfg.pl_weight * cfg.pl_interval

    def extra_generator_loss(self, n: int, stats: dict[str, float]) -> torch.Tensor | None:
        """Terms a subclass adds to the generator's loss (IMLE's reconstruction), logging
        into ``stats``; None adds nothing."""
        return None

    def adversarial_loss(self, fake: torch.Tensor, real: torch.Tensor, kind: str) -> torch.Tensor:
        """The generator's adversarial loss for ``fake`` (D frozen; the contrastive loss also
        needs D's view of the real batch)."""
        fake_logits = self._d_fn(real, self.c_fake)(fake).float()
        with torch.no_grad():
            real_logits = (
                self._d_fn(real, self.c_real)(real).float() if kind == "contrastive" else None
            )
        return losses.g_loss(kind, fake_logits, real_logits)

    def _generator_adversarial(
        self, ws: torch.Tensor, real: torch.Tensor, kind: str, parts: list[slice]
    ) -> torch.Tensor:
        """The adversarial loss of G(ws), its gradients accumulated slice by slice (see
        gantk.gan.microbatch); returns the loss, detached."""
        n = real.shape[0]
        if len(parts) == 1:
            with self._autocast():
                loss = self.adversarial_loss(self.G.synthesis(ws), real, kind)
            self._accumulate("the generator loss", loss)
            return loss.detach()
        ref = self._reference(real)
        with microbatch.StyleLeaf(ws) as leaf:
            if kind != "contrastive":
                total = torch.zeros([], device=self.device)
                for part in parts:
                    with self._autocast():
                        image = self.G.synthesis(leaf.styles[part])
                        logits = self._d_on(image, ref, part, self.c_fake).float()
                        loss = losses.g_loss(kind, logits) * (len(logits) / n)
                    self._accumulate("the generator loss", loss)
                    total += loss.detach()
                return total
            with torch.no_grad(), self._autocast():
                real_logits = torch.cat(
                    [self._d_on(real[p], ref, p, self.c_real).float() for p in parts]
                )

            def fake_logits(part: slice) -> tuple[torch.Tensor]:
                with self._autocast():
                    image = self.G.synthesis(leaf.styles[part])
                    return (self._d_on(image, ref, part, self.c_fake),)

            loss, _ = microbatch.two_pass_backward(
                parts, fake_logits, lambda fake: losses.g_loss(kind, fake, real_logits),
                lambda surrogate: self._accumulate("the generator loss", surrogate),
                self._replay,
            )  # fmt: skip
            return loss

    def _reference(self, real: torch.Tensor) -> torch.Tensor | None:
        """The real image reference attention in D compares each input with: another one."""
        return real.roll(1, dims=0) if self.D.needs_reference else None

    def _d_on(
        self,
        x: torch.Tensor,
        ref: torch.Tensor | None,
        part: slice,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """D on a slice of the batch (behind the augmentation), with that slice's references
        and classes."""
        return self.D(
            self.augmented(x),
            ref[part] if ref is not None else None,
            c=c[part] if c is not None else None,
        )

    def _d_fn(
        self, real: torch.Tensor, c: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as every loss and penalty sees it: behind the augmentation (so R1 differentiates
        through it, as StyleGAN2-ADA's does), conditioned on classes ``c`` when given."""
        ref = self._reference(real)
        return lambda x: self.D(self.augmented(x), ref, c=c)

    def augmented(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            return self.augment(images, self.aug_gen)
        if self.cfg.aug == "diffaug":
            return diff_augment(images, self.aug_gen)
        return images

    def discriminator_step(
        self, real: torch.Tensor, fake: torch.Tensor, kind: str
    ) -> dict[str, float]:
        """One D update on ``real`` and (detached) ``fake``, gradients accumulated over the
        slices of --batch-gpu; leaves D frozen for the G step."""
        cfg, n = self.cfg, real.shape[0]
        parts = microbatch.slices(n, cfg.batch_gpu)
        ref = self._reference(real)
        stats: dict[str, float] = {}
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        fake = fake.float()

        def logits(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
            with self._autocast():
                return (
                    self._d_on(real[part], ref, part, self.c_real),
                    self._d_on(fake[part], ref, part, self.c_fake),
                )

        if kind == "contrastive" and len(parts) > 1:
            loss_d, (real_logits, fake_logits) = microbatch.two_pass_backward(
                parts, logits, lambda r, f: losses.d_loss(kind, r, f),
                lambda surrogate: self._accumulate("the discriminator loss", surrogate),
                self._replay,
            )  # fmt: skip
        else:
            loss_d = torch.zeros([], device=self.device)
            real_pieces, fake_pieces = [], []
            for part in parts:
                r, f = (t.float() for t in logits(part))
                loss = losses.d_loss(kind, r, f) * (len(r) / n)
                self._accumulate("the discriminator loss", loss)
                loss_d += loss.detach()
                real_pieces.append(r.detach())
                fake_pieces.append(f.detach())
            real_logits, fake_logits = torch.cat(real_pieces), torch.cat(fake_pieces)
        if kind == "wgan-gp" or (cfg.gamma > 0 and self.step % cfg.r1_interval == 0):
            name = "gp" if kind == "wgan-gp" else "r1"
            penalty_total = 0.0
            for part in parts:
                d_fn = lambda x, p=part: self._d_on(x, ref, p, self.c_real)  # noqa: E731
                share = len(real[part]) / n
                if kind == "wgan-gp":
                    penalty = losses.gradient_penalty(d_fn, real[part], fake[part])
                    weight = cfg.gp_weight
                else:
                    penalty = losses.r1_penalty(d_fn, real[part])
                    weight = (cfg.gamma / 2) * cfg.r1_interval
                self._accumulate("the discriminator loss", penalty * weight * share)
                penalty_total += float(penalty.detach()) * share
            stats[name] = float(self.dist.mean(torch.tensor(penalty_total, device=self.device)))
        self._step(self.D, self.opt_D)
        stats["loss_d"] = float(self.dist.mean(loss_d))
        stats["real_logit"] = float(self.dist.mean(real_logits.mean()))
        if self.ada is not None:
            self.ada.accumulate(float(self.dist.mean(real_logits.sign().mean())))
        stats["fake_logit"] = float(self.dist.mean(fake_logits.mean()))
        self.D.requires_grad_(False)
        return stats

    def _accumulate(self, name: str, loss: torch.Tensor) -> None:
        """Check ``loss`` and add its gradients to the networks' (scaled under --amp fp16)."""
        self._check(name, loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _step(self, net: nn.Module, opt: torch.optim.Optimizer) -> None:
        """Average the accumulated gradients over processes and update ``net``."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        self.dist.average_gradients(net)
        for p in net.parameters():  # a stray inf/NaN gradient must not poison the weights
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def _backward_and_step(
        self, loss: torch.Tensor, net: nn.Module, opt: torch.optim.Optimizer
    ) -> None:
        """One loss, one update (trainers whose generator step is not sliced)."""
        opt.zero_grad(set_to_none=True)
        self._accumulate("the generator loss", loss)
        self._step(net, opt)

    @torch.no_grad()
    def _update_ema(self, n: int) -> None:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup_now is not None:
            ema_nimg = min(ema_nimg, (self.nimg + cfg.batch_size) * cfg.ema_rampup_now)
        beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)
