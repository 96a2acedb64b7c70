"""The Inception Score (Salimans et al. 2016) from class logits.

IS = exp(E_x KL(p(y|x) || p(y))), p(y|x) the softmax of an image's logits and p(y) its mean
over the images. With ``splits`` > 1 the images are cut into that many consecutive parts and
the mean and standard deviation of the parts' scores are reported, as the original code does
with 10 parts of 50,000 images; with the tens of images of a texture evaluation one part is
used. An IS lies between 1 and min(N, classes) for N images: compare methods at equal counts.
"""

from __future__ import annotations

import torch

from gantk.errors import GantkError


def inception_score(logits: torch.Tensor, splits: int = 1) -> tuple[float, float]:
    """(mean, std) over ``splits`` parts of the IS of ``logits`` (N, classes), in float64."""
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise GantkError(
            f"an Inception score needs (images, classes) logits, got {tuple(logits.shape)}"
        )
    if not 1 <= splits <= logits.shape[0]:
        raise GantkError(f"cannot cut {logits.shape[0]} images into {splits} parts")
    log_p = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for part in log_p.tensor_split(splits):
        # log p(y) = log mean_x p(y|x), computed in log space so tiny probabilities stay exact.
        log_marginal = torch.logsumexp(part, dim=0) - torch.log(
            torch.tensor(float(part.shape[0]), dtype=part.dtype)
        )
        kl = (part.exp() * (part - log_marginal)).sum(dim=1)
        scores.append(float(kl.mean().exp()))
    values = torch.tensor(scores, dtype=torch.float64)
    return float(values.mean()), float(values.std(unbiased=False))
