"""Training the Texture Mixer: the reconstruction task and the interpolation task at once
(thesis §3.3.1-3.3.2).

Per step, for pairs of real crops (S1, S2):
- reconstruction: S_i -> (E^l, E^g) -> G -> Ŝ_i with L1 (λ1), Gram (λ2) and adversarial (λ3,
  critic D_rec) losses;
- interpolation: z^l_i tiled 3x3, shuffled with the corner tiles kept, blended with α ~ U(0, 1)
  (as are the global codes), decoded at 3x size, a random crop judged by Gram (λ4) and
  adversarial (λ5, critic D_itp) losses, each α-weighted between S1 and S2. With ``mix``
  ``select`` (gantk's) the two latents are not averaged: each cell takes one of them, in the
  regions ``texture-mix --mix select`` draws (S1's share α), so the generator is trained on the
  region edges it meets when mixing, and D_itp, whose real side is S1 and S2, sees their seams.
Ablations of Table 3.1: ``no_shuffle``, ``no_blend`` (S2 = S1), ``global_dim=0`` (no z^g).

Under torchrun the processes train data-parallel on one global batch of pairs
(gantk.nn.distributed): crops, blend weights, shuffles, interpolation crops and the gradient
penalty's interpolates are drawn for the whole batch, gradients averaged; rank 0 writes the files.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gantk.errors import GantkError
from gantk.io.bundled import resolve_model_path
from gantk.io.checkpoint import (
    load_checkpoint,
    load_training_state,
    read_metadata,
    rng_state,
    save_checkpoint,
    save_training_state,
    set_rng_state,
)
from gantk.io.config_schema import build_matching, checked_config, parse_config
from gantk.io.runlog import LOG_FILE, append_log, rewind_log
from gantk.io.stop_request import StopRequest
from gantk.nn.distributed import Dist, init_distributed
from gantk.nn.penalties import gp_weights, gradient_penalty
from gantk.nn.precision import (
    autocast,
    channels_last,
    prefers_channels_last,
    resolve_precision,
)
from gantk.texture.gram import GramNet, gram_distance, gram_matrices, load_gram_net
from gantk.texture.latent import MIXES, select_weights, training_tiles, uniform_weights
from gantk.texture.networks import KIND, TextureCritic, TextureMixer, TextureMixerConfig, spread

MODEL_FILE = "latest.safetensors"
STATE_FILE = "state.safetensors"
REC_TERMS = 2  # reconstruction losses are sums over the pair's two textures (eqs. 3.4-3.6)
STATE_KIND = "texture-training-state"


@dataclass
class TextureTrainConfig:
    data: str
    resolution: int = 128
    latent_channels: int = 128
    global_dim: int = 128
    channels: int = 256
    res_blocks: int = 5
    d_channels: int = 64
    upsample: str = "nearest"  # the generator's: nearest (paper) or bilinear
    batch_size: int = 8  # pairs per step
    steps: int = 100_000
    lr: float = 0.0015
    ema: float = 0.999
    l1_weight: float = 100.0  # λ1 (the authors' code: 200)
    gram_weight: float = 0.001  # λ2 = λ4 (the authors' code: 0.002)
    adv_weight: float = 1.0  # λ3 = λ5
    gp_weight: float = 10.0
    # Gram terms every N steps at N times the weight (the lazy-regularisation trick): the VGG
    # passes dominate a CPU step, and the style statistics change slowly.
    gram_every: int = 1
    drift_weight: float = 0.001  # keeps critic outputs near zero (Karras et al. 2018)
    shuffle: bool = True
    blend: bool = True
    mix: str = "blend"  # the interpolation task's: blend (the paper's) or select (see above)
    gram_net: str = "auto"
    gram_weights: str | None = None
    augment: bool = True
    # auto, fp32, bf16 or fp16; the trainer records what 'auto' resolved to (runs saved before
    # precision existed resume in float32).
    precision: str = "fp32"
    seed: int = 0
    device: str = "cpu"
    snapshot_every: int = 500
    log_every: int = 50

    def model_config(self) -> TextureMixerConfig:
        return TextureMixerConfig(
            self.resolution,
            self.latent_channels,
            self.global_dim,
            self.channels,
            self.res_blocks,
            self.d_channels,
            upsample=self.upsample,
        ).validate()

    def validate(self) -> TextureTrainConfig:
        self.model_config()
        for name in ("batch_size", "steps", "snapshot_every", "log_every", "gram_every"):
            if getattr(self, name) < 1:
                raise GantkError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0 or not 0 <= self.ema < 1:
            raise GantkError("--lr must be positive and --ema in [0, 1)")
        if min(self.l1_weight, self.gram_weight, self.adv_weight, self.gp_weight) < 0:
            raise GantkError("loss weights must be non-negative")
        if self.mix not in MIXES:
            raise GantkError(f"--mix must be one of {', '.join(MIXES)}, got {self.mix!r}")
        resolve_precision(self.precision, self.device)  # a known name, usable on the device
        return self

    @classmethod
    def from_dict(cls, data: Any) -> TextureTrainConfig:
        """Every field checked against its type; ValueError names a missing or mistyped one."""
        return parse_config(cls, data, "texture training config")


def random_crops(
    images: Tensor, size: int, gen: torch.Generator, dist: Dist | None = None
) -> Tensor:
    """One random ``size`` crop per image (independent positions); ``dist``: ``images`` is a
    process's share of the batch, the positions are drawn for all of it."""
    h, w = images.shape[2:]
    dist = dist or Dist()
    count = images.shape[0]
    ys = dist.draw(count, lambda n: torch.randint(0, h - size + 1, (n,), generator=gen)).tolist()
    xs = dist.draw(count, lambda n: torch.randint(0, w - size + 1, (n,), generator=gen)).tolist()
    return torch.stack(
        [img[:, y : y + size, x : x + size] for img, y, x in zip(images, ys, xs, strict=True)]
    )


