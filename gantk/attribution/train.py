"""Training attributors (``gantk train attributor``) and reading them back.

Batch 32, inputs in [-1, 1]; the optimizer, mirroring and default width come from a named recipe
(gantk.attribution.recipes: ``fast`` by default, ``paper`` the authors'). A stratified
validation split is held out and its accuracy logged; ``latest.safetensors`` is rewritten at
every evaluation and ``best.safetensors`` keeps the best validation accuracy.
Immunization (thesis §4.4.6) is fine-tuning a trained attributor with ``augment``: each batch is
attacked image by image with the Table 4.7 perturbations (``gantk.perturb.random_attack``).

Under torchrun the processes train data-parallel (gantk.nn.distributed): every process composes
the same global batch (indices, mirroring, attacks) and trains on its share, gradients averaged
before each optimizer step; validation is split among them and its counts summed; rank 0 writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gantk.attribution.data import read_images, split, to_float
from gantk.attribution.networks import KIND, AttributionModel, Attributor, AttributorConfig
from gantk.attribution.recipes import get_recipe
from gantk.attribution.visnet import VisNet
from gantk.errors import GantkError
from gantk.io.checkpoint import load_checkpoint, save_checkpoint
from gantk.io.config_schema import build_matching, checked_config
from gantk.io.runlog import LOG_FILE, append_log, rewind_log
from gantk.nn.distributed import Dist, init_distributed
from gantk.nn.precision import autocast, resolve_precision
from gantk.perturb import random_attack


@dataclass
class AttributorTrainConfig:
    data: str
    resolution: int
    variant: str = "full"
    steps: int = 2000
    batch_size: int = 32
    # None: from the recipe (see gantk.attribution.recipes).
    recipe: str | None = None
    lr: float | None = None
    val_fraction: float = 0.1
    augment: list[str] = field(default_factory=list)
    # Probability that a batch image is attacked during immunization (the rest stay clean so
    # clean accuracy is kept).
    augment_p: float = 0.5
    channel_base: int | None = None
    channel_max: int = 512
    # auto, fp32, bf16 or fp16; config.json records what 'auto' resolved to.
    precision: str = "fp32"
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 200
    finetune: str | None = None

    def validate(self) -> AttributorTrainConfig:
        """Checks the values and fills those left to the recipe."""
        recipe = get_recipe(self.recipe, self.variant)
        self.recipe = recipe.name
        if self.lr is None:
            self.lr = recipe.lr
        if self.channel_base is None:
            self.channel_base = recipe.default_channel_base(self.resolution)
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise GantkError(f"--{name.replace('_', '-')} must be positive")
        if not 0 <= self.val_fraction < 1:
            raise GantkError("--val-fraction must be in [0, 1)")
        if self.lr <= 0:
            raise GantkError("--lr must be positive")
        self.precision = resolve_precision(self.precision, self.device)
        return self


def build_model(config: AttributorConfig) -> AttributionModel:
    """The network a config describes (the classifier, a variant of it, or visNet)."""
    if config.validate().parsed_variant().kind == "visnet":
        return VisNet(config)
    return Attributor(config)


def save_attributor(path: Path, model: AttributionModel, metadata: dict[str, str]) -> Path:
    return save_checkpoint(path, model.state_dict(), KIND, asdict(model.config), metadata)


def load_attributor(path: str | Path, device: str | torch.device = "cpu") -> AttributionModel:
    """An attributor from its checkpoint, in eval mode, class names in ``model.config``."""
    ckpt = load_checkpoint(path, KIND, device)
    config = checked_config(AttributorConfig, ckpt.config, path, "attributor")
    model = build_matching(lambda: build_model(config), ckpt.tensors, path, "attributor")
    return model.to(device).eval()


@torch.no_grad()
def predict_logits(
    model: AttributionModel, images: Tensor, batch_size: int = 128, device: str = "cpu"
) -> Tensor:
    """Logits for uint8 images, batched, without gradients."""
    was_training = model.training
    model.eval()
    out = [model(to_float(chunk, device)).float().cpu() for chunk in images.split(batch_size)]
    model.train(was_training)
    return torch.cat(out)


class AttributorTrainer:
    def __init__(
        self, config: AttributorTrainConfig, out: Path, warn=None, dist: Dist | None = None
    ) -> None:
        self.config = config.validate()
        self.out = Path(out)
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        kwargs = {"warn": warn} if warn else {}
        data = read_images(config.data, config.resolution, labeled=True, **kwargs)
        assert data.class_names is not None
        if config.finetune:
            self.model = load_attributor(config.finetune, self.device).train()
            self._check_finetune(data.class_names)
            # The width is the trained model's, whatever the recipe's default (config.json).
            config.channel_base = self.model.config.channel_base
        else:
            model_config = AttributorConfig(
                config.resolution, data.class_names, config.variant,
                config.channel_base, config.channel_max,
            )  # fmt: skip
            self.model = build_model(model_config).to(self.device)
        train_idx, val_idx = split(data.labels, config.val_fraction, config.seed)
        self.train_set, self.val_set = data.subset(train_idx), data.subset(val_idx)
        if len(self.train_set) < 2:
            raise GantkError(f"{config.data} has too few images to train on; add images")
        self.recipe = get_recipe(config.recipe, config.variant)
        self.optimizers = self.model.make_optimizers(config.lr, self.recipe.betas)
        # Under torchrun: this process's place; each trains on an equal share of the batch.
        self.dist = dist or init_distributed(self.device)
        self.dist.check_batch(config.batch_size)
        self.dist.sync_gradients(*self.optimizers)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.best = -1.0

    def _check_finetune(self, folder_classes: list[str]) -> None:
        cfg, model_cfg = self.config, self.model.config
        if model_cfg.class_names != folder_classes:
            raise GantkError(
                f"--finetune model knows classes {', '.join(model_cfg.class_names)} but "
                f"{cfg.data} has {', '.join(folder_classes)}; fine-tune on the same sources"
            )
        if model_cfg.resolution != cfg.resolution:
            raise GantkError(
                f"--finetune model works at {model_cfg.resolution}px; drop --resolution or "
                f"give {model_cfg.resolution}"
            )

    def batch(self) -> tuple[Tensor, Tensor]:
        """This process's share of the step's batch. The whole batch is composed (its attacks
        draw image after image from one generator) and then shared out."""
        cfg = self.config
        idx = torch.randint(len(self.train_set), (cfg.batch_size,), generator=self.generator)
        x = to_float(self.train_set.images[idx])
        y = torch.as_tensor(self.train_set.labels[idx.numpy()])
        if self.recipe.mirror:
            flip = torch.rand(len(idx), generator=self.generator) < 0.5  # left-right
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if cfg.augment:
            x = self.attack(x)
        return self.dist.shard(x).to(self.device), self.dist.shard(y).to(self.device)

    def attack(self, x: Tensor) -> Tensor:
        names = self.config.augment
        out = x.clone()
        for i in range(len(x)):
            if torch.rand((), generator=self.generator).item() < self.config.augment_p:
                name = names[int(torch.randint(len(names), (), generator=self.generator))]
                out[i : i + 1] = random_attack(name, x[i : i + 1], self.generator)
        return out

    def train_step(self) -> dict[str, float]:
        """One optimizer step on a fresh batch: the step's loss and batch accuracy."""
        batch = self.batch()
        # The whole step (forward, backward, update) under autocast: backward ops run in the
        # precision their forward ops chose; weights and Adam's state stay float32.
        with autocast(self.config.precision, self.device):
            stats = self.model.train_step(*batch, self.optimizers, self.dist)
        self.step += 1
        return self.dist.means(stats)  # the global batch's loss and accuracy

    def validate(self) -> float:
        if not len(self.val_set):
            return float("nan")
        # Each process scores its part of the held-out images; the counts are summed.
        part = self.dist.part(range(len(self.val_set)))
        images, labels = (self.val_set.images[part.start : part.stop],
                          self.val_set.labels[part.start : part.stop])  # fmt: skip
        logits = predict_logits(self.model, images, device=str(self.device))
        right = int((logits.argmax(1).numpy() == labels).sum())
        return float(self.dist.sum(torch.tensor([right])).item()) / len(self.val_set)

    def save(self, name: str, val_acc: float) -> Path:
        meta = {
            "gantk.steps": str(self.step),
            "gantk.data": self.config.data,
            "gantk.val_acc": f"{val_acc:.6f}",
            "gantk.augment": ",".join(self.config.augment),
        }
        return save_attributor(self.out / name, self.model, meta)

    def run(self, on_log: Callable[[dict], None] | None = None) -> dict:
        cfg = self.config
        main = self.dist.main  # the one process that writes
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            rewind_log(self.out / LOG_FILE, 0)  # attributor runs do not resume: a new log
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        self.model.train()
        window: list[dict[str, float]] = []
        entry: dict = {}
        while self.step < cfg.steps:
            window.append(self.train_step())
            if self.step % cfg.eval_every and self.step != cfg.steps:
                continue
            entry = {"step": self.step, **{k: float(np.mean([w[k] for w in window]))
                                           for k in window[0]}}  # fmt: skip
            window.clear()
            if not math.isfinite(entry["loss"]):
                raise GantkError(f"training diverged at step {self.step}; try a lower --lr")
            entry["val_acc"] = self.validate()
            if main:
                self.save("latest.safetensors", entry["val_acc"])
            # Without a validation split, "best" is simply the latest.
            if not entry["val_acc"] <= self.best:
                self.best = entry["val_acc"]
                if main:
                    self.save("best.safetensors", entry["val_acc"])
            if main:
                append_log(self.out / LOG_FILE, entry)
            if on_log:
                on_log(entry)
        self.dist.barrier()  # the run's files are written when any process returns
        sizes = {"train_images": len(self.train_set), "val_images": len(self.val_set)}
        return {**entry, **sizes, "best_val_acc": self.best,
                "classes": self.model.config.class_names}  # fmt: skip
