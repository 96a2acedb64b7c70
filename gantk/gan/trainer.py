"""The GAN trainer: StyleGAN2 with a choice of loss and attention, resumable and DDP-ready.

One iteration = one discriminator step then one generator step on a batch of ``batch_size``
images (:mod:`gantk.gan.steps`); the loop around it, its checkpoints, samples, log and metrics
are :mod:`gantk.gan.loop`; starting, resuming and loading a run are :mod:`gantk.gan.run`.

Exact resume: the batch indices of step s are a pure function of (seed, s); latents and style
mixing draw from their own generator; every RNG state is saved with the models and optimizers,
so a run stopped and resumed equals one that never stopped.

Multi-process (``torchrun``): every process computes the same global batch indices and latents
and takes its contiguous shard; gradients are averaged across processes after each backward
(the regularizers need double backward, which DistributedDataParallel does not support).

Trainers of methods built on this one (IMLE-GAN, scalable fingerprints) subclass
:class:`Trainer` and :func:`register` themselves; :func:`trainer_class` picks the one a config
asks for, so this module never imports them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gantk.errors import GantkError
from gantk.gan import loop, losses, microbatch
from gantk.gan.config import ADA_INTERVAL, TrainConfig
from gantk.gan.networks import GENERATOR_KIND, Discriminator, Generator
from gantk.gan.steps import AdversarialSteps
from gantk.io.checkpoint import rng_state, save_checkpoint, save_training_state, set_rng_state
from gantk.io.config_schema import with_defaults
from gantk.io.datasets import ImageDataset, is_folder_spec, open_dataset
from gantk.io.images import to_uint8
from gantk.io.stop_request import StopRequest
from gantk.nn.augment import AdaController, AdaptiveAugment
from gantk.nn.distributed import Dist

STATE_KIND = "gan-training-state"


class Trainer(AdversarialSteps):
    """Holds networks, optimizers and counters; ``run()`` trains until ``kimg``."""

    @classmethod
    def uses(cls, config: TrainConfig) -> bool:
        """Whether ``config`` asks for this trainer (a registered subclass says when)."""
        return True

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Refuse this trainer's own settings when they are wrong (called when it is used)."""

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
        check_methods(config)
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
        self.metrics: Any = None
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
        # Ctrl-C: stop after the current step, with a checkpoint (gantk.io.stop_request).
        self.stop = StopRequest(log)
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

    def run(self, progress: Callable[[float, dict], None] | None = None) -> dict[str, Any]:
        """Train until ``kimg``; Ctrl-C stops at the next step boundary after a checkpoint
        (:func:`gantk.gan.loop.run`)."""
        return loop.run(self, progress)


def lazy_ratio(interval: int, regularized: bool) -> float:
    return interval / (interval + 1) if regularized else 1.0


def lazy_adam(params, lr: float, ratio: float) -> torch.optim.Adam:
    """StyleGAN2's Adam (betas 0, 0.99) with lazy regularization's rescaling by ``ratio``."""
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


# --- the trainers of methods built on this one ----------------------------------------------

_TRAINERS: list[type[Trainer]] = []


def register(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make a Trainer subclass available to :func:`trainer_class` (a method's
    trainer module registers itself when imported; the CLI imports every one)."""
    if cls not in _TRAINERS:
        _TRAINERS.append(cls)
    return cls


def check_methods(config: TrainConfig) -> None:
    """Every registered method's checks of its own settings, for each method ``config`` uses
    (e.g. --immunize without --fingerprint-bits, --minority without --imle)."""
    for cls in _TRAINERS:
        if cls.uses(config):
            cls.check_config(config)


def trainer_class(config: TrainConfig) -> type[Trainer]:
    """The registered trainer ``config`` asks for (checked), else the plain StyleGAN2 one."""
    check_methods(config)
    for cls in _TRAINERS:
        if cls.uses(config):
            return cls
    if config.network.fingerprint_bits or config.imle or config.immunize:
        # A method's settings without its trainer would silently train plain StyleGAN2.
        raise GantkError(
            "this run needs the trainer of scalable fingerprints or IMLE-GAN, which is not "
            "loaded; import gantk.fingerprint.scalable.train or gantk.gan.imle first"
        )
    return Trainer