def interpolation_crop(
    model: TextureMixer,
    s1: Tensor,
    s2: Tensor,
    generator: torch.Generator,
    shuffle: bool = True,
    dist: Dist | None = None,
    mix: str = "blend",
) -> tuple[Tensor, Tensor]:
    """The interpolation task (eqs. 3.7-3.9): a random crop of the pair's decoded 3x3 tiled,
    shuffled, α-blended latents, and the blend weights α; with ``mix`` select, S1's latent in
    regions covering a share α of the canvas and S2's elsewhere. ``dist``: the pairs are a
    process's share of the batch; every draw is made as for the whole batch."""
    dist = dist or Dist()
    zl, zg = model.encode(torch.cat([s1, s2]))
    zl1, zl2 = zl.chunk(2)
    n = s1.shape[0]
    canvas = (3 * zl.shape[2], 3 * zl.shape[3])
    if mix == "select":
        # One draw of α and regions for the whole batch: (α, S1's weight map) per row.
        drawn = dist.draw(n, lambda rows: _selections(rows, canvas, generator))
        alpha = drawn[:, 0].to(s1.device)
        w = drawn[:, 1:].reshape(n, 1, *canvas).to(s1.device)
    else:
        alpha = dist.draw(n, lambda rows: torch.rand(rows, generator=generator)).to(s1.device)
        w = alpha[:, None, None, None]

    def tiles(z: Tensor) -> Tensor:
        return dist.sample_wise(lambda part: training_tiles(part, generator, shuffle), z)

    big = w * tiles(zl1) + (1 - w) * tiles(zl2)
    glob = None
    if zg is not None:
        g1, g2 = zg.chunk(2)
        if mix == "select":  # the global code follows the regions, as when mixing
            glob = w * g1[:, :, None, None] + (1 - w) * g2[:, :, None, None]
        else:
            a = alpha[:, None]
            glob = spread(a * g1 + (1 - a) * g2, big)
    image = model.decode(big, glob).float()
    return random_crops(image, model.config.resolution, generator, dist), alpha


def _selections(rows: int, canvas: tuple[int, int], generator: torch.Generator) -> Tensor:
    """``rows`` draws of (α ~ U(0, 1), then S1's weight map over the latent ``canvas`` from
    :func:`select_weights` at share α), flattened to (rows, 1 + h*w)."""
    alphas = torch.rand(rows, generator=generator)
    maps = [select_weights(uniform_weights(*canvas, 1 - float(a)), generator)[0] for a in alphas]
    return torch.cat([alphas[:, None], torch.stack(maps).flatten(1)], dim=1)


