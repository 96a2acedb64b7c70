"""Micro-batching (``train gan --batch-gpu N``): the same training recipe on a device that cannot
hold the whole batch, by accumulating gradients over slices of it.

Losses that are means over images (non-saturating, saturating, hinge, WGAN, R1, the gradient
penalty) split exactly: each slice's mean, weighted by its share of the batch. The dual
contrastive loss is not a mean over images: every real logit is compared with every fake one
in the batch. It keeps using the whole batch's logits by two passes: the first computes every
slice's logits without a graph, the loss of the full batch on them gives d loss / d logit for
each image, and the second recomputes each slice with its graph and back-propagates those
gradients (``logits.backward(grad)``), replaying the random draws (noise inputs,
augmentation) of the first pass so both see the same images.

What still differs from the full batch, as in StyleGAN2-ADA with --batch-gpu: the
discriminator's minibatch standard deviation is taken within each slice, and the path length
penalty updates its running mean once per slice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def slices(n: int, size: int | None) -> list[slice]:
    """``n`` images in slices of ``size`` (None or >= n: one slice)."""
    step = n if not size or size >= n else size
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


class RandomReplay:
    """Snapshots of the random streams a forward pass draws from, to replay it exactly."""

    def __init__(self, device: torch.device, *generators: torch.Generator) -> None:
        self.device = device
        self.generators = generators

    def snapshot(self) -> tuple:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda, [g.get_state() for g in self.generators]

    def restore(self, snap: tuple) -> None:
        cpu, cuda, states = snap
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)
        for gen, state in zip(self.generators, states, strict=True):
            gen.set_state(state)


class StyleLeaf:
    """Styles the mapping network computed once for the whole batch, handed to the slices as a
    leaf tensor: each slice's backward stops there (the mapping network's graph is freed by the
    first backward through it), and on leaving, the accumulated gradient goes through the
    mapping network once."""

    def __init__(self, styles: Tensor) -> None:
        self.source = styles
        self.styles = styles.detach().requires_grad_(styles.requires_grad)

    def __enter__(self) -> StyleLeaf:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None and self.source.requires_grad and self.styles.grad is not None:
            self.source.backward(self.styles.grad)


def two_pass_backward(
    parts: list[slice],
    logits_of: Callable[[slice], tuple[Tensor, ...]],
    loss_of: Callable[..., Tensor],
    backward: Callable[[Tensor], None],
    replay: RandomReplay,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Back-propagate ``loss_of(*whole-batch logits)`` through ``logits_of`` one slice at a time.

    ``logits_of(part)`` returns that slice's logits (one tensor per role, e.g. real and fake),
    with a graph when grad mode is on. Returns the loss and the whole batch's logits (detached).
    """
    snaps, pieces = [], []
    with torch.no_grad():
        for part in parts:
            snaps.append(replay.snapshot())
            pieces.append([t.float() for t in logits_of(part)])
    after = replay.snapshot()
    whole = [torch.cat(role).requires_grad_(True) for role in zip(*pieces, strict=True)]
    loss = loss_of(*whole)
    grads = torch.autograd.grad(loss, whole)
    offsets = [0] * len(whole)
    for part, snap in zip(parts, snaps, strict=True):
        replay.restore(snap)
        outputs = [t.float() for t in logits_of(part)]
        terms = []
        for i, out in enumerate(outputs):
            terms.append((out * grads[i][offsets[i] : offsets[i] + len(out)]).sum())
            offsets[i] += len(out)
        backward(torch.stack(terms).sum())
    replay.restore(after)
    return loss.detach(), tuple(t.detach() for t in whole)
