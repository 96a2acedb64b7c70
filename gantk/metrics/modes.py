"""Stacked-MNIST mode coverage (Inclusive GAN, thesis ch.7; VEEGAN/PacGAN protocol).

Each RGB image holds one digit per channel, so there are 1000 modes (mode id
100*R + 10*G + B). A small digit classifier labels every channel; the metric reports how many
of the 1000 modes appear at least once among the samples and the KL divergence from the
empirical mode distribution to the uniform one. The thesis (Table 7.1) reports, from 240,000
samples, StyleGAN2 940 modes / KL 0.424 and Inclusive GAN 997 / 0.200.

The classifier is trained here on ``builtin:digits`` (sklearn's 1797 digits at 32 px) with
augmentation toward GAN-like samples, takes well under a minute on a CPU, and is cached as a
safetensors checkpoint in ``$GANTK_CACHE_DIR`` (default ``~/.cache/gantk``) so later calls only
load it. Its held-out accuracy travels with the results, because a classifier error on a channel
moves a sample to another mode and so inflates the mode count.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.metrics.sources import ImageSource, OpenGenerator

CLASSIFIER_KIND = "digit-classifier"
CLASSIFIER_RESOLUTION = 32
# Bumped whenever the architecture or the training recipe changes, so a cache written by an
# older gantk is retrained instead of being loaded into a network it does not fit.
CLASSIFIER_VERSION = 1
TEST_PER_CLASS = 30  # 300 held-out images, 30 of each digit
DEFAULT_EPOCHS = 16
NUM_MODES = 1000

Advance = Callable[[int], None] | None


class DigitClassifier(nn.Module):
    """A small CNN: one digit image (B, 1, R, R) in [-1, 1] -> logits (B, 10).

    Adaptive pooling makes it accept any R, but it is trained at 32 px and the callers in this
    module resize to that first (other sizes change the digits' stroke width in pixels).
    """

    def __init__(self) -> None:
        super().__init__()
        # Strided convolutions rather than max-pooling: several times cheaper on a CPU, and the
        # digits (8x8 originals upsampled) carry no detail that the first 2x reduction loses.
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 10))
        self.resolution = CLASSIFIER_RESOLUTION
        # Training facts (test accuracy, seed, …); filled by training or loading.
        self.info: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- training ------------------------------------------------------------------------------


def _split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split: TEST_PER_CLASS images of each digit are held out."""
    rng = np.random.default_rng(seed)
    test = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test.append(rng.choice(members, size=min(TEST_PER_CLASS, len(members) // 2), replace=False))
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift (±2 px), scale (±10 %), contrast/brightness and pixel noise.

    GAN samples are slightly off-centre, blurrier or fainter than the clean training digits;
    without this the classifier is confidently wrong on them. Works in [0, 1] so that the
    zeros padded in by the resampling are background (black), then maps back to [-1, 1].
    """
    n, _, h, w = x.shape
    x01 = (x + 1) / 2

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    inv_scale = 1 / uniform(0.9, 1.1)
    # affine_grid works in normalised coordinates where the image spans 2 units.
    shift_x = uniform(-2.0, 2.0) * 2 / w
    shift_y = uniform(-2.0, 2.0) * 2 / h
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = inv_scale
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x01 = F.grid_sample(x01, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = uniform(0.6, 1.15, 1, 1, 1)
    brightness = uniform(-0.05, 0.1, 1, 1, 1)
    noise = torch.randn(x01.shape, generator=generator) * uniform(0.0, 0.05, 1, 1, 1)
    x01 = (x01 * contrast + brightness + noise).clamp(0, 1)
    return x01 * 2 - 1


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread for the block, then restore the caller's setting.

    The classifier's layers are too small for intra-op parallelism to pay: on an idle 2-core
    machine two threads save a few seconds, but on a busy one OpenMP threads waiting for each
    other made training ~20x slower (190 s against 10 s, measured). One thread also fixes the
    order of float reductions, so a seed gives the same weights on every machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(batch_size)])


def train_digit_classifier(
    resolution: int = CLASSIFIER_RESOLUTION,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    advance: Advance = None,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train a :class:`DigitClassifier` on ``builtin:digits`` at ``resolution``, on the CPU.

    The split (1497 train / 300 test, stratified) and the training are fixed by ``seed``.
    Returns the model (eval mode) and ``{"test_accuracy", "train_images", "test_images",
    "resolution", "seed", …}``; ``advance(1)`` is called after each epoch.
    """
    from gantk.io.datasets import open_dataset

    start = time.perf_counter()
    data = open_dataset("builtin:digits", resolution=resolution)
    gray = torch.from_numpy(np.ascontiguousarray(data.images[..., 0])).float()
    images = (gray / 127.5 - 1).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    train_idx, test_idx = _split(data.labels, seed)
    x_train, y_train = images[train_idx], labels[train_idx]
    x_test, y_test = images[test_idx], labels[test_idx]

    batch_size = 64
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    # fork_rng keeps the caller's global RNG untouched while seeding the weight initialisation.
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        model = DigitClassifier()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch
        )
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=gen)
            for batch in order.split(batch_size):
                logits = model(_augment(x_train[batch], gen))
                loss = F.cross_entropy(logits, y_train[batch], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if advance is not None:
                advance(1)
        model.eval()
        accuracy = float((_predict(model, x_test) == y_test).float().mean())
    info = {
        "test_accuracy": accuracy,
        "train_images": len(train_idx),
        "test_images": len(test_idx),
        "resolution": resolution,
        "seed": seed,
        "epochs": epochs,
        "train_seconds": round(time.perf_counter() - start, 2),
        "dataset": "builtin:digits",
        "version": CLASSIFIER_VERSION,
    }
    model.resolution, model.info = resolution, info
    return model, info


# --- cache ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$GANTK_CACHE_DIR``, or ``~/.cache/gantk``: where gantk keeps what it can rebuild."""
    return Path(os.environ.get("GANTK_CACHE_DIR") or "~/.cache/gantk").expanduser()


def default_classifier_path() -> Path:
    return cache_dir() / f"digit-classifier-{CLASSIFIER_RESOLUTION}.safetensors"


def load_digit_classifier(path: str | Path) -> tuple[DigitClassifier, dict[str, Any]]:
    """Load a ``digit-classifier`` checkpoint; anything else (another kind, a damaged file,
    weights of an older architecture) raises GantkError."""
    from gantk.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, CLASSIFIER_KIND)
    info = ckpt.config.get("info") if isinstance(ckpt.config, dict) else None
    info = dict(info) if isinstance(info, dict) else {}
    if info.get("version") != CLASSIFIER_VERSION:
        raise GantkError(
            f"{path} holds a digit classifier of format {info.get('version')}, this gantk "
            f"uses {CLASSIFIER_VERSION}; retrain it (delete the file)"
        )
    model = DigitClassifier()
    try:
        model.load_state_dict(ckpt.tensors, strict=True)
    except RuntimeError:
        raise GantkError(
            f"{path} does not match the digit classifier's layers; retrain it (delete the file)"
        ) from None
    model.resolution = int(info.get("resolution", CLASSIFIER_RESOLUTION))
    model.info = info
    return model.eval().requires_grad_(False), info


def save_digit_classifier(path: str | Path, model: DigitClassifier, info: dict[str, Any]) -> Path:
    """Write the classifier atomically (replacing an existing file); creates the folder."""
    from gantk.io.checkpoint import save_checkpoint

    return save_checkpoint(path, model.state_dict(), CLASSIFIER_KIND, {"info": info}, force=True)


def digit_classifier(
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
    retrain: bool = False,
    advance: Advance = None,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """The cached digit classifier, trained (and cached) on first use.

    Looks in ``path`` if given, else in ``$GANTK_CACHE_DIR/digit-classifier-32.safetensors``.
    A missing file, or ``retrain``, trains a classifier and writes it there. A damaged cache
    file is replaced with a warning; a file given explicitly that holds something else (or is
    damaged) raises GantkError instead, because it is the user's file and is never overwritten
    behind their back. Failing to write the cache only warns: the metric can still be computed.
    """
    explicit = path is not None
    target = Path(path).expanduser() if explicit else default_classifier_path()
    model: DigitClassifier | None = None
    info: dict[str, Any] = {}
    if explicit and retrain and target.exists():
        from gantk.io.checkpoint import read_metadata

        # Retraining replaces the file: only ever one that already holds a digit classifier.
        found = read_metadata(target).get("gantk.kind")
        if found != CLASSIFIER_KIND:
            raise GantkError(
                f"{target} holds a {found or 'non-gantk file'}, not a {CLASSIFIER_KIND}; "
                "give a new path to write the retrained classifier to"
            )
    if target.exists() and not retrain:
        try:
            model, info = load_digit_classifier(target)
        except GantkError as exc:
            if explicit:
                raise
            warnings.warn(f"digit classifier cache unusable ({exc}); retraining", stacklevel=2)
    if model is None:
        model, info = train_digit_classifier(advance=advance)
        try:
            save_digit_classifier(target, model, info)
        except (GantkError, OSError) as exc:
            warnings.warn(f"could not cache the digit classifier at {target}: {exc}", stacklevel=2)
    return model.to(device).eval().requires_grad_(False), info


# --- classification and the metric ---------------------------------------------------------


def _to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Area-average when shrinking (no aliasing of thin strokes), bilinear when enlarging."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    if x.shape[-1] > resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="area")
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


@torch.no_grad()
def classify_stacked(
    model: DigitClassifier, images: np.ndarray | torch.Tensor, batch_size: int = 512
) -> np.ndarray:
    """Mode ids (N,) = 100*digit(R) + 10*digit(G) + digit(B) for uint8 images (N, 3, R, R).

    Each channel is classified on its own, as a grayscale digit, after resizing to the
    classifier's resolution.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
        raise GantkError(
            f"Stacked-MNIST modes need uint8 RGB images (N, 3, H, W), got {x.dtype} "
            f"{tuple(x.shape)}; each channel must hold one digit"
        )
    n, _, h, w = x.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    model.eval()
    device = next(model.parameters()).device
    resolution = getattr(model, "resolution", CLASSIFIER_RESOLUTION)
    digits = []
    for chunk in x.reshape(n * 3, 1, h, w).split(batch_size):
        gray = chunk.to(device).float() / 127.5 - 1
        digits.append(model(_to_resolution(gray, resolution)).argmax(1).cpu())
    d = torch.cat(digits).reshape(n, 3).numpy().astype(np.int64)
    return d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2]


def mode_coverage(modes: np.ndarray, num_modes: int = NUM_MODES) -> dict[str, Any]:
    """Modes covered and KL(p̂ ‖ uniform) of the empirical mode distribution p̂.

    KL direction follows the Stacked-MNIST literature (VEEGAN, PacGAN, Inclusive GAN):
    KL(p̂ ‖ U) = Σ_m p̂_m log(p̂_m · num_modes), natural log, with 0·log 0 = 0, so modes that
    were never generated cost nothing directly and the value is finite; it is 0 for a perfectly
    uniform histogram and log(num_modes) when every sample falls in one mode. With few samples
    it is biased upward (about (modes - 1) / (2 N) even for perfectly uniform sampling: ~0.18
    for 3000 draws of the real data, ~0.02 for 24,000), so compare values at equal N only.
    """
    modes = np.asarray(modes)
    if modes.ndim != 1 or len(modes) == 0:
        raise GantkError(f"mode coverage needs a non-empty list of mode ids, got {modes.shape}")
    if not np.issubdtype(modes.dtype, np.integer):
        raise GantkError(f"mode ids must be integers, got {modes.dtype}")
    if modes.min() < 0 or modes.max() >= num_modes:
        raise GantkError(f"mode ids must lie in 0…{num_modes - 1}, got {modes.min()}…{modes.max()}")
    hist = np.bincount(modes.astype(np.int64), minlength=num_modes)
    p = hist[hist > 0] / len(modes)
    kl = float(np.sum(p * np.log(p * num_modes)))
    return {
        "modes_covered": int((hist > 0).sum()),
        "num_modes": num_modes,
        # Rounding error can leave -1e-16 for a uniform histogram; KL is never negative.
        "kl_to_uniform": max(kl, 0.0),
        "count": len(modes),
        "histogram_max": int(hist.max()),
        "histogram_min": int(hist.min()),
    }


def _dataset_batches(dataset: Any, count: int, batch_size: int) -> Iterator[torch.Tensor]:
    """The first ``count`` images of a gantk dataset (items are (uint8 (3, H, W), label))."""
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield torch.stack([dataset[i][0] for i in range(start, stop)])


def evaluate_modes(
    source: Any,
    count: int = 24000,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    classifier: DigitClassifier | None = None,
    advance: Advance = None,
    open_generator: OpenGenerator | None = None,
) -> dict[str, Any]:
    """Stacked-MNIST mode coverage of a generator or a dataset.

    ``source`` is a generator :class:`~gantk.metrics.sources.Sampler` (sampled with seeds
    seed…seed+count-1 as every metric samples: :class:`gantk.gan.sampling.GeneratorSampler`),
    a gantk dataset (its first ``count`` images; fewer if it is smaller), an
    :class:`~gantk.metrics.sources.ImageSource`, or a string: a ``.safetensors`` generator
    checkpoint (opened by ``open_generator``) or anything
    :func:`gantk.io.datasets.open_dataset` accepts. Returns :func:`mode_coverage`'s dict plus
    ``classifier_test_accuracy`` and ``source``. ``advance(n)`` is called with the number of
    images classified after each batch.
    """
    if count < 1:
        raise GantkError(f"mode coverage needs at least 1 sample, got count={count}")
    label = str(source) if isinstance(source, str | Path) else None
    if isinstance(source, str | Path):
        if str(source).lower().endswith(".safetensors"):
            if open_generator is None:
                raise GantkError(f"{source} is a model checkpoint; give a dataset")
            source = open_generator(str(source), str(device), 1.0)
        else:
            from gantk.io.datasets import open_dataset

            source = open_dataset(str(source), count=count)
    batches: Iterator[torch.Tensor]
    if isinstance(source, ImageSource):
        label = label or source.spec
        batches = source.batches(batch_size)
    elif hasattr(source, "batches") and hasattr(source, "resolution"):  # a Sampler
        label = label or "generator"
        label += f" (seeds {seed}-{seed + count - 1})"
        batches = source.batches(range(seed, seed + count), batch_size)
    elif hasattr(source, "batches"):
        label = label or str(getattr(source, "spec", type(source).__name__))
        batches = source.batches(batch_size)
    elif hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        label = label or str(getattr(source, "name", type(source).__name__))
        count = min(count, len(source))
        batches = _dataset_batches(source, count, batch_size)
    else:
        raise GantkError(
            f"cannot take Stacked-MNIST samples from a {type(source).__name__}; give a "
            "generator sampler, a dataset or an image source"
        )
    if classifier is None:
        classifier, _ = digit_classifier(device)
    else:
        classifier = classifier.to(device)

    modes: list[np.ndarray] = []
    taken = 0
    for images in batches:
        images = images[: count - taken]
        modes.append(classify_stacked(classifier, images, batch_size=batch_size * 3))
        taken += len(images)
        if advance is not None:
            advance(len(images))
        if taken >= count:
            break
    result = mode_coverage(np.concatenate(modes) if modes else np.zeros(0, dtype=np.int64))
    result["classifier_test_accuracy"] = classifier.info.get("test_accuracy")
    result["source"] = label
    return result
