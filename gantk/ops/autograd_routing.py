"""Second-order gradients for ops whose compiled kernels have first-order backward only.

Inside ``backward`` of a :class:`torch.autograd.Function`, grad mode is on exactly when the caller
asked for ``create_graph=True`` (path-length regularization and R1 differentiate through a
backward pass). The kernels' backward is not itself differentiable, so those calls recompute the
gradient with the op's reference implementation as a differentiable graph instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def reference_gradients(
    reference: Callable[..., Tensor],
    inputs: Sequence[Tensor | None],
    needs_grad: Sequence[bool],
    grad_out: Tensor,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``reference(*inputs)`` for the inputs in ``needs_grad``, with graph.

    ``inputs`` are the tensors saved in forward: unpacked in backward they keep their autograd
    history, so the returned gradients stay differentiable with respect to the original inputs.
    """
    wanted = [t for t, need in zip(inputs, needs_grad, strict=True) if need and t is not None]
    with torch.enable_grad():
        out = reference(*inputs)
        grads = iter(
            torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True)
        )
    return tuple(
        next(grads) if need and t is not None else None
        for t, need in zip(inputs, needs_grad, strict=True)
    )
