"""Attributing a folder of images with a trained attributor or a fitted baseline.

Both kinds of method look the same here: they read images (at their resolution, or natively for
the spectral baseline, which must not resize), turn a list of RGB uint8 arrays into class
probabilities and fingerprint features, and know their class names. Attacks are applied to the
arrays themselves and re-quantised to uint8, as an attacked image saved to disk would be.

A folder may be attributed in parts (gantk.nn.distributed: torchrun's processes, or --shard
K/N): each part reads only its images, and the attacks draw as in one pass over the folder
(the images before the part are attacked on stand-ins of their size, which takes from the
generator exactly what they would), so the parts' predictions are the whole run's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gantk.attribution.baselines import Baseline, make_baseline
from gantk.attribution.data import image_count, native_size, read_images, read_native
from gantk.attribution.evaluation import softmax
from gantk.attribution.networks import AttributionModel
from gantk.errors import GantkError
from gantk.io.datasets import Warn, print_warning
from gantk.nn.distributed import Dist
from gantk.perturb import random_attack


@dataclass
class Images:
    arrays: list[np.ndarray]  # RGB uint8 (H, W, 3)
    labels: np.ndarray  # in the method's class indices; -1 when unlabeled
    filenames: list[str]
    folder_classes: list[str] | None = None
    # A part of a folder: the (height, width) of the folder's images before it.
    before: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Prediction:
    probabilities: np.ndarray  # (N, C)
    features: np.ndarray  # (N, D), the image fingerprints (or a baseline's representation)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of an (N, C, H, W) batch (k = 0: identity)."""
    x = torch.rot90(x, k % 4, dims=(2, 3))
    return x.flip(3) if k >= 4 else x


class ModelMethod:
    """A trained attributor; ``tta`` votes over the 8 flips and rotations of each image."""

    def __init__(self, model: AttributionModel, device: str, tta: bool, batch_size: int = 64):
        self.model, self.device, self.tta, self.batch_size = model, device, tta, batch_size
        self.class_names = model.config.class_names
        self.resolution = model.config.resolution
        self.name = f"attributor[{model.config.variant}]" + ("+tta" if tta else "")

    def read(
        self, root: Path, labeled: bool, warn: Warn, min_classes: int = 1, part: range | None = None
    ) -> Images:
        data = read_images(root, self.resolution, labeled, warn, min_classes, part)
        return Images(data.arrays(), data.labels, data.filenames, data.class_names)

    @torch.no_grad()
    def predict(self, arrays: list[np.ndarray]) -> Prediction:
        probs, feats = [], []
        for start in range(0, len(arrays), self.batch_size):
            chunk = np.stack(arrays[start : start + self.batch_size])
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(self.device).float() / 127.5 - 1
            fingerprints = self.model.image_fingerprints(x)
            feats.append(fingerprints.float().cpu())
            # The classifier's logits follow from its fingerprints; visNet has its own path.
            classify = getattr(self.model, "classify", None)
            logits = classify(fingerprints) if classify is not None else self.model(x)
            p = torch.softmax(logits.float(), dim=1).cpu()
            if self.tta:
                votes = torch.zeros_like(p)
                mean = torch.zeros_like(p)
                for k in range(8):
                    pk = p if k == 0 else torch.softmax(self.model(dihedral(x, k)).float(), 1).cpu()
                    votes[torch.arange(len(pk)), pk.argmax(1)] += 1
                    mean += pk / 8
                # Majority vote; the mean probability only breaks ties (it is < 1 vote).
                p = (votes + mean) / (8 + 1)
            probs.append(p)
        return Prediction(torch.cat(probs).numpy(), torch.cat(feats).numpy())


class BaselineMethod:
    """A baseline fitted on a labeled folder."""

    def __init__(self, name: str, fit_root: Path, resolution: int | None, warn: Warn, seed: int):
        self.baseline: Baseline = make_baseline(name, seed)
        self.name = name
        self.resolution = None
        if self.baseline.needs_same_size:
            self.resolution = native_size(fit_root) if resolution is None else resolution
        fit = self.read(fit_root, True, warn, min_classes=2)
        assert fit.folder_classes is not None
        self.class_names = fit.folder_classes
        self.baseline.fit(fit.arrays, fit.labels, len(self.class_names))

    def read(
        self, root: Path, labeled: bool, warn: Warn, min_classes: int = 1, part: range | None = None
    ) -> Images:
        if self.resolution is None:
            arrays, labels, names, classes = read_native(root, labeled, warn, part)
            if labeled and len(classes or []) < min_classes:
                raise GantkError(f"{root} holds one class; give one subfolder per source")
            return Images(arrays, labels, names, classes)
        data = read_images(root, self.resolution, labeled, warn, min_classes, part)
        return Images(data.arrays(), data.labels, data.filenames, data.class_names)

    def predict(self, arrays: list[np.ndarray]) -> Prediction:
        scores = np.asarray(self.baseline.scores(arrays), dtype=np.float64)
        # Vote fractions are already probabilities; correlations and decision values are not.
        rows = scores.sum(axis=1)
        probs = scores if np.all(scores >= 0) and np.allclose(rows, 1) else softmax(scores)
        return Prediction(probs, np.asarray(self.baseline.features(arrays)))


