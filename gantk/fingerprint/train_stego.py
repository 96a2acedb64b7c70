"""Training the fingerprint encoder/decoder pair (``gantk train stego``).

The authors' schedule: binary cross-entropy on the bits (weight 1) plus image MSE on the [0, 1]
scale (as the authors' code computes it) whose weight is 0 until the training bit accuracy first
exceeds 0.9, then, after ``l2_delay`` more steps, ramps linearly over ``l2_ramp`` steps to
``l2_weight``; Adam, lr 1e-4.

Two additions of gantk's, off by default: ``chroma_weight`` adds the mean square of the
residual's chroma (Cb, Cr) to the image loss, because a residual upsampled to a large image turns
any chroma into a visible colour cast, while the eye forgives small luminance changes; and
``target_acc`` makes the image-loss weight find itself: after the ramp it is multiplied up while
the running bit accuracy on the (perturbed) training batches stays above the target and down
while it is below, so a run ends at the best image quality that still decodes as required,
instead of at whatever quality a hand-picked weight happens to give. Optional robustness stage
(``robust``): between encoder and decoder, a random perturbation per batch (noise, blur,
straight-through JPEG, crop/resize, brightness), switched on with the MSE ramp so the pair first
learns to communicate at all.

Under torchrun the processes train data-parallel on one global batch (gantk.nn.distributed):
the bits, perturbations and their noise are drawn for the whole batch, gradients averaged, and
the running accuracy that tunes the image weight is the global batch's; rank 0 writes the files.

A run folder holds ``stego.safetensors`` (encoder + decoder, the file ``fingerprint-embed`` and
``fingerprint-decode`` take), ``state.safetensors`` (everything needed to resume exactly) and
``log.jsonl``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gantk.errors import GantkError
from gantk.fingerprint.stego import (
    KIND,
    StegoConfig,
    StegoDecoder,
    StegoEncoder,
)
from gantk.io.checkpoint import (
    load_checkpoint,
    load_training_state,
    rng_state,
    save_checkpoint,
    save_training_state,
    set_rng_state,
)
from gantk.io.config_schema import build_matching, checked_config, tensors_under
from gantk.io.runlog import LOG_FILE, append_log, rewind_log
from gantk.io.stop_request import StopRequest
from gantk.nn.distributed import Dist, init_distributed
from gantk.nn.precision import (
    autocast,
    channels_last,
    prefers_channels_last,
    resolve_precision,
)
from gantk.perturb import RandomPerturbation

MODEL_FILE = "stego.safetensors"
STATE_FILE = "state.safetensors"


@dataclass
class StegoTrainConfig:
    data: str
    bits: int = 100
    resolution: int = 64
    batch_size: int = 64
    steps: int = 20000
    lr: float = 1e-4
    l2_weight: float = 10.0
    l2_delay: int = 1000
    l2_ramp: int = 3000
    robust: list[str] = field(default_factory=list)
    chroma_weight: float = 0.0
    target_acc: float = 0.0
    luma: bool = False
    # auto, fp32, bf16 or fp16; the trainer records the one 'auto' resolved to, and runs saved
    # before precision existed resume in float32.
    precision: str = "fp32"
    # The design the pair is trained for (gantk.fingerprint.stego.DESIGNS); runs saved before
    # it existed are "paper". The native design's own settings: canvases of ``canvas`` x
    # ``canvas`` tiles, the residual's PSNR at strength 1 (``budget_db``, tuned towards
    # ``target_acc`` when that is set), and the weights of the visibility and SSIM losses.
    design: str = "paper"
    canvas: int = 2
    budget_db: float = 30.0
    visibility_weight: float = 1.0
    ssim_weight: float = 1.0
    # native: weight of the worst bit's loss per canvas (what --strength auto searches on: every
    # bit read with a margin), beside the mean over bits.
    margin_weight: float = 0.0
    seed: int = 0
    device: str = "cpu"
    snapshot_every: int = 500
    log_every: int = 50

    def validate(self) -> StegoTrainConfig:
        StegoConfig(self.bits, self.resolution, self.luma).validate()
        for name in ("batch_size", "steps", "snapshot_every", "log_every"):
            if getattr(self, name) < 1:
                raise GantkError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0 or self.l2_weight < 0 or self.l2_delay < 0 or self.l2_ramp < 1:
            raise GantkError("--lr must be positive, the L2 weight, delay and ramp non-negative")
        if self.chroma_weight < 0:
            raise GantkError(f"--chroma-weight must be non-negative, got {self.chroma_weight}")
        if not 0 <= self.target_acc < 1:
            raise GantkError(f"--target-acc must be in [0, 1) (0: off), got {self.target_acc}")
        resolve_precision(self.precision, self.device)  # a known name, usable on the device
        StegoConfig(design=self.design, budget_db=self.budget_db).validate()
        if not 1 <= self.canvas <= 8:
            raise GantkError(f"--canvas must be in 1..8 tiles, got {self.canvas}")
        if min(self.visibility_weight, self.ssim_weight, self.margin_weight) < 0:
            raise GantkError(
                "--visibility-weight, --ssim-weight and --margin-weight must be non-negative"
            )
        return self

    def model_config(self, budget_db: float | None = None) -> StegoConfig:
        return StegoConfig(self.bits, self.resolution, self.luma, self.design,
                           self.budget_db if budget_db is None else budget_db)  # fmt: skip

    def data_resolution(self) -> int:
        """The side of the training images: one tile, or a canvas of tiles."""
        return self.resolution * (self.canvas if self.design == "native" else 1)


def bit_accuracy(logits: Tensor, bits: Tensor) -> Tensor:
    """Fraction of bits decoded right, per image."""
    return ((logits > 0).float() == bits).float().mean(dim=1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB per image for [-1, 1] images (peak-to-peak 2)."""
    mse = (a.float() - b.float()).square().flatten(1).mean(dim=1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def chroma_energy(residual: Tensor) -> Tensor:
    """Mean square of the chroma (ITU-R BT.601 Cb and Cr) of a residual given on the [-1, 1]
    scale, in [0, 1] units."""
    r, g, b = (residual / 2).unbind(dim=1)
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb.square() + cr.square()).mean()


