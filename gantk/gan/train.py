"""The GAN training loop: StyleGAN2 with a choice of loss and attention, resumable and DDP-ready.

One iteration = one discriminator step then one generator step on a batch of ``batch_size``
images. Lazy regularization (R1 every ``r1_interval`` D steps, path length every
``pl_interval`` G steps) is folded into those steps with its weight multiplied by the interval.

Exact resume: the batch indices of step s are a pure function of (seed, s); latents and style
mixing draw from their own generator; every RNG state is saved with the models and optimizers,
so a run stopped and resumed equals one that never stopped.

Multi-process (``torchrun``): every process computes the same global batch indices and latents
and takes its contiguous shard; gradients are averaged across processes after each backward
(the regularizers need double backward, which DistributedDataParallel does not support).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.gan import losses, microbatch
from gantk.gan.networks import (
    GENERATOR_KIND,
    Discriminator,
    Generator,
    NetworkConfig,
    with_resampling_of,
)
from gantk.io.atomic import atomic_file, check_run_folder, new_run
from gantk.io.checkpoint import (
    load_checked_state,
    load_training_state,
    rng_state,
    save_checkpoint,
    save_training_state,
    set_rng_state,
)
from gantk.io.config_schema import build_matching, parse_config, section, with_defaults
from gantk.io.datasets import ImageDataset, is_folder_spec, open_dataset
from gantk.io.images import make_grid, save_image, to_uint8
from gantk.io.runlog import LOG_FILE, append_log, rewind_log
from gantk.nn.augment import AdaController, AdaptiveAugment, diff_augment
from gantk.nn.distributed import Dist, init_distributed

STATE_KIND = "gan-training-state"
CONFIG_FILE = "train-config.json"
RUN_ARTIFACTS = (
    "latest.safetensors",
    "latest-state.safetensors",
    "snapshot-*.safetensors",
    "samples-*.png",
    "log.jsonl",
    "best.safetensors",
    "metrics-real-*.npz",
    CONFIG_FILE,
)
AUGMENTATIONS = ("none", "ada", "diffaug")
# IMLE's latent pool is drawn and regenerated whole: beyond this it is a typing mistake.
MAX_IMLE_POOL = 10_000_000
ADA_INTERVAL = 4  # steps between adjustments of p (StyleGAN2-ADA's ada_interval)
# Options that may differ on --resume (how long and how often), the rest must match.
# lr and r1_gamma may change so that a diverged run can continue more gently.
RESUMABLE_CHANGES = (
    "kimg",
    "snapshot_kimg",
    "sample_kimg",
    "tick_kimg",
    "workers",
    "device",
    "lr",
    "r1_gamma",
    "metrics_kimg",
    "batch_gpu",  # the recipe stays the same: only how the batch is sliced changes
)


# --config: what each named set means (TrainConfig.gamma / ema_rampup_now apply them).
PRESETS = {
    "auto": "R1 gamma = 0.0002 * resolution^2 / batch (the StyleGAN2-ADA heuristic, which keeps "
    "small-resolution runs from being over-regularized), EMA ramp-up 0.05",
    "paper": "StyleGAN2 config E as published (Karras et al. 2020, FFHQ): R1 gamma = 10, no "
    "EMA ramp-up; with the other defaults (lr 0.002, batch 32, path length 2, style "
    "mixing 0.9, 8 mapping layers, EMA half-life 10 kimg)",
}
PAPER_R1_GAMMA = 10.0


@dataclass
class TrainConfig:
    data: str
    out: str
    network: NetworkConfig = field(default_factory=NetworkConfig)
    kimg: float = 50.0
    batch_size: int = 32
    loss: str = "ns"
    # Non-saturating epochs (passes over the data) before the contrastive loss takes over: the
    # thesis warms up for about 20 (§2.4 implementation details).
    contrastive_warmup_epochs: float = 20.0
    # Steps of warm-up on top of the epochs; runs from before the epochs existed stored this.
    contrastive_warmup: int = 0
    # Named hyper-parameter sets (see PRESETS); explicit options override them. auto is the
    # default, as in StyleGAN2-ADA's train.py: paper's EMA has no ramp-up, so with its 10 kimg
    # half-life a run of 1 kimg samples weights that are still 93 % the random initial ones
    # (0.5 ** (1 / 10)); paper needs runs of tens of kimg (docs/results.md, GAN core).
    preset: str = "auto"
    lr: float = 0.002
    r1_gamma: float | None = None  # None: the preset's
    r1_interval: int = 16
    gp_weight: float = 10.0
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    mirror: bool = False
    # Augmentation of every image D sees (gantk.nn.augment): none, ada (StyleGAN2-ADA's
    # pipeline, p tuned every ADA_INTERVAL steps towards E[sign(D(real))] = ada_target, able to
    # move by 1 in ada_kimg kimg) or diffaug (DiffAugment's colour, translation, cutout).
    aug: str = "none"
    aug_p: float = 0.0  # ada: p at the start
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    # Metrics of the EMA generator while training (gantk.gan.train_metrics): names from
    # fid, kid; every metrics_kimg (default: at each snapshot) on metrics_count images.
    metrics: list[str] = field(default_factory=list)
    metrics_kimg: float | None = None
    metrics_count: int = 5000
    metrics_features: str = "inception"
    # Per-process micro-batch (gantk.gan.microbatch): gradients accumulate over slices of this
    # many images; None: the whole per-process batch at once.
    batch_gpu: int | None = None
    # Class-conditional training on the dataset's labels (the network's c_dim and class_names
    # are taken from the data when the run starts).
    cond: bool = False
    snapshot_kimg: float = 10.0
    sample_kimg: float = 5.0
    tick_kimg: float = 1.0
    grid: int = 8
    seed: int = 0
    amp: str = "none"
    channels_last: bool = False
    workers: int = 0
    device: str = "cpu"
    # Scalable fingerprints: perturbations applied to generated images before the decoder.
    immunize: list[str] = field(default_factory=list)
    # Inclusive GAN (IMLE-GAN, thesis ch.7): see gantk.gan.imle.
    imle: bool = False
    imle_features: str = "auto"
    imle_weight: float = 2.5
    imle_interp: bool = False
    imle_pool: int | None = None  # default: 10 x the number of images matched
    imle_staleness: float = 10.0  # epochs before the first refresh; doubles after each
    imle_sigma: float = 0.05
    imle_minority: str | None = None
    # Transfer learning: the generator (and discriminator) checkpoints the run starts from.
    init: str | None = None
    init_discriminator: str | None = None
    # Identity of the run, drawn when it starts and kept across resumes (registries of scalable
    # fingerprints are bound to it).
    run: str = ""

    @property
    def gamma(self) -> float:
        if self.r1_gamma is not None:
            return self.r1_gamma
        if self.preset == "paper":
            return PAPER_R1_GAMMA
        return 0.0002 * self.network.resolution**2 / self.batch_size

    @property
    def ema_rampup_now(self) -> float | None:
        """The EMA ramp-up in effect: StyleGAN2 (the paper) has none."""
        return None if self.preset == "paper" else self.ema_rampup

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Refuse settings that would crash later or silently train something else."""
        net = self.network
        checks = [
            (self.kimg > 0, "--kimg must be above 0"),
            (self.lr > 0, "--lr must be above 0"),
            (self.r1_gamma is None or self.r1_gamma >= 0, "--r1-gamma must be 0 or more"),
            (self.pl_weight >= 0, "--pl-weight must be 0 or more"),
            (0 <= self.style_mixing <= 1, "--style-mixing is a probability, between 0 and 1"),
            (self.ema_kimg > 0, "--ema-kimg must be above 0"),
            (
                min(self.snapshot_kimg, self.sample_kimg, self.tick_kimg) > 0,
                "--snapshot-kimg, --sample-kimg and --tick-kimg must be above 0",
            ),
            (
                self.contrastive_warmup >= 0 and self.contrastive_warmup_epochs >= 0,
                "--contrastive-warmup must be 0 or more",
            ),
            (self.preset in PRESETS, f"--config must be one of {', '.join(PRESETS)}"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.aug in AUGMENTATIONS, f"--aug must be one of {', '.join(AUGMENTATIONS)}"),
            (0 <= self.aug_p <= 1, "--aug-p is a probability, between 0 and 1"),
            (-1 < self.ada_target < 1, "--ada-target is a mean sign of D's outputs, in (-1, 1)"),
            (self.ada_kimg > 0, "--ada-kimg must be above 0"),
            (
                self.metrics_kimg is None or self.metrics_kimg > 0,
                "--metrics-kimg must be above 0",
            ),
            (self.metrics_count >= 2, "--metrics-count must be at least 2"),
            (self.batch_gpu is None or self.batch_gpu >= 1, "--batch-gpu must be at least 1"),
            (
                self.imle_pool is None or 1 <= self.imle_pool <= MAX_IMLE_POOL,
                f"--imle-pool must be in 1..{MAX_IMLE_POOL} latents",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise GantkError(message)
        net.validate()
        if net.fingerprint_bits or self.immunize or net.modulate_res != "all":
            from gantk.gan.scalable import check_config

            check_config(self)
        if self.imle or self.imle_minority:
            from gantk.gan.imle import check_config as check_imle

            check_imle(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """Every field checked against its type (train-config.json is a file anyone can edit);
        raises ValueError naming a missing or mistyped field."""
        if not isinstance(data, dict):
            raise ValueError(f"the file holds {type(data).__name__}, not an object of settings")
        data = dict(data)
        if "contrastive_warmup_epochs" not in data:  # a run from before warm-up epochs
            data["contrastive_warmup_epochs"] = 0.0
        if "preset" not in data:  # a run from before presets trained with auto's settings
            data["preset"] = "auto"
        return parse_config(cls, data, "train-config")


# --- data ----------------------------------------------------------------------------------


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this process's shard of the batch indices of steps start, start+1, …; the
    indices of step s depend only on (seed, s), which makes resuming exact."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, dist: Dist) -> None:
        self.size, self.batch_size, self.seed, self.start, self.dist = (
            size,
            batch_size,
            seed,
            start_step,
            dist,
        )

    def indices(self, step: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(self.size, (self.batch_size,), generator=gen)
        shard = self.batch_size // self.dist.world
        return idx[self.dist.rank * shard : (self.dist.rank + 1) * shard].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


def to_float_images(
    batch: torch.Tensor, device: torch.device, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1] on ``device``; ``flip`` (B,) mirrors rows."""
    x = batch.to(device, non_blocking=True).float() / 127.5 - 1.0
    if flip is not None:
        x = torch.where(flip.to(device)[:, None, None, None], x.flip(3), x)
    return x


# --- the trainer ---------------------------------------------------------------------------


class NonFiniteLoss(GantkError):
    pass


class Trainer:
    """Holds networks, optimizers and counters; ``run()`` trains until ``kimg``."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: ImageDataset | None = None,
        dist: Dist | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = config
        self.dist = dist or Dist()
        self.log = log
        self.device = torch.device(config.device)
        self.out = Path(config.out)
        config.validate()
        if config.loss not in losses.LOSSES:
            raise GantkError(f"unknown loss {config.loss!r}; use one of {', '.join(losses.LOSSES)}")
        if config.amp not in ("none", "bf16", "fp16"):
            raise GantkError(f"--amp {config.amp!r} is not none, bf16 or fp16")
        if config.amp == "fp16" and self.device.type != "cuda":
            raise GantkError("--amp fp16 needs a CUDA device; use --amp bf16 or none on CPU")
        if config.batch_size % self.dist.world:
            raise GantkError(
                f"--batch-size {config.batch_size} must be divisible by the "
                f"{self.dist.world} processes"
            )
        self.dataset = dataset if dataset is not None else self._open_data(config)
        if self.dataset.resolution != config.network.resolution:
            raise GantkError(
                f"{config.data} is {self.dataset.resolution}px but the network is "
                f"{config.network.resolution}px; pass --resolution {self.dataset.resolution}"
            )
        if len(self.dataset) < config.batch_size:
            raise GantkError(
                f"{config.data} has {len(self.dataset)} images, fewer than one batch "
                f"of {config.batch_size}; lower --batch-size or add images"
            )

        self.label_pool = self._conditioning(config)
        # This step's one-hot classes of the real and the fake images (None: unconditional).
        self.c_real: torch.Tensor | None = None
        self.c_fake: torch.Tensor | None = None
        self.batch_labels = torch.zeros(0, dtype=torch.long)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        self.build_networks()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if config.channels_last and self.device.type == "cuda":
            for net in (self.G, self.D, self.G_ema):
                net.to(memory_format=torch.channels_last)
        # Lazy regularization (Karras et al. 2020, appendix B): a network regularized every k-th
        # step takes k+1 optimizer steps per k minibatches' worth of updates, so its Adam learning
        # rate and betas are rescaled by k / (k + 1) to keep the same effective schedule.
        self.lazy_ratio_D = lazy_ratio(
            config.r1_interval, config.loss != "wgan-gp" and config.gamma > 0
        )
        self.lazy_ratio_G = lazy_ratio(config.pl_interval, config.pl_weight > 0)
        self.opt_G = lazy_adam(self.generator_side().parameters(), config.lr, self.lazy_ratio_G)
        self.opt_D = lazy_adam(self.D.parameters(), config.lr, self.lazy_ratio_D)
        if config.loss == "contrastive":
            epochs = config.contrastive_warmup_epochs * len(self.dataset) / config.batch_size
            self.warmup_steps = config.contrastive_warmup + math.ceil(epochs)
        else:
            self.warmup_steps = 0
        self.augment = AdaptiveAugment(config.aug_p) if config.aug == "ada" else None
        self.ada = (
            AdaController(config.ada_target, ADA_INTERVAL, config.ada_kimg)
            if self.augment is not None
            else None
        )
        # Each process augments its own shard differently; a resumed run draws the same.
        self.aug_gen = torch.Generator().manual_seed(config.seed + 777 + self.dist.rank)
        self.metrics = None
        if config.metrics and self.dist.main:
            from gantk.gan.train_metrics import TrainingMetrics

            self.metrics = TrainingMetrics(
                config.metrics, self.dataset, config.data, self.out, config.metrics_count,
                config.metrics_features, self.device,
            )  # fmt: skip
        self.best_value = math.inf  # of the first metric, for best.safetensors
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        per_process = config.batch_size // self.dist.world
        if config.batch_gpu is not None and per_process % config.batch_gpu:
            raise GantkError(
                f"--batch-gpu {config.batch_gpu} must divide the batch each process trains on "
                f"({per_process} = --batch-size {config.batch_size} / {self.dist.world} "
                "processes)"
            )
        # Replays noise inputs and augmentation when the contrastive loss takes two passes.
        self._replay = microbatch.RandomReplay(self.device, self.aug_gen)
        self.latent_gen = torch.Generator().manual_seed(config.seed + 12345)
        self.step = 0
        self.pl_mean = torch.zeros([], device=self.device)
        self.elapsed = 0.0
        self._stop_requested = False
        self.saved_step = 0

    @staticmethod
    def _open_data(config: TrainConfig) -> ImageDataset:
        """The training set; with --cond a folder's subfolders are its classes (packs and
        built-ins carry theirs, checked in _conditioning)."""
        folder = is_folder_spec(config.data)
        try:
            return open_dataset(config.data, resolution=config.network.resolution,
                                labeled=config.cond and folder)  # fmt: skip
        except GantkError as exc:
            if config.cond and folder and str(exc).startswith("--labels needs"):
                raise GantkError(
                    str(exc).replace("--labels needs", "--cond needs labels, so", 1)
                ) from None
            raise

    def _conditioning(self, config: TrainConfig) -> torch.Tensor | None:
        """With --cond: the network's classes from the data, and the labels fake images are
        drawn from (the data's own, so every class is generated as often as it is seen)."""
        if not config.cond:
            return None
        if config.imle or config.network.fingerprint_bits:
            raise GantkError("--cond trains a plain conditional StyleGAN2: drop --imle and "
                             "--fingerprint-bits")  # fmt: skip
        labels = getattr(self.dataset, "labels", None)
        if labels is None or not getattr(self.dataset, "has_labels", False):
            raise GantkError(f"--cond needs labels and {config.data} has none: give a folder "
                             "of class subfolders, a pack made with --labels or a labeled "
                             "built-in (e.g. builtin:digits)")  # fmt: skip
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        names = list(getattr(self.dataset, "class_names", None) or [])
        count = len(names) if names else int(labels.max()) + 1
        names = [str(n) for n in names] or [str(i) for i in range(count)]
        net = config.network
        if net.c_dim == 0:
            config.network = dataclasses.replace(net, c_dim=count, class_names=names)
        elif net.c_dim != count or (net.class_names and net.class_names != names):
            raise GantkError(f"{config.data} has {count} classes ({', '.join(names)}), the "
                             f"network {net.c_dim} ({', '.join(net.class_names)})")  # fmt: skip
        return labels

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.cfg.network.c_dim).float().to(self.device)

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        """Classes for this process's n fake images, drawn from the data's labels (global batch
        drawn on every process alike, then sharded, as the latents are)."""
        if self.label_pool is None:
            return None
        picks = torch.randint(len(self.label_pool), (self.cfg.batch_size,),
                              generator=self.latent_gen)  # fmt: skip
        labels = self.label_pool[picks][self.dist.rank * n : (self.dist.rank + 1) * n]
        return self.one_hot(labels)

    def build_networks(self) -> None:
        """Create ``self.G`` and ``self.D`` (subclasses add their own networks here)."""
        self.G = Generator(self.cfg.network).to(self.device)
        self.D = Discriminator(self.cfg.network).to(self.device)

    def generator_side(self) -> nn.Module:
        """What the generator's optimizer trains (a subclass may add networks trained with G)."""
        return self.G

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "step": self.step,
            "pl_mean": self.pl_mean.detach().cpu(),
            "elapsed": self.elapsed,
            "rng": rng_state(),
            "latent_gen": self.latent_gen.get_state(),
            "aug": {
                "gen": self.aug_gen.get_state(),
                "p": self.augment.p.clone() if self.augment is not None else torch.zeros([]),
                "ada": self.ada.state() if self.ada is not None else {},
            },
            "best_value": self.best_value,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(with_defaults(self.G, state["G"]))
        self.D.load_state_dict(with_defaults(self.D, state["D"]))
        self.G_ema.load_state_dict(with_defaults(self.G_ema, state["G_ema"]))
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        # A resumed run may lower the learning rate; runs saved before the lazy-regularization
        # rescaling get it from here on.
        for opt, ratio in ((self.opt_G, self.lazy_ratio_G), (self.opt_D, self.lazy_ratio_D)):
            for group in opt.param_groups:
                group["lr"] = self.cfg.lr * ratio
                group["betas"] = (0.0, 0.99**ratio)
        self.step = int(state["step"])
        self.pl_mean = state["pl_mean"].to(self.device)
        self.elapsed = float(state["elapsed"])
        set_rng_state(state["rng"])
        self.latent_gen.set_state(state["latent_gen"])
        self.best_value = float(state.get("best_value", math.inf))
        aug = state.get("aug")  # runs saved before augmentation existed have none
        if isinstance(aug, dict):
            self.aug_gen.set_state(aug["gen"])
            if self.augment is not None and self.ada is not None:
                self.augment.p.copy_(aug["p"])
                self.ada.load_state(aug["ada"])

    @property
    def nimg(self) -> int:
        return self.step * self.cfg.batch_size

    def _stamp(self) -> str:
        """File name stamp: whole kimg (StyleGAN's convention) when snapshots and samples are at
        least 1 kimg apart, otherwise the exact image count, so names never collide."""
        if min(self.cfg.snapshot_kimg, self.cfg.sample_kimg) >= 1:
            return f"{round(self.nimg / 1000):06d}kimg"
        return f"{self.nimg:09d}img"

    def save(self, snapshot: bool = False) -> Path:
        """Write latest.safetensors (G_ema) and latest-state.safetensors (everything)."""
        self.saved_step = self.step
        if self.dist.main:
            meta = {
                "network": self.cfg.network.to_dict(),
                "run_id": self.cfg.run,
                "kimg": round(self.nimg / 1000, 3),
                "step": self.step,
                "loss": self.cfg.loss,
                "data": self.cfg.data,
            }
            tensors, kind = self.exported()
            save_checkpoint(self.out / "latest.safetensors", tensors, kind, meta)
            if snapshot:
                name = f"snapshot-{self._stamp()}.safetensors"
                save_checkpoint(self.out / name, tensors, kind, meta)
            save_training_state(
                self.out / "latest-state.safetensors", self.state(), STATE_KIND, self.cfg.to_dict()
            )
        self.dist.barrier()
        return self.out / "latest.safetensors"

    def exported(self) -> tuple[dict[str, torch.Tensor], str]:
        """The tensors of latest.safetensors and snapshots, and their checkpoint kind."""
        return self.G_ema.state_dict(), GENERATOR_KIND

    # -- one iteration --------------------------------------------------------------------
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

    # -- samples --------------------------------------------------------------------------
    def grid_latents(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.cfg.seed + 777)
        return torch.randn(self.cfg.grid**2, self.cfg.network.z_dim, generator=gen)

    @torch.no_grad()
    def grid_images(self) -> np.ndarray:
        """The sample grid's images, uint8 (grid², H, W, 3)."""
        images = []
        z_all = self.grid_latents()
        # Conditional: row r shows class r mod c_dim.
        classes = None
        if self.label_pool is not None:
            rows = torch.arange(len(z_all)) // self.cfg.grid
            classes = self.one_hot(rows % self.cfg.network.c_dim)
        for start in range(0, len(z_all), 16):
            z = z_all[start : start + 16].to(self.device)
            c = classes[start : start + 16] if classes is not None else None
            images.append(to_uint8(self.G_ema(z, noise_mode="const", c=c)))
        return torch.cat(images).cpu().numpy()

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        if not self.dist.main:
            return None
        arr = self.grid_images()
        path = self.out / f"samples-{self._stamp()}.png"
        with atomic_file(path, force=True) as tmp:
            save_image(make_grid(list(arr), self.cfg.grid, padding=0), tmp, named_as=path)
        return path

    # -- the loop -------------------------------------------------------------------------
    def _loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = StepBatchSampler(
            len(self.dataset), self.cfg.batch_size, self.cfg.seed, self.step, self.dist
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.cfg.workers > 0,
            # Its own generator: creating the iterator must not draw from the global RNG,
            # or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        return iter(loader)

    def run(self, progress: Callable[[float, dict], None] | None = None) -> dict[str, Any]:
        """Train until ``kimg``; Ctrl-C stops at the next step boundary after a checkpoint."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        total_steps = math.ceil(cfg.kimg * 1000 / cfg.batch_size)
        every = lambda kimg: max(1, round(kimg * 1000 / cfg.batch_size))  # noqa: E731
        tick, snap, sample = every(cfg.tick_kimg), every(cfg.snapshot_kimg), every(cfg.sample_kimg)
        measure = every(cfg.metrics_kimg or cfg.snapshot_kimg)
        if self.dist.main:
            rewind_log(self.out / LOG_FILE, self.step)
        if self.step == 0:
            # The untrained generator, as a reference point for samples and metrics.
            self.write_samples()
            self.save(snapshot=True)
        previous = signal.getsignal(signal.SIGINT)
        # Every process catches Ctrl-C (a terminal or torchrun sends it to all): the stop is
        # agreed below, so all stop after the same step.
        signal.signal(signal.SIGINT, self._on_sigint)
        batches = self._loader()
        tick_stats: list[dict[str, float]] = []
        tick_start = time.perf_counter()
        stopped = False
        try:
            while self.step < total_steps:
                images, self.batch_labels = next(batches)
                # Flips are drawn for the global batch so every process count sees the same ones.
                flip = torch.rand(cfg.batch_size, generator=self.latent_gen) < 0.5
                real = to_float_images(
                    images, self.device, self.dist.shard(flip) if cfg.mirror else None
                )
                if cfg.channels_last and self.device.type == "cuda":
                    real = real.contiguous(memory_format=torch.channels_last)
                try:
                    tick_stats.append(self.train_step(real))
                except NonFiniteLoss as exc:
                    # The failed step has already moved some state (RNGs, w_avg, perhaps D), so
                    # the last saved state is kept as it is: resuming from it is exact.
                    raise GantkError(
                        f"{exc}; the last good state is {self.out}/latest-state.safetensors "
                        f"(step {self.saved_step}); --resume it with a lower --lr or a higher "
                        "--r1-gamma"
                    ) from None
                done = self.step >= total_steps
                if self.step % tick == 0 or done:
                    seconds = time.perf_counter() - tick_start
                    self.elapsed += seconds
                    self._write_log(tick_stats, seconds)
                    if progress is not None:
                        progress(self.nimg / 1000, tick_stats[-1])
                    tick_stats, tick_start = [], time.perf_counter()
                if self.step % sample == 0 or done:
                    self.write_samples()
                if self.step % snap == 0 or done:
                    self.save(snapshot=True)
                if cfg.metrics and (self.step % measure == 0 or done):
                    values = self.measure()
                    if progress is not None and values:
                        progress(self.nimg / 1000, values)
                if self.dist.any(self._stop_requested):
                    if tick_stats:  # log the steps since the last tick before stopping
                        seconds = time.perf_counter() - tick_start
                        self.elapsed += seconds
                        self._write_log(tick_stats, seconds)
                    self.save()
                    stopped = True
                    break
        finally:
            signal.signal(signal.SIGINT, previous)
        return {
            "out": str(self.out),
            "kimg": round(self.nimg / 1000, 3),
            "steps": self.step,
            "interrupted": stopped,
            "checkpoint": str(self.out / "latest.safetensors"),
        }

    def measure(self) -> dict[str, float]:
        """The metrics of G_ema now: logged, and best.safetensors when the first improved."""
        values: dict[str, float] = {}
        improved = False
        if self.metrics is not None:  # the main process only
            values = self.metrics.evaluate(self.G_ema)
            entry = {"step": self.step, "kimg": round(self.nimg / 1000, 4), **values}
            append_log(self.out / LOG_FILE, entry)
            first = values[self.metrics.first]
            if first < self.best_value:
                improved = True
                self.best_value = first
                tensors, kind = self.exported()
                meta = {"network": self.cfg.network.to_dict(), "run_id": self.cfg.run,
                        "kimg": round(self.nimg / 1000, 3), "step": self.step,
                        "metric": self.metrics.first, "value": first}  # fmt: skip
                save_checkpoint(self.out / "best.safetensors", tensors, kind, meta)
        # Every process learns whether the main one improved (save() synchronises them all):
        # the state must know the new best, or a resumed run would replace it with a worse one.
        if float(self.dist.mean(torch.tensor(float(improved), device=self.device))) > 0:
            self.save()
        return values

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log("stopping after this step (Ctrl-C again to abort without saving)")

    def _write_log(self, stats: list[dict[str, float]], seconds: float) -> None:
        if not self.dist.main or not stats:
            return
        keys = sorted({k for s in stats for k in s})
        entry = {"step": self.step, "kimg": round(self.nimg / 1000, 4)}
        for k in keys:
            entry[k] = float(np.mean([s[k] for s in stats if k in s]))
        if self.augment is not None:
            entry["aug_p"] = float(self.augment.p)  # where p stands, not its mean over the tick
        images = len(stats) * self.cfg.batch_size
        entry["sec_per_kimg"] = round(seconds / images * 1000, 3)
        if self.device.type == "cuda":
            entry["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        append_log(self.out / LOG_FILE, entry)


def start_from(trainer: Trainer, config: TrainConfig) -> None:
    """Transfer learning: G and G_ema from ``config.init`` (its network is the run's), D from
    ``config.init_discriminator`` when given; optimizers start afresh."""
    from gantk.gan.generate import load_generator
    from gantk.gan.nvidia import load_discriminator

    assert config.init is not None
    G = load_generator(config.init)
    if G.config != config.network:
        raise GantkError(f"{config.init} holds another network than the run's ({G.config})")
    for net in (trainer.G, trainer.G_ema):
        net.load_state_dict(G.state_dict())
    if config.init_discriminator:
        D = load_discriminator(config.init_discriminator)
        if D.config != G.config:
            raise GantkError(
                f"{config.init_discriminator} does not fit the generator {config.init} (another "
                "network); give the discriminator converted with it"
            )
        trainer.D.load_state_dict(D.state_dict())


def lazy_ratio(interval: int, regularized: bool) -> float:
    return interval / (interval + 1) if regularized else 1.0


def lazy_adam(params, lr: float, ratio: float) -> torch.optim.Adam:
    """StyleGAN2's Adam (betas 0, 0.99) with lazy regularization's rescaling by ``ratio``."""
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


# --- entry points --------------------------------------------------------------------------


def trainer_class(config: TrainConfig) -> type[Trainer]:
    """Fingerprint-modulated runs (scalable fingerprints) train with their own losses."""
    if config.network.fingerprint_bits:
        from gantk.gan.scalable import ScalableTrainer

        return ScalableTrainer
    if config.imle:
        from gantk.gan.imle import ImleTrainer

        return ImleTrainer
    return Trainer


def write_config(run_dir: Path, config: TrainConfig) -> None:
    with atomic_file(run_dir / CONFIG_FILE, force=True) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2))


def start_training(
    config: TrainConfig,
    force: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[float, dict], None] | None = None,
) -> dict[str, Any]:
    """A new run in ``config.out`` (which must be empty or absent unless ``force``)."""
    out = Path(config.out)
    dist = init_distributed(config.device)
    # The folder must be writable (checked for built-in data too), and never inside the data;
    # only the main process checks that it is empty (the others see its files appear).
    inputs = [] if config.data.startswith("builtin:") else [config.data]
    check_run_folder(out, inputs, force=force or not dist.main)
    if not config.run:
        import uuid

        config.run = uuid.uuid4().hex[:16]
    trainer = trainer_class(config)(config, dist=dist, log=log)
    if config.init:
        start_from(trainer, config)
    # A run that fails before its first state (a full disk) leaves no config and no folder.
    resumable = lambda: (out / "latest-state.safetensors").is_file()  # noqa: E731
    with new_run(out, resumable) if dist.main else contextlib.nullcontext():
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            # --force replaces an earlier run: remove its artifacts (nothing else in the folder).
            for pattern in RUN_ARTIFACTS:
                for stale in out.glob(pattern):
                    stale.unlink()
            write_config(out, config)
        dist.barrier()
        return trainer.run(progress)


def resume_training(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float, dict], None] | None = None,
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` exactly where it stopped (``kimg`` may be raised)."""
    run_dir = Path(run_dir)
    state_file = run_dir / "latest-state.safetensors"
    if not (run_dir / CONFIG_FILE).is_file() or not state_file.is_file():
        raise GantkError(
            f"{run_dir} holds no resumable run (no {CONFIG_FILE} and "
            "latest-state.safetensors); start one with `gantk train gan DATA --out`"
        )
    from gantk.io.files import read_json

    try:
        config = TrainConfig.from_dict(read_json(run_dir / CONFIG_FILE, "run config"))
    except (ValueError, GantkError) as exc:
        raise GantkError(
            f"{run_dir / CONFIG_FILE} is damaged ({exc}); restore it from a copy of the run "
            "or start a new --out"
        ) from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        owner, field_name = (
            (config.network, key[8:]) if key.startswith("network.") else (config, key)
        )
        current = getattr(owner, field_name, None)
        if key in RESUMABLE_CHANGES:
            setattr(config, key, value)
        elif value != current:
            raise GantkError(
                f"{run_dir} was trained with {field_name}={current!r}, not {value!r}; "
                "resume with the same settings or start a new --out"
            )
    config.out = str(run_dir)
    state, stored_config = load_training_state(state_file, STATE_KIND)
    # Compared as configs, so fields added by a newer gantk (with their defaults) still match.
    try:
        stored = parse_config(NetworkConfig, section(stored_config, "network"), "network")
    except ValueError:
        stored = None  # not this run's state: refused below
    same = stored == config.network
    if not config.run:  # a run started before runs had identities gets one now, for good
        import uuid

        config.run = uuid.uuid4().hex[:16]
    if not same:
        raise GantkError(f"{state_file} does not belong to the config in {run_dir}/{CONFIG_FILE}")
    if isinstance(state, dict) and isinstance(state.get("G"), dict):
        config.network = with_resampling_of(config.network, state["G"])
    dist = init_distributed(config.device)
    trainer = trainer_class(config)(config, dist=dist, log=log)
    load_checked_state(trainer.load_state, state, state_file)
    if dist.main:
        write_config(run_dir, config)
    return trainer.run(progress)


def load_run_networks(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[Generator, Discriminator, TrainConfig]:
    """The EMA generator and the discriminator of a run, from its latest-state file."""
    run_dir = Path(run_dir)
    state_file = run_dir / "latest-state.safetensors"
    if not state_file.is_file():
        raise GantkError(
            f"{run_dir} has no latest-state.safetensors; give a `gantk train gan` run folder"
        )
    state, config_dict = load_training_state(state_file, STATE_KIND)
    try:
        config = TrainConfig.from_dict(config_dict)
        config.network.validate()
    except (ValueError, GantkError) as exc:
        raise GantkError(f"{state_file} has an unusable training config ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("G_ema"), dict):
        config.network = with_resampling_of(config.network, state["G_ema"])
    if config.network.fingerprint_bits:
        raise GantkError(
            f"{run_dir} is a fingerprinted run (scalable fingerprints); its generator takes a "
            "fingerprint too: evaluate its instances instead (`gantk fingerprint-embed`)"
        )
    parts = state if isinstance(state, dict) else {}
    G = build_matching(
        lambda: Generator(config.network), parts.get("G_ema", {}), state_file, "generator"
    )
    D = build_matching(
        lambda: Discriminator(config.network), parts.get("D", {}), state_file, "discriminator"
    )
    return (
        G.to(device).eval().requires_grad_(False),
        D.to(device).eval().requires_grad_(False),
        config,
    )
