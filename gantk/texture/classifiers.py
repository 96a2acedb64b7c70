"""The seam and repetition classifiers behind CSS and CRS (Texture Mixer, thesis §3.4.2,
Table 3.1).

The thesis's definitions, for its 128 px models on a 128 x 1024 interpolation strip:

- *seam classifier*: "real samples from the training set as negative examples, [...] synthetic
  seams by concatenating two random textures as positive examples. We run this classifier on
  the center crop. We call this the Center Seam Score (CSS). The architecture and training
  details of seam classifier are the same as those of D^rec and D^itp."
- *repetition classifier*: "almost the same as those of the seam classifier except the input
  image size is 128x256 instead of 128x128, where the negative examples are random crops of
  size 128x256 from real datasets and the positive examples are horizontally tiled twice from
  random crops of size 128x128." Its score on the centre is the Center Repetition Score (CRS).

Both scores are the classifier's probability of the positive class (a seam, a repetition), so
0 is "looks like a real texture" and 1 "certainly a seam / a repetition"; lower is better
(Table 3.1: the Mixer 0.0066 / 0.0008, alpha-blending 0.9953 / 0.4384).

At gantk's scale, with R the model's resolution (64 px for ``builtin:texture-mixer``, the
thesis's 128), every size is scaled with R: the seam classifier sees R x R crops (the strip's
central R x R crop, the crop CGD and CSWD use), the repetition classifier R x 2R crops (the
strip's central R x 2R crop: columns 3R..5R of the 8R strip), its positives an R x R crop tiled
twice. The details the thesis leaves open are chosen here:

- seams are vertical (a horizontal interpolation's seams run across the strip), at a column
  drawn uniformly from the middle half of the crop, where they show; left of it one texture,
  right of it another;
- a wide real crop is the top R rows of a 2R x 2R crop, and a repetition's R x R crop is the
  top-left quarter of such a crop: both classes then come from the same sources at the same
  scales, and the classifier can only tell them apart by the repetition itself;
- every crop is augmented as the Mixer's training crops are (histogram matching, flips,
  rotation, downscaling up to 4x: :class:`gantk.texture.data.TextureSampler`), the thesis's
  augmentation of training and test sets;
- "the same as D^rec": the network is :class:`gantk.texture.networks.TextureCritic` (narrower
  here, so that the classifiers ship small), trained with a logistic loss, since a classifier
  needs a probability where a WGAN critic has an unbounded score; Adam (0, 0.99) as the
  Mixer's critics.

Both classifiers are stored in one safetensors file (kind ``texture-classifiers``; tensors
``seam.*`` and ``repetition.*``), written by ``gantk train texture-classifiers`` and read by
``gantk evaluate texture --classifiers``. The bundled ``builtin:texture-classifiers`` are
trained on the bundled Mixer's training textures at its 64 px.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.texture.data import TextureSampler, TextureSource
from gantk.texture.networks import TextureCritic, TextureMixerConfig

KIND = "texture-classifiers"
BUILTIN = "builtin:texture-classifiers"
HOW_TO_MAKE = "gantk train texture-classifiers"
CLASSIFIERS = ("seam", "repetition")
WIDTH = {"seam": 1, "repetition": 2}  # crop width in units of R: R x R and R x 2R


@dataclass(frozen=True)
class TextureClassifiersConfig:
    resolution: int = 64  # R: the seam classifier sees R x R crops, the repetition one R x 2R
    channels: int = 8  # width at full resolution, doubled per downsampling (TextureCritic's)
    max_channels: int = 64

    def validate(self) -> TextureClassifiersConfig:
        self.critic_config()  # checks the resolution (a power of two >= 16)
        if self.channels < 1 or self.max_channels < self.channels:
            raise GantkError(
                f"classifier channels must be >= 1 and at most --max-channels, got "
                f"{self.channels} and {self.max_channels}"
            )
        return self

    def critic_config(self) -> TextureMixerConfig:
        """The Mixer config whose critic architecture the classifiers take (only the critic's
        fields matter)."""
        return TextureMixerConfig(
            resolution=self.resolution, d_channels=self.channels, d_max_channels=self.max_channels
        ).validate()


class TextureClassifiers(nn.Module):
    """Both classifiers; ``forward``-free: call :meth:`probability` with a classifier's name."""

    def __init__(self, config: TextureClassifiersConfig) -> None:
        super().__init__()
        self.config = config.validate()
        critic = config.critic_config()
        self.seam = TextureCritic(critic)
        self.repetition = TextureCritic(critic, aspect=WIDTH["repetition"])

    def logits(self, name: str, crops: Tensor) -> Tensor:
        """Logit of the positive class (seam / repetition) for crops in [-1, 1] of the
        classifier's size, (B, 3, R, R) or (B, 3, R, 2R)."""
        size = self.config.resolution
        expected = (size, WIDTH[name] * size)
        if tuple(crops.shape[-2:]) != expected:
            raise GantkError(
                f"the {name} classifier takes {expected[0]}x{expected[1]} crops, got "
                f"{crops.shape[-2]}x{crops.shape[-1]}"
            )
        return getattr(self, name)(crops)

    @torch.no_grad()
    def probability(self, name: str, crops: Tensor) -> Tensor:
        """P(positive) per crop: the score CSS / CRS averages."""
        device = next(self.parameters()).device
        return torch.sigmoid(self.logits(name, crops.to(device).float())).cpu()