# How fast the self-tuning image weight moves: a factor e^0.002 a step, so e^2 (7.4x) per
# 1000 steps, slow against the accuracy's running mean (time constant 50 steps).
WEIGHT_RATE = 0.002
ACC_DECAY = 0.98
WEIGHT_SCALE_RANGE = (1e-2, 1e4)


def random_bits(count: int, bits: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (count, bits), generator=generator).float()


def l2_weight_at(step: int, accurate_since: int | None, config: StegoTrainConfig) -> float:
    """The image-loss weight at ``step`` given when bit accuracy first passed 0.9."""
    if accurate_since is None:
        return 0.0
    ramp_start = accurate_since + config.l2_delay
    progress = (step - ramp_start) / config.l2_ramp
    return config.l2_weight * min(1.0, max(0.0, progress))


class StegoTrainer:
    def __init__(self, config: StegoTrainConfig, out: Path, dist: Dist | None = None) -> None:
        from gantk.io.datasets import open_dataset

        config = replace(config, precision=resolve_precision(config.precision, config.device))
        self.config = config.validate()
        self.out = Path(out)
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        model_config = config.model_config()
        self.encoder = StegoEncoder(model_config).to(self.device)
        self.decoder = StegoDecoder(model_config).to(self.device)
        if prefers_channels_last(config.precision, config.device):
            channels_last(self.encoder, self.decoder)
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=config.lr)
        # Under torchrun: this process's place; every process trains on an equal share.
        self.dist = dist or init_distributed(self.device)
        self.dist.check_batch(config.batch_size)
        self.dist.sync_gradients(self.optimizer)
        self.dataset = open_dataset(config.data, resolution=config.data_resolution())
        if len(self.dataset) < config.batch_size:
            raise GantkError(
                f"{config.data} has {len(self.dataset)} images, fewer than --batch-size "
                f"{config.batch_size}; give more images or a smaller batch"
            )
        self.augment = RandomPerturbation(config.robust)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.accurate_since: int | None = None
        self.weight_scale = 1.0
        self.acc_ema = 0.5
        self.epoch = 0
        self.batch_index = 0

    # -- data --------------------------------------------------------------------------------

    def batches(self) -> Iterator[Tensor]:
        """Endless shuffled batches; the order depends only on (seed, epoch, batch index), which
        the training state stores, so a resumed run sees exactly the batches it would have."""
        size = self.config.batch_size
        while True:
            seed = self.config.seed + self.epoch
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(seed))
            while (self.batch_index + 1) * size <= len(order):
                idx = order[self.batch_index * size : (self.batch_index + 1) * size]
                idx = self.dist.shard(idx)  # the whole batch's order, this process's images
                self.batch_index += 1
                images = torch.stack([self.dataset[int(i)][0] for i in idx])
                yield images.to(self.device).float() / 127.5 - 1
            self.epoch += 1
            self.batch_index = 0

    # -- one step ----------------------------------------------------------------------------

    def train_step(self, images: Tensor) -> dict[str, float]:
        cfg = self.config
        bits = self.random_bits(images.shape[0])
        # The networks run in the chosen precision; perturbations and losses in float32.
        with autocast(cfg.precision, self.device):
            encoded = self.encoder(images, bits).float()
        robust = bool(cfg.robust) and self.accurate_since is not None
        seen = self.augment(encoded, self.generator, self.dist) if robust else encoded
        with autocast(cfg.precision, self.device):
            logits = self.decoder(seen).float()
        bce = F.binary_cross_entropy_with_logits(logits, bits)
        mse = F.mse_loss(encoded, images) / 4  # on the [0, 1] scale, as the authors' code
        image_loss = mse
        if cfg.chroma_weight:
            image_loss = image_loss + cfg.chroma_weight * chroma_energy(encoded - images)
        weight = l2_weight_at(self.step, self.accurate_since, cfg) * self.weight_scale
        loss = bce + weight * image_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            stats = self.dist.means({"bce": bce, "mse": mse,
                                     "bit_acc": bit_accuracy(logits, bits).mean(),
                                     "psnr": psnr(encoded, images).mean()})  # fmt: skip
        # The global batch's accuracy: every process tunes the same way.
        accuracy = stats["bit_acc"]
        if self.accurate_since is None and accuracy > 0.9:
            self.accurate_since = self.step
        self._tune_weight(accuracy)
        self.step += 1
        return {"bce": stats["bce"], "mse": stats["mse"], "l2_weight": weight,
                "bit_acc": accuracy, "psnr": stats["psnr"]}  # fmt: skip

    def random_bits(self, count: int) -> Tensor:
        """Fingerprints for this process's ``count`` images, drawn for the whole batch."""
        draw = lambda n: random_bits(n, self.config.bits, self.generator)  # noqa: E731
        return self.dist.draw(count, draw).to(self.device)

    def _tune_weight(self, accuracy: float) -> None:
        """With ``target_acc``: once the ramp is done, move the image weight's scale up while
        the running accuracy beats the target and down while it falls short."""
        cfg = self.config
        self.acc_ema = ACC_DECAY * self.acc_ema + (1 - ACC_DECAY) * accuracy
        if not cfg.target_acc or self.accurate_since is None:
            return
        if self.step < self.accurate_since + cfg.l2_delay + cfg.l2_ramp:
            return
        direction = 1.0 if self.acc_ema > cfg.target_acc else -1.0
        low, high = WEIGHT_SCALE_RANGE
        scaled = self.weight_scale * math.exp(direction * WEIGHT_RATE)
        self.weight_scale = min(high, max(low, scaled))

    # -- files -------------------------------------------------------------------------------

    def save_model(self, path: Path | None = None) -> Path:
        meta = {"gantk.steps": str(self.step), "gantk.data": self.config.data}
        return save_stego(path or self.out / MODEL_FILE, self.encoder, self.decoder, meta)

    def save_state(self) -> None:
        state = {
            "encoder": self.encoder.state_dict(),
            "decoder": self.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "accurate_since": 0 if self.accurate_since is None else self.accurate_since,
            "accurate": self.accurate_since is not None,
            "weight_scale": self.weight_scale,
            "acc_ema": self.acc_ema,
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            **self.state_extras(),
        }
        save_training_state(
            self.out / STATE_FILE, state, "stego-training-state", asdict(self.config)
        )

    def state_extras(self) -> dict:
        """What a subclass adds to the training state (the native design's budget)."""
        return {}

    def load_extras(self, state: dict) -> None:
        """Restores what :meth:`state_extras` saved."""

    def load_state(self) -> None:
        state, _ = load_training_state(self.out / STATE_FILE, "stego-training-state")
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
        since = int(state["accurate_since"])
        # States saved before "accurate" existed wrote None as -1; a run started from a model
        # (--init) has a negative step there that must survive the resume.
        accurate = bool(state["accurate"]) if "accurate" in state else since != -1
        self.accurate_since = since if accurate else None
        # States saved before the self-tuning weight existed resume with its neutral values.
        self.weight_scale = float(state.get("weight_scale", 1.0))
        self.acc_ema = float(state.get("acc_ema", 0.5))
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.load_extras(state)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, on_log: Callable[[dict], None] | None = None) -> dict:
        cfg = self.config
        main = self.dist.main  # the one process that writes
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
            rewind_log(self.out / LOG_FILE, self.step)
        batches = self.batches()
        window: list[dict[str, float]] = []
        entry: dict = {}
        stopping = False
        with StopRequest() as stop:
            while self.step < cfg.steps and not stopping:
                window.append(self.train_step(next(batches)))
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    entry = {
                        "step": self.step,
                        **{k: sum(w[k] for w in window) / len(window) for k in window[0]},
                    }
                    entry["accurate_since"] = self.accurate_since
                    entry["weight_scale"] = self.weight_scale
                    window.clear()
                    if main:
                        append_log(self.out / LOG_FILE, entry)
                    if on_log:
                        on_log(entry)
                    if not math.isfinite(entry["bce"]):
                        raise GantkError(
                            f"training diverged at step {self.step} (loss is not finite)"
                        )
                # Every process stops at the same step when any was asked to.
                stopping = self.dist.any(stop.requested)
                due = self.step % cfg.snapshot_every == 0 or self.step == cfg.steps or stopping
                if due and main:
                    self.save_model()
                    self.save_state()
        self.dist.barrier()  # the run's files are written when any process returns
        return entry


def save_stego(
    path: Path,
    encoder: StegoEncoder,
    decoder: StegoDecoder,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """One file with both networks (``encoder.*``, ``decoder.*``); ``dtype`` e.g. float16 for
    shipping (loading converts back to float32)."""
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return save_checkpoint(path, tensors, KIND, encoder.config.to_dict(), metadata, dtype=dtype)


def load_stego(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[StegoEncoder, StegoDecoder]:
    """Encoder and decoder from a ``stego.safetensors`` file, in eval mode."""
    ckpt = load_checkpoint(path, KIND, device)
    config = checked_config(StegoConfig, ckpt.config, path, "stego")

    encoder = build_matching(
        lambda: StegoEncoder(config), tensors_under(ckpt.tensors, "encoder."), path, "stego encoder"
    )
    decoder = build_matching(
        lambda: StegoDecoder(config), tensors_under(ckpt.tensors, "decoder."), path, "stego decoder"
    )
    return encoder.to(device).eval(), decoder.to(device).eval()