Method = ModelMethod | BaselineMethod


def read_for(
    method: Method, root: Path, labeled: bool, warn: Warn = print_warning, part: range | None = None
) -> Images:
    """Images of ``root`` as ``method`` needs them, labels mapped to its classes; ``part``:
    only those of the sorted images (with the sizes of the ones before, for the attacks)."""
    images = method.read(root, labeled, warn, part=part)
    if part is not None and part.start:
        res = method.resolution
        if res is None:
            _, sizes = image_count(root, labeled)
            images.before = [(height, width) for width, height in sizes[: part.start]]
        else:
            images.before = [(res, res)] * part.start
    if labeled:
        from gantk.attribution.data import match_classes

        assert images.folder_classes is not None
        mapping = match_classes(method.class_names, images.folder_classes, root)
        images.labels = mapping[images.labels]
    return images


def attacked(
    arrays: list[np.ndarray], attack: str, seed: int, before: list[tuple[int, int]] | None = None
) -> list[np.ndarray]:
    """Each image attacked with its own random strength (reproducible from ``seed``).
    ``before``: ``arrays`` are a part of a set, after images of these (height, width): their
    attacks are made on stand-ins first, taking what they would from the generator (which
    depends on the size only), so each image gets the strengths of one pass over the set."""
    generator = torch.Generator().manual_seed(seed)
    for height, width in before or []:
        random_attack(attack, torch.zeros(1, 3, height, width), generator)
    out = []
    for arr in arrays:
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1
        y = random_attack(attack, x, generator)
        out.append(((y[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
    return out


def evaluate_runs(
    method: Method,
    images: Images,
    runs: list[str],
    seed: int,
    labeled: bool,
    dist: Dist | None = None,
) -> dict[str, dict]:
    """Predictions (and, when ``labeled``, a report) for the clean images and each attack.
    ``dist``: ``images`` are this process's share; the predictions and reports are those of
    every process's images together, in order."""
    from gantk.attribution.evaluation import report

    dist = dist or Dist()
    labels = np.concatenate(dist.gather(images.labels))
    results: dict[str, dict] = {}
    for name in runs:
        # Seeded by the attack's name, so `--attack jpeg` alone or within `all` draws the same.
        strengths_seed = seed + zlib.crc32(name.encode())
        arrays = (images.arrays if name == "clean"
                  else attacked(images.arrays, name, strengths_seed, images.before))  # fmt: skip
        mine = method.predict(arrays) if arrays else None  # a share may hold no image
        shares = [p for p in dist.gather(mine) if p is not None]
        prediction = Prediction(np.concatenate([p.probabilities for p in shares]),
                                np.concatenate([p.features for p in shares]))  # fmt: skip
        if labeled:
            probs, feats = prediction.probabilities, prediction.features
            rep = report(labels, prediction.predicted, probs, method.class_names, feats)
        else:
            counts = np.bincount(prediction.predicted, minlength=len(method.class_names))
            rep = {"counts": counts.tolist()}
        results[name] = {"prediction": prediction, "report": rep}
    return results


def write_predictions(
    path: Path, filenames: list[str], prediction: Prediction, class_names: list[str], force: bool
) -> None:
    import csv

    from gantk.io.atomic import atomic_file

    with atomic_file(path, force) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", *(f"p_{c}" for c in class_names)])
        for name, p in zip(filenames, prediction.probabilities, strict=True):
            writer.writerow([name, class_names[int(p.argmax())], *(f"{v:.6f}" for v in p)])


def write_confusion(path: Path, rep: dict, title: str, force: bool) -> None:
    from gantk.attribution.evaluation import plot_confusion
    from gantk.io.atomic import atomic_file

    with atomic_file(path, force) as tmp:
        plot_confusion(np.asarray(rep["confusion"]), rep["classes"], title, tmp)


def write_visualization(method: Method, images: Images, path: Path, force: bool) -> None:
    """visNet's Fig. 4.7 for up to 8 images (spread over the classes when labeled)."""
    from gantk.attribution.visnet import VisNet, visualize

    assert isinstance(method, ModelMethod) and isinstance(method.model, VisNet)
    order = np.arange(len(images.arrays))
    if (images.labels >= 0).all():  # round-robin over classes so each source shows up
        order = np.argsort(
            [np.sum(images.labels[:i] == images.labels[i]) for i in order], kind="stable"
        )
    pick = order[:8]
    x = torch.from_numpy(np.stack([images.arrays[i] for i in pick])).permute(0, 3, 1, 2)
    x = x.to(method.device).float() / 127.5 - 1
    labels = torch.as_tensor(images.labels[pick]) if (images.labels >= 0).all() else None
    visualize(method.model, x, labels, path, force=force)