# -- examples ----------------------------------------------------------------------------------


def with_seams(left: Tensor, right: Tensor, rng: np.random.Generator) -> Tensor:
    """Positives of the seam classifier: per crop, ``left``'s columns up to a cut drawn from
    the middle half of the width and ``right``'s after it (two textures concatenated)."""
    count, width = left.shape[0], left.shape[-1]
    cuts = torch.from_numpy(rng.integers(width // 4, 3 * width // 4 + 1, size=count))
    columns = torch.arange(width)
    take_right = (columns[None, :] >= cuts[:, None]).view(count, 1, 1, width)
    return torch.where(take_right, right, left)


def tiled_twice(crops: Tensor) -> Tensor:
    """Positives of the repetition classifier: each R x R crop repeated once to its right."""
    return torch.cat([crops, crops], dim=-1)


class ExampleSource:
    """Labelled batches for both classifiers from texture sources: (crops, labels) with
    labels 1 for seams / repetitions and 0 for real crops, half of each."""

    def __init__(self, sources: list[TextureSource], size: int, augment: bool = True) -> None:
        wide = [s for s in sources if min(s.image.shape[:2]) >= 2 * size]
        if not wide:
            raise GantkError(
                f"no texture is at least {2 * size}x{2 * size} px, which the repetition "
                f"classifier's {size}x{2 * size} real crops need; give larger textures"
            )
        if len(wide) < 2:
            raise GantkError("seams join two different textures; give at least two textures")
        self.size = size
        self.augment = augment
        self.skipped = len(sources) - len(wide)
        self.sources = len(wide)
        self._wide_sources = wide
        # One set of sources for both classifiers, so that they see the same textures.
        self.square = TextureSampler(wide, size, augment)
        self.wide = TextureSampler(wide, 2 * size, augment)

    def _two_textures(self, count: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """``count`` crops each of two disjoint random halves of the textures: the two sides of
        a seam always come from two different textures (a seam inside one texture can be
        invisible, and would teach the classifier that real textures have seams)."""
        order = rng.permutation(len(self._wide_sources))
        half = len(order) // 2
        sides = [[self._wide_sources[i] for i in part] for part in (order[:half], order[half:])]
        left, right = (TextureSampler(side, self.size, self.augment) for side in sides)
        return left.sample(count, rng), right.sample(count, rng)

    def batch(self, name: str, count: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        half = count // 2
        if half < 1:
            raise GantkError(f"a batch of {count} cannot hold both classes; use at least 2")
        if name == "seam":
            real = self.square.sample(half, rng)
            fake = with_seams(*self._two_textures(half, rng), rng)
        else:
            real = self.wide.sample(half, rng)[..., : self.size, :]
            fake = tiled_twice(self.wide.sample(half, rng)[..., : self.size, : self.size])
        labels = torch.cat([torch.zeros(half), torch.ones(half)])
        return torch.cat([real, fake]), labels


# -- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTrainConfig:
    steps: int = 3000
    batch_size: int = 16  # half real, half seams / repetitions
    lr: float = 0.002
    seed: int = 0
    eval_count: int = 256  # examples per class in the accuracy check
    augment: bool = True  # the thesis's augmentation of every crop (off: plain crops)

    def validate(self) -> ClassifierTrainConfig:
        if self.steps < 1:
            raise GantkError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise GantkError(f"--batch-size must be at least 2 (one of each class), got "
                             f"{self.batch_size}")  # fmt: skip
        if not self.lr > 0:
            raise GantkError(f"--lr must be positive, got {self.lr}")
        return self


@torch.no_grad()
def accuracy(
    model: TextureClassifiers, examples: ExampleSource, count: int, seed: int
) -> dict[str, dict[str, float]]:
    """Per classifier: accuracy at probability 0.5 on ``count`` fresh examples of each class
    (the mean of the two classes' accuracies), and the mean probability given to each class."""
    rng = np.random.default_rng(seed)
    report = {}
    for name in CLASSIFIERS:
        crops, labels = examples.batch(name, 2 * count, rng)
        probs = torch.cat([model.probability(name, part) for part in crops.split(64)])
        real, fake = probs[labels == 0], probs[labels == 1]
        report[name] = {
            "accuracy": float(((real < 0.5).float().mean() + (fake >= 0.5).float().mean()) / 2),
            "p_real": float(real.mean()),
            "p_positive": float(fake.mean()),
        }
    return report


def train_texture_classifiers(
    sources: list[TextureSource],
    config: TextureClassifiersConfig,
    train: ClassifierTrainConfig,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    eval_sources: list[TextureSource] | None = None,
) -> tuple[TextureClassifiers, dict]:
    """Train both classifiers side by side for ``train.steps`` steps (``on_step(step,
    losses)`` sees each step's logistic losses), then check them on ``eval_sources`` (e.g.
    held-out textures; fresh crops of the training textures when None). Returns the model and
    a report: seconds of training, textures used, :func:`accuracy`. Deterministic given
    ``train.seed`` on one device and thread count."""
    config, train = config.validate(), train.validate()
    examples = ExampleSource(sources, config.resolution, train.augment)
    checks = (
        ExampleSource(eval_sources, config.resolution, train.augment) if eval_sources else examples
    )
    rng = np.random.default_rng(train.seed)
    with torch.random.fork_rng(devices=[]):  # the initial weights; the caller's stream is kept
        torch.manual_seed(train.seed)
        model = TextureClassifiers(config).to(device)
    optims = {
        name: torch.optim.Adam(getattr(model, name).parameters(), lr=train.lr, betas=(0.0, 0.99))
        for name in CLASSIFIERS
    }
    start = time.perf_counter()
    model.train()
    for step in range(1, train.steps + 1):
        losses = {}
        for name in CLASSIFIERS:
            crops, labels = examples.batch(name, train.batch_size, rng)
            logits = model.logits(name, crops.to(device))
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(device))
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            optims[name].step()
            losses[name] = float(loss.detach())
        if on_step is not None:
            on_step(step, losses)
    model.eval().requires_grad_(False)
    report = {
        "seconds": time.perf_counter() - start,
        "textures": examples.sources,
        "skipped_textures": examples.skipped,
        "eval_on": "held-out textures" if eval_sources else "fresh crops of the training textures",
        "eval_textures": checks.sources,
        "accuracy": accuracy(model, checks, train.eval_count, seed=train.seed + 1),
    }
    return model, report


# -- files -------------------------------------------------------------------------------------


def save_texture_classifiers(
    path: str | Path,
    model: TextureClassifiers,
    metadata: dict[str, str] | None = None,
    force: bool = True,
) -> Path:
    """Both classifiers in one file, in float16: they are measuring sticks whose probabilities
    change by far less than the scores' spread across strips, and the file ships in the wheel."""
    from gantk.io.checkpoint import save_checkpoint

    return save_checkpoint(
        path, model.state_dict(), KIND, asdict(model.config), metadata, force, torch.float16
    )


def load_texture_classifiers(
    spec: str | Path, device: str | torch.device = "cpu"
) -> tuple[TextureClassifiers, dict[str, str]]:
    """(classifiers in eval mode, the file's metadata) from a file of ``gantk train
    texture-classifiers`` or ``builtin:texture-classifiers``."""
    from gantk.io.bundled import resolve_model_path
    from gantk.io.checkpoint import load_checkpoint
    from gantk.io.config_schema import build_matching, checked_config

    path = resolve_model_path(str(spec), "texture classifiers file", HOW_TO_MAKE)
    ckpt = load_checkpoint(path, KIND, "cpu")
    config = checked_config(TextureClassifiersConfig, ckpt.config, path, "texture classifiers")
    tensors = {k: v.float() for k, v in ckpt.tensors.items()}
    model = build_matching(lambda: TextureClassifiers(config), tensors, path, "texture classifiers")
    return model.to(device).eval().requires_grad_(False), ckpt.metadata


def describe(metadata: dict[str, str]) -> dict:
    """What a classifiers file says about itself: its training data, steps and accuracies."""
    info: dict = {k.removeprefix("gantk."): v for k, v in metadata.items()
                  if k in ("gantk.data", "gantk.steps")}  # fmt: skip
    # Informative only: a damaged note does not make the weights unusable.
    with contextlib.suppress(json.JSONDecodeError):
        info["accuracy"] = json.loads(metadata.get("gantk.accuracy", "null"))
    return info
