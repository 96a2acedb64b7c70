"""Is the fingerprint secret? The ATS attack of the artificial-fingerprints paper (§5.5.5).

An attacker who knows the method but not the owner's encoder trains an encoder of their own,
fingerprints clean images with it (an "artificial training set", ATS), and trains an SVM to tell
fingerprinted from clean images. The SVM is then asked about the owner's fingerprinted images
and other clean images; accuracy near 0.5 means it cannot tell, so the fingerprint is secret.

Features: the high-pass residual (image minus its 3x3 box blur) at the attacker encoder's
resolution, grayscale, standardized; an RBF SVM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.fingerprint.stego import StegoEncoder, embed_any_size, resize_to


def residual_features(images: Sequence[torch.Tensor], resolution: int) -> np.ndarray:
    """(count, resolution²) high-pass residuals of images of any size ((1, 3, H, W) each)."""
    rows = []
    for image in images:
        gray = resize_to(image, (resolution, resolution)).mean(dim=1, keepdim=True)
        blurred = F.avg_pool2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        rows.append((gray - blurred).flatten().numpy())
    return np.stack(rows)


def ats_attack(
    owner_marked: Sequence[torch.Tensor],
    clean: Sequence[torch.Tensor],
    attacker: StegoEncoder,
    seed: int = 0,
) -> dict:
    """Train on the attacker's ATS, test on the owner's images; returns the accuracies.

    ``clean`` is split in half: the first half builds the ATS (each image once clean, once
    fingerprinted by ``attacker`` with random bits), the second half is the clean side of the
    test, against as many of ``owner_marked``.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

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
    with torch.no_grad():
        train_marked = [
            embed_any_size(
                attacker,
                image,
                torch.randint(0, 2, (1, attacker.config.bits), generator=generator).float(),
            )
            for image in train_clean
        ]
    x_train = np.concatenate(
        [residual_features(train_clean, r), residual_features(train_marked, r)]
    )
    y_train = np.r_[np.zeros(len(train_clean)), np.ones(len(train_marked))]
    svm = make_pipeline(
        StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    )
    svm.fit(x_train, y_train)
    test_clean, test_marked = list(clean[half : half + count]), list(owner_marked[:count])
    x_test = np.concatenate([residual_features(test_clean, r), residual_features(test_marked, r)])
    y_test = np.r_[np.zeros(count), np.ones(count)]
    predicted = svm.predict(x_test)
    return {
        "train_images": len(y_train),
        "train_accuracy": float((svm.predict(x_train) == y_train).mean()),
        "test_images": len(y_test),
        "attack_accuracy": float((predicted == y_test).mean()),
        "flagged_owner_images": float(predicted[count:].mean()),
        "flagged_clean_images": float(predicted[:count].mean()),
    }
