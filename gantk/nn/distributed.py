"""One job split across processes: data-parallel training and batch commands under torchrun,
and the shards of a cluster's job array (``--shard K/N``).

torchrun starts WORLD_SIZE processes that talk to each other (gloo on CPUs, NCCL on GPUs):

- A trainer gives every process the same seeds, so every process draws the same random numbers;
  each draw that depends on the batch (which images, the bits, noise, crops, perturbation
  strengths) is made for the whole global batch and each process keeps its contiguous share
  (:meth:`Dist.draw`, :meth:`Dist.sample_wise`). Losses are means over the share and the
  gradients are averaged across processes before every optimizer step
  (:meth:`Dist.sync_gradients`): with equal shares that is the gradient of the mean over the
  global batch, so N processes train as one does, up to float rounding. Batch statistics that
  steer training (a running accuracy that tunes a loss weight) are averaged too
  (:meth:`Dist.means`), so every process keeps the same state; only rank 0 writes files.
- A batch command takes its contiguous part of the inputs (:meth:`Dist.part`) and rank 0
  gathers what the others found (:meth:`Dist.gather`) and writes the one result.

``--shard K/N`` (:class:`Shard`) splits the inputs the same way without any process talking to
another, for N independent commands of a job array; each writes a partial output that a merge
command turns into the output of one run. Under torchrun a shard is split again among the
processes, so both combine: N nodes of a job array, each running torchrun.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from gantk.errors import GantkError

T = TypeVar("T")


def _part(items: range, index: int, count: int) -> range:
    """Part ``index`` of ``count`` contiguous parts of ``items``, sizes differing by at most 1."""
    size = len(items)
    return items[index * size // count : (index + 1) * size // count]


@dataclass
class Dist:
    """This process's place among the ``world`` processes of a torchrun job (one process:
    ``Dist()``, and every method is then a no-op or the identity)."""

    rank: int = 0
    world: int = 1
    # Where collectives run: NCCL only reduces tensors on the process's GPU; None: in place.
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- training ------------------------------------------------------------------------

    def average_gradients(self, params: nn.Module | Iterable[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the processes (one collective)."""
        if self.world == 1:
            return
        if isinstance(params, nn.Module):
            params = params.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = self._all_reduce(torch.cat([g.flatten() for g in grads]))
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def sync_gradients(self, *optimizers: torch.optim.Optimizer) -> None:
        """Average the gradients of each optimizer's parameters across the processes just
        before it steps, wherever the step is taken (a model's own ``train_step`` included)."""
        if self.world == 1:
            return
        for optimizer in optimizers:

            def average(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                self.average_gradients(p for group in opt.param_groups for p in group["params"])

            optimizer.register_step_pre_hook(average)

    def draw(
        self, count: int, draw: Callable[[int], torch.Tensor], groups: int = 1
    ) -> torch.Tensor:
        """``draw(n)`` draws n rows for the whole batch; this process's ``count`` rows of a
        global batch of ``count * world``, as one process drawing for all of it would get.
        ``groups``: the batch is that many parts stacked (``cat([s1, s2])``), each shared out
        on its own, so this process's rows are its share of each part, stacked alike."""
        if self.world == 1:
            return draw(count)
        rows = draw(count * self.world)
        parts = rows.reshape(groups, self.world, count // groups, *rows.shape[1:])
        return parts[:, self.rank].reshape(count, *rows.shape[1:])

    def sample_wise(self, fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
        """``fn(x)`` where ``fn`` draws from a generator sample after sample, each sample's
        draws depending on the samples' shape only (not their values): the other processes'
        samples are stood in for by one-channel zeros, before and after, so the generator ends
        where one process drawing for the whole batch leaves it."""
        if self.world == 1:
            return fn(x)
        stand_in = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        for _ in range(self.rank):
            fn(stand_in)
        out = fn(x)
        for _ in range(self.world - 1 - self.rank):
            fn(stand_in)
        return out

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a tensor drawn for the whole global batch."""
        size = x.shape[0] // self.world
        return x[self.rank * size : (self.rank + 1) * size]

    def check_batch(self, batch_size: int, what: str = "--batch-size") -> int:
        """The share of a global batch each process trains on; an error unless it divides."""
        if batch_size % self.world:
            raise GantkError(
                f"{what} {batch_size} does not split evenly over {self.world} processes; give a "
                f"multiple of {self.world} (each process trains on an equal share)"
            )
        return batch_size // self.world

    # -- numbers across processes ----------------------------------------------------------

    def _all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the processes, in place where the collective runs on its
        device (else through a copy there), returned on its own device."""
        where = value.device
        moved = value if self.device is None or where == self.device else value.to(self.device)
        torch.distributed.all_reduce(moved)
        return moved.to(where)

    def _reduced(self, value: torch.Tensor) -> torch.Tensor:
        """A summed copy of ``value`` (on its own device)."""
        return self._all_reduce(value.detach().clone())

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach() if self.world == 1 else self._reduced(value)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach() if self.world == 1 else self._reduced(value) / self.world

    def means(self, values: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
        """Each value's mean over the processes, as floats, in one collective (equal shares:
        the global batch's mean of a per-share mean)."""
        numbers = [v.detach().item() if isinstance(v, torch.Tensor) else v for v in values.values()]
        flat = torch.tensor(numbers, dtype=torch.float64)
        return dict(zip(values, self.mean(flat).tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """True on every process if it is on any (a stop request that one process received)."""
        if self.world == 1:
            return flag
        return bool(self.sum(torch.tensor([int(flag)])).item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    # -- batch work ----------------------------------------------------------------------

    def part(self, items: range) -> range:
        """This process's contiguous part of ``items`` (equal up to one item)."""
        return _part(items, self.rank, self.world)

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order, on every process (picklable objects)."""
        if self.world == 1:
            return [obj]
        found: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(found, obj)
        return found

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_succeed(self, error: BaseException | None) -> None:
        """Raise on every process when any failed (a collective: every process calls it
        after its share of the work): a process its own ``error``, the others the first in rank
        order, so none waits for a partner that gave up."""
        errors = self.gather(None if error is None or self.world == 1 else _portable(error))
        if error is not None:
            raise error
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


def _portable(error: BaseException) -> BaseException:
    """An error another process can unpickle: user errors as they are, anything else as a
    RuntimeError naming it (with this process's own traceback still raised here)."""
    if isinstance(error, GantkError):
        return GantkError(str(error))
    return RuntimeError(f"{type(error).__name__}: {error}")


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str | torch.device) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPUs, NCCL
    on GPUs (each process on the GPU of its LOCAL_RANK: gantk.cli.common.process_device)."""
    world = world_size()
    if world == 1:
        return Dist()
    device = torch.device(device)
    cuda = device.type == "cuda"
    if not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(torch.distributed.get_rank(), world, device if cuda else None)


# -- shards of a job array ---------------------------------------------------------------------

SHARD_HINT = "give --shard K/N with 0 <= K < N (shards count from 0, e.g. 0/4 … 3/4)"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` of a job's inputs (``--shard K/N``); ``Shard()`` is all."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if text is None:
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise GantkError(f"--shard {text!r} is not K/N; {SHARD_HINT}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise GantkError(f"--shard {text}: N must be at least 1; {SHARD_HINT}")
        if index >= count:
            raise GantkError(f"--shard {text}: K must be below N; {SHARD_HINT}")
        return cls(index, count)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def part(self, items: range) -> range:
        """This shard's contiguous part of ``items``."""
        return _part(items, self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def work_range(total: int, shard: Shard, dist: Dist) -> range:
    """The items this process handles of ``total``: its part of the shard's part."""
    return dist.part(shard.part(range(total)))


def check_parts(parts: Iterable[tuple[str, int, int]], total: int, what: str) -> None:
    """Partial results named by ``(name, start, stop)`` must cover ``range(total)`` exactly
    once: every shard present, none twice, none of another split (an error naming the gap or
    the overlap)."""
    covered = 0
    for name, start, stop in sorted(parts, key=lambda p: (p[1], p[2])):
        if start > covered:
            raise GantkError(
                f"the {what} miss items {covered}..{start - 1} of {total} (a shard not given, "
                "or one still running); give every shard of the job"
            )
        if start < covered:
            raise GantkError(
                f"{name} overlaps another of the {what} (the same shard twice, or shards of "
                "splits with another N or batch size); give each shard of one job once"
            )
        covered = stop
    if covered != total:
        raise GantkError(
            f"the {what} miss items {covered}..{total - 1} of {total} (a shard not given, or "
            "one still running); give every shard of the job"
        )
