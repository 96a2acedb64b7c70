"""The settings of a GAN run (``gantk train gan``): TrainConfig, its presets and checks.

One flat dataclass, written as the run's train-config.json and read back on ``--resume``; its
fields are those of every method trained by the GAN trainer (StyleGAN2 itself, IMLE-GAN's
``imle_*``, scalable fingerprints' ``immunize``), so that file keeps one format. The checks of a
method's own fields belong to that method's trainer (``check_config``, run by
:func:`gantk.gan.trainer.check_methods`); :meth:`TrainConfig.validate` checks the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gantk.errors import GantkError
from gantk.gan.networks import NetworkConfig
from gantk.io.config_schema import parse_config

AUGMENTATIONS = ("none", "ada", "diffaug")
# IMLE's latent pool is drawn and regenerated whole: beyond this it is a typing mistake.
MAX_IMLE_POOL = 10_000_000
ADA_INTERVAL = 4  # steps between adjustments of p (StyleGAN2-ADA's ada_interval)

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
