"""Is the fingerprint secret? The ATS attack of the artificial-fingerprints paper (§5.5.5).

An attacker who knows the method but not the owner's encoder trains an encoder of their own and
uses it to build an "artificial training set" (ATS, Lorch et al.) with known labels for an SVM.
Two protocols:

- ``paper`` (thesis §5.5.5, the protocol of the reported 0.502): the test set T (owner-marked and
  clean images, unlabelled) is the negative class as it is; T with the attacker's encoder applied
  twice is the positive class (images fingerprinted 2 or 3 times against 0 or 1 times). The SVM
  then classifies T with the attacker's encoder applied once: originally clean images become
  1-time (negative), owner-marked ones 2-time (positive), and the prediction is carried back to
  the original image.
- ``transfer`` (gantk's earlier variant): train on half of the clean images, once as they are
  and once marked by the attacker, then ask about the owner's marked images against the other
  clean half: does a detector of the attacker's own fingerprint find the owner's?

Accuracy near 0.5 means the attacker cannot tell: the fingerprint is secret.
Features: the high-pass residual (image minus its 3x3 box blur), grayscale, standardized, of
the image resized to the attacker encoder's resolution (the paper's design, whose fingerprint
lives at that scale) or of its central tile at its own resolution (the native design); an RBF
SVM. The attacker fingerprints with the design the owner used, at strength 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.fingerprint import native
from gantk.fingerprint.stego import StegoEncoder, embed_any_size, resize_to

PROTOCOLS = ("paper", "transfer")


def residual_features(
    images: Sequence[torch.Tensor], resolution: int, design: str = "paper"
) -> np.ndarray:
    """(count, resolution²) high-pass residuals of images of any size ((1, 3, H, W) each)."""
    rows = []
    for image in images:
        height, width = image.shape[-2:]
        if design == "native" and min(height, width) >= resolution:
            top, left = (height - resolution) // 2, (width - resolution) // 2
            view = image[..., top : top + resolution, left : left + resolution]
        else:
            view = resize_to(image, (resolution, resolution))
        gray = view.mean(dim=1, keepdim=True)
        blurred = F.avg_pool2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        rows.append((gray - blurred).flatten().numpy())
    return np.stack(rows)


def _svm(seed: int):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(
        StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    )


def _mark(
    attacker: StegoEncoder,
    images: Sequence[torch.Tensor],
    generator: torch.Generator,
    design: str = "paper",
) -> list[torch.Tensor]:
    """Each image fingerprinted once more by the attacker, with fresh random bits."""
    count, tile = attacker.config.bits, attacker.config.resolution
    out = []
    with torch.no_grad():
        for image in images:
            bits = torch.randint(0, 2, (1, count), generator=generator).float()
            if design == "native" and min(image.shape[-2:]) >= tile:
                change = native.unit_residual(attacker, image, bits, attacker.config.budget_db)
                out.append(native.apply(image, change, 1.0))
            else:
                out.append(embed_any_size(attacker, image, bits))
    return out


def ats_attack(
    owner_marked: Sequence[torch.Tensor],
    clean: Sequence[torch.Tensor],
    attacker: StegoEncoder,
    seed: int = 0,
    protocol: str = "paper",
    design: str = "paper",
) -> dict:
    """The attack's accuracy at telling ``owner_marked`` from ``clean`` images (see the module
    for the two protocols); the paper balances the test set, so both sets are cut to the size
    of the smaller."""
    if protocol not in PROTOCOLS:
        raise GantkError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if protocol == "transfer":
        return _transfer_attack(owner_marked, clean, attacker, seed, design)
    count = min(len(owner_marked), len(clean))
    if count < 4:
        raise GantkError(
            f"the attack needs at least 4 clean and 4 fingerprinted images, got {len(clean)} "
            f"and {len(owner_marked)}"
        )
    generator = torch.Generator().manual_seed(seed)
    r = attacker.config.resolution
    test = list(owner_marked[:count]) + list(clean[:count])
    truth = np.r_[np.ones(count), np.zeros(count)]
    twice = _mark(attacker, _mark(attacker, test, generator, design), generator, design)
    x_train = np.concatenate(
        [residual_features(test, r, design), residual_features(twice, r, design)]
    )
    y_train = np.r_[np.zeros(len(test)), np.ones(len(twice))]
    svm = _svm(seed)
    svm.fit(x_train, y_train)
    once = _mark(attacker, test, generator, design)
    predicted = svm.predict(residual_features(once, r, design))
    return {
        "protocol": protocol,
        "train_images": len(y_train),
        "train_accuracy": float((svm.predict(x_train) == y_train).mean()),
        "test_images": len(truth),
        "attack_accuracy": float((predicted == truth).mean()),
        "flagged_owner_images": float(predicted[:count].mean()),
        "flagged_clean_images": float(predicted[count:].mean()),
    }


def _transfer_attack(
    owner_marked: Sequence[torch.Tensor],
    clean: Sequence[torch.Tensor],
    attacker: StegoEncoder,
    seed: int,
    design: str = "paper",
) -> dict:
    """Train on the attacker's ATS, test on the owner's images; returns the accuracies.

    ``clean`` is split in half: the first half builds the ATS (each image once clean, once
    fingerprinted by ``attacker`` with random bits), the second half is the clean side of the
    test, against as many of ``owner_marked``.
    """
    half = len(clean) // 2
    count = min(half, len(owner_marked), len(clean) - half)
    if count < 4:
        raise GantkError(
            f"the attack needs at least 8 clean and 4 fingerprinted images, got {len(clean)} "
            f"and {len(owner_marked)}"
        )
    generator = torch.Generator().manual_seed(seed)
    r = attacker.config.resolution
    train_clean = list(clean[:half])
    train_marked = _mark(attacker, train_clean, generator, design)
    x_train = np.concatenate(
        [residual_features(train_clean, r, design), residual_features(train_marked, r, design)]
    )
    y_train = np.r_[np.zeros(len(train_clean)), np.ones(len(train_marked))]
    svm = _svm(seed)
    svm.fit(x_train, y_train)
    test_clean, test_marked = list(clean[half : half + count]), list(owner_marked[:count])
    x_test = np.concatenate(
        [residual_features(test_clean, r, design), residual_features(test_marked, r, design)]
    )
    y_test = np.r_[np.zeros(count), np.ones(count)]
    predicted = svm.predict(x_test)
    return {
        "protocol": "transfer",
        "train_images": len(y_train),
        "train_accuracy": float((svm.predict(x_train) == y_train).mean()),
        "test_images": len(y_test),
        "attack_accuracy": float((predicted == y_test).mean()),
        "flagged_owner_images": float(predicted[count:].mean()),
        "flagged_clean_images": float(predicted[:count].mean()),
    }