class TextureTrainer:
    def __init__(self, config: TextureTrainConfig, out: Path, dist: Dist | None = None) -> None:
        from gantk.texture.data import TextureSampler, load_texture_sources

        config = replace(config, precision=resolve_precision(config.precision, config.device))
        self.config = config.validate()
        self.out = Path(out)
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        model_cfg = config.model_config()
        self.model = TextureMixer(model_cfg).to(self.device)
        self.model_ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.d_rec = TextureCritic(model_cfg).to(self.device)
        self.d_itp = TextureCritic(model_cfg).to(self.device)
        self.gram: GramNet = load_gram_net(config.gram_net, config.gram_weights, self.device)
        if prefers_channels_last(config.precision, config.device):
            # The Gram network (possibly shared) is left alone: the images it gets are already
            # channels-last, and convolutions follow their input's layout.
            channels_last(self.model, self.model_ema, self.d_rec, self.d_itp)
        # Record the network 'auto' chose, so a resumed run keeps it even if the VGG-19 weight
        # file appears or disappears in between.
        self.config = replace(self.config, gram_net=self.gram.name)
        betas = (0.0, 0.99)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=betas)
        d_params = list(self.d_rec.parameters()) + list(self.d_itp.parameters())
        self.opt_d = torch.optim.Adam(d_params, lr=config.lr, betas=betas)
        # Under torchrun: this process's place; each trains on an equal share of the pairs.
        self.dist = dist or init_distributed(self.device)
        self.dist.check_batch(config.batch_size)
        self.dist.sync_gradients(self.opt_g, self.opt_d)
        sources = load_texture_sources(config.data, split="train")
        self.sampler = TextureSampler(sources, config.resolution, augment=config.augment)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    # -- data --------------------------------------------------------------------------------

    def _pairs(self) -> tuple[Tensor, Tensor]:
        """Batch of (S1, S2); the sampler's RNG is derived from (seed, step) so a resumed run
        draws exactly the crops it would have drawn."""
        rng = np.random.default_rng([self.config.seed, self.step])
        crops = self.sampler.sample(2 * self.config.batch_size, rng)
        # The whole batch's crops (one stream of draws), this process's pairs.
        s1, s2 = (self.dist.shard(half).to(self.device) for half in crops.chunk(2))
        return s1, (s1 if not self.config.blend else s2)

    # -- one step ----------------------------------------------------------------------------

    def _interpolate(self, s1: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
        return interpolation_crop(
            self.model, s1, s2, self.generator, self.config.shuffle, self.dist, self.config.mix
        )

    def _gram_losses(
        self, real: Tensor, recon: Tensor, crop: Tensor, alpha: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Eq. 3.5 and the α-weighted eq. 3.8 (means over the batch's samples)."""
        with torch.no_grad():
            gram_real = gram_matrices(self.gram, real)
        gram_rec = gram_distance(gram_matrices(self.gram, recon), gram_real).mean()
        half = crop.shape[0]
        grams_crop = gram_matrices(self.gram, crop)
        g1 = [g[:half] for g in gram_real]
        g2 = [g[half:] for g in gram_real]
        gram_itp = (
            alpha * gram_distance(grams_crop, g1) + (1 - alpha) * gram_distance(grams_crop, g2)
        ).mean()
        return gram_rec, gram_itp

    def train_step(self, s1: Tensor, s2: Tensor) -> dict[str, float]:
        cfg = self.config
        real = torch.cat([s1, s2])
        pair = [s1, s2]

        # Generator side: encoders + generator.
        self.model.requires_grad_(True)
        self.d_rec.requires_grad_(False)
        self.d_itp.requires_grad_(False)
        # Networks in the run's precision (the Gram products stay float32), losses in float32.
        with self._autocast():
            recon = self.model(real).float()
            adv_rec = -self.d_rec(recon).float().mean()
            crop, alpha = self._interpolate(s1, s2)
            adv_itp = -self.d_itp(crop).float().mean()
        l1 = (recon - real).abs().mean()
        # Eqs. 3.4-3.6 sum the reconstruction terms of S1 and S2, while eqs. 3.8-3.9 give one
        # interpolation term per pair: the per-sample means of the reconstruction terms count
        # twice (REC_TERMS) to keep the paper's balance between the two tasks.
        loss_g = cfg.l1_weight * REC_TERMS * l1 + cfg.adv_weight * (REC_TERMS * adv_rec + adv_itp)
        gram_rec = gram_itp = None
        if self.step % cfg.gram_every == 0:
            with self._autocast():
                gram_rec, gram_itp = self._gram_losses(real, recon, crop, alpha)
            gram = REC_TERMS * gram_rec + gram_itp
            loss_g = loss_g + cfg.gram_weight * cfg.gram_every * gram
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._update_ema()

        # Critics: WGAN-GP on reconstructions and on interpolation crops. D_itp's real side is
        # the α-weighted pair, as in eq. 3.9.
        self.model.requires_grad_(False)
        self.d_rec.requires_grad_(True)
        self.d_itp.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            recon = self.model(real).float()
            crop, alpha = self._interpolate(s1, s2)
        with self._autocast():
            d_rec, d_itp = self._critic_losses(real, recon, crop, alpha, pair)
        loss_rec, loss_itp = d_rec.float(), d_itp.float()
        self.opt_d.zero_grad(set_to_none=True)
        (loss_rec + loss_itp).backward()
        self.opt_d.step()
        self.step += 1
        grams = {} if gram_rec is None else {"gram_rec": gram_rec, "gram_itp": gram_itp}
        # Means over the global batch (each process's share is equal).
        losses = {"l1": l1, **grams, "adv_rec": adv_rec, "adv_itp": adv_itp,
                  "d_rec": loss_rec, "d_itp": loss_itp}  # fmt: skip
        return self.dist.means(losses)

    def _critic_losses(
        self, real: Tensor, recon: Tensor, crop: Tensor, alpha: Tensor, pair: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """WGAN-GP losses of D_rec and D_itp (critic outputs read in float32)."""
        cfg = self.config

        def d_rec(x: Tensor) -> Tensor:
            return self.d_rec(x).float()

        def d_itp(x: Tensor) -> Tensor:
            return self.d_itp(x).float()

        d_real = d_rec(real)
        loss_rec = REC_TERMS * (
            d_rec(recon).mean()
            - d_real.mean()
            # real is cat([S1, S2]): each half shared out on its own.
            + cfg.gp_weight * gradient_penalty(d_rec, real, recon, alpha=self._gp(real, 2)).mean()
            + cfg.drift_weight * (d_real**2).mean()
        )
        loss_itp = d_itp(crop).mean()
        for weight, source in zip((alpha, 1 - alpha), pair, strict=True):
            d_src = d_itp(source)
            gp = gradient_penalty(d_itp, source, crop, per_sample=True, alpha=self._gp(source))
            loss_itp = (
                loss_itp
                + (weight * (-d_src + cfg.gp_weight * gp + cfg.drift_weight * d_src**2)).mean()
            )
        return loss_rec, loss_itp

    def _gp(self, real: Tensor, groups: int = 1) -> Tensor:
        """The gradient penalty's interpolation weights, drawn for the whole batch."""
        return gp_weights(real, self.dist, groups)

    def _autocast(self):
        return autocast(self.config.precision, self.device)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Ramp the decay up, (1 + n) / (10 + n) capped at --ema (as TensorFlow's moving
        # averages with num_updates): a fixed 0.999 would still weigh the random initial
        # weights by 0.6 after 500 steps, ruining short (CPU) runs.
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.model_ema.parameters(), self.model.parameters(), strict=True):
            p_ema.lerp_(p, 1 - decay)

    # -- files -------------------------------------------------------------------------------

    def save_model(self, path: Path | None = None, dtype: torch.dtype | None = None) -> Path:
        meta = {"gantk.steps": str(self.step), "gantk.data": self.config.data}
        return save_texture_mixer(
            path or self.out / MODEL_FILE, self.model_ema, self.gram.name, meta, dtype
        )

    def save_state(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "model_ema": self.model_ema.state_dict(),
            "d_rec": self.d_rec.state_dict(),
            "d_itp": self.d_itp.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "rng": rng_state(),
        }
        save_training_state(self.out / STATE_FILE, state, STATE_KIND, asdict(self.config))

    def load_state(self) -> None:
        state, _ = load_training_state(self.out / STATE_FILE, STATE_KIND)
        for name in ("model", "model_ema", "d_rec", "d_itp", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])

    def save_samples(self) -> Path:
        """A strip interpolating two fixed training crops, for watching progress."""
        from gantk.io.images import save_image
        from gantk.texture.mixing import Mixer, to_uint8

        rng = np.random.default_rng([self.config.seed, 2**31])
        pair = self.sampler.sample(2, rng).to(self.device)
        mixer = Mixer(self.model_ema)
        strip = mixer.strip(list(pair[:, None]), 4 * self.config.resolution, seed=0)
        path = self.out / "samples" / f"strip-{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(to_uint8(strip), path)
        return path

    # -- the loop ----------------------------------------------------------------------------

    def run(self, on_log: Callable[[dict], None] | None = None) -> dict:
        cfg = self.config
        main = self.dist.main  # the one process that writes
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(
                json.dumps({**asdict(cfg), "gram_net_used": self.gram.name}, indent=2)
            )
            rewind_log(self.out / LOG_FILE, self.step)
        window: list[dict[str, float]] = []
        entry: dict = {}
        stopping = False
        with StopRequest() as stop:
            while self.step < cfg.steps and not stopping:
                last = self.train_step(*self._pairs())
                window.append(last)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    # Gram terms are only present on the steps that computed them (--gram-every).
                    keys = dict.fromkeys(k for w in window for k in w)
                    entry = {"step": self.step}
                    for k in keys:
                        values = [w[k] for w in window if k in w]
                        entry[k] = sum(values) / len(values)
                    window.clear()
                    if main:
                        append_log(self.out / LOG_FILE, entry)
                    if on_log:
                        on_log(entry)
                    if not all(math.isfinite(v) for v in entry.values()):
                        raise GantkError(
                            f"training diverged at step {self.step} (loss is not finite)"
                        )
                # Every process stops at the same step when any was asked to.
                stopping = self.dist.any(stop.requested)
                if self.step % cfg.snapshot_every == 0 or self.step == cfg.steps or stopping:
                    if not all(math.isfinite(v) for v in last.values()):  # never save NaN weights
                        raise GantkError(
                            f"training diverged at step {self.step} (loss is not finite)"
                        )
                    if main:
                        self.save_model()
                        self.save_state()
                        self.save_samples()
        self.dist.barrier()  # the run's files are written when any process returns
        return entry


def start_or_resume(
    config: TextureTrainConfig,
    out: Path,
    resume: bool,
    init: str | Path | None = None,
    mix: str | None = None,
) -> TextureTrainer:
    """A trainer for a new run in ``out`` or, with ``resume``, for the run already there (only
    the number of steps, the device and, given ``mix``, the interpolation task may change: a
    run trained on blends can go on to learn the select task with its critics and optimizers).

    ``init`` starts the new run from a trained model's encoders and generator (e.g.
    builtin:texture-mixer, to train it further on other textures); the critics and the
    optimizers start afresh, since a model file carries neither.
    """
    state = Path(out) / STATE_FILE
    if init is not None and resume:
        raise GantkError("--init starts a new run from a model; --resume continues a run: pick one")
    if resume:
        if not state.is_file():
            raise GantkError(f"{out} has no {STATE_FILE} to resume; start a new run instead")
        _, saved = load_training_state(state, STATE_KIND)
        try:
            restored = TextureTrainConfig.from_dict(saved)
        except ValueError as exc:
            raise GantkError(f"{state} is damaged ({exc}); start a new run instead") from None
        config = replace(
            restored, steps=config.steps, device=config.device, mix=mix or restored.mix
        )
        trainer = TextureTrainer(config, out)
        trainer.load_state()
        return trainer
    if state.exists():
        raise GantkError(f"{out} already holds a texture run; use --resume or another --out")
    trainer = TextureTrainer(config, out)
    if init is not None:
        start = load_texture_mixer(init, trainer.device)
        # The upsampling mode has no weights: a nearest model may start a bilinear run.
        shape = replace(start.config, upsample=trainer.model.config.upsample)
        if shape != trainer.model.config:
            raise GantkError(
                f"--init {init} has another shape ({start.config.to_dict()}) than this run "
                f"({trainer.model.config.to_dict()}); give the same --resolution, --channels, "
                "--latent-channels, --global-dim and --res-blocks"
            )
        trainer.model.load_state_dict(start.state_dict())
        trainer.model_ema.load_state_dict(start.state_dict())
    return trainer


def save_texture_mixer(
    path: Path,
    model: TextureMixer,
    gram_net: str,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Encoders + generator in one file; the config records the Gram network the model was
    trained with. ``dtype`` e.g. float16 for shipping (loading converts back to float32)."""
    config = {**model.config.to_dict(), "gram_net": gram_net}
    return save_checkpoint(path, dict(model.state_dict()), KIND, config, metadata, dtype=dtype)


def load_texture_mixer(path: str | Path, device: str | torch.device = "cpu") -> TextureMixer:
    """A Texture Mixer from its file, in eval mode; ``builtin:texture-mixer`` is the bundled
    default model."""
    path = resolve_model_path(
        str(path), "Texture Mixer model", "gantk train texture (latest.safetensors)"
    )
    found = read_metadata(path).get("gantk.kind")
    if found is not None and found != KIND:
        raise GantkError(
            f"{path} holds a {found}, not a Texture Mixer model; pass the latest.safetensors "
            "of a `gantk train texture` run or builtin:texture-mixer"
        )
    ckpt = load_checkpoint(path, KIND, device)
    config = checked_config(TextureMixerConfig, ckpt.config, path, "Texture Mixer")
    tensors = {k: v.float() for k, v in ckpt.tensors.items()}
    model = build_matching(lambda: TextureMixer(config), tensors, path, "Texture Mixer")
    model.gram_net = str(ckpt.config.get("gram_net", "unknown"))  # type: ignore[assignment]
    return model.to(device).eval().requires_grad_(False)
