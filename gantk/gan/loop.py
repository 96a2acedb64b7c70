"""The GAN training loop around the trainer's steps: batches, ticks, samples, checkpoints.

:func:`run` feeds batches (:class:`StepBatchSampler`: the indices of step s depend only on
(seed, s), which makes resuming exact) to ``trainer.train_step`` and, every tick, sample and
snapshot interval, writes the log (``log.jsonl``), the sample grid and the checkpoints
(``trainer.save``); with ``--metrics`` it measures the EMA generator and keeps
``best.safetensors``. Ctrl-C (``trainer.stop``, a :class:`gantk.io.stop_request.StopRequest`)
stops every process after the same step, with a checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.gan.losses import NonFiniteLoss
from gantk.io.atomic import atomic_file
from gantk.io.checkpoint import save_checkpoint
from gantk.io.images import make_grid, save_image
from gantk.io.runlog import LOG_FILE, append_log, rewind_log
from gantk.nn.distributed import Dist

# The trainer is passed in (gantk.gan.trainer.Trainer); typed loosely so that this module,
# which the trainer imports, does not import it back.
TrainerLike = Any


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this process's shard of the batch indices of steps start, start+1, …; the
    indices of step s depend only on (seed, s), which makes resuming exact."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, dist: Dist) -> None:
        self.size, self.batch_size, self.seed, self.start, self.dist = (
            size,
            batch_size,
            seed,
            start_step,
            dist,
        )

    def indices(self, step: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(self.size, (self.batch_size,), generator=gen)
        shard = self.batch_size // self.dist.world
        return idx[self.dist.rank * shard : (self.dist.rank + 1) * shard].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


def to_float_images(
    batch: torch.Tensor, device: torch.device, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1] on ``device``; ``flip`` (B,) mirrors rows."""
    x = batch.to(device, non_blocking=True).float() / 127.5 - 1.0
    if flip is not None:
        x = torch.where(flip.to(device)[:, None, None, None], x.flip(3), x)
    return x


def loader(t: TrainerLike) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The endless batches of ``t``'s data from its current step on (this process's shard)."""
    sampler = StepBatchSampler(len(t.dataset), t.cfg.batch_size, t.cfg.seed, t.step, t.dist)
    data = torch.utils.data.DataLoader(
        t.dataset,
        batch_sampler=sampler,
        num_workers=t.cfg.workers,
        pin_memory=t.device.type == "cuda",
        persistent_workers=t.cfg.workers > 0,
        # Its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(t.cfg.seed),
    )
    return iter(data)


@torch.no_grad()
def write_samples(t: TrainerLike) -> Path | None:
    """The sample grid of ``t``'s EMA generator now (``samples-<stamp>.png``; main process)."""
    if not t.dist.main:
        return None
    arr = t.grid_images()
    path = t.out / f"samples-{t._stamp()}.png"
    with atomic_file(path, force=True) as tmp:
        save_image(make_grid(list(arr), t.cfg.grid, padding=0), tmp, named_as=path)
    return path


def run(t: TrainerLike, progress: Callable[[float, dict], None] | None = None) -> dict[str, Any]:
    """Train ``t`` until its ``kimg``; Ctrl-C stops at the next step boundary after a
    checkpoint."""
    cfg = t.cfg
    t.out.mkdir(parents=True, exist_ok=True)
    total_steps = math.ceil(cfg.kimg * 1000 / cfg.batch_size)
    every = lambda kimg: max(1, round(kimg * 1000 / cfg.batch_size))  # noqa: E731
    tick, snap, sample = every(cfg.tick_kimg), every(cfg.snapshot_kimg), every(cfg.sample_kimg)
    measure_every = every(cfg.metrics_kimg or cfg.snapshot_kimg)
    if t.dist.main:
        rewind_log(t.out / LOG_FILE, t.step)
    if t.step == 0:
        # The untrained generator, as a reference point for samples and metrics.
        write_samples(t)
        t.save(snapshot=True)
    batches = loader(t)
    tick_stats: list[dict[str, float]] = []
    tick_start = time.perf_counter()
    stopped = False
    # Every process catches Ctrl-C (a terminal or torchrun sends it to all): the stop is agreed
    # below, so all stop after the same step.
    with t.stop:
        while t.step < total_steps:
            images, t.batch_labels = next(batches)
            # Flips are drawn for the global batch so every process count sees the same ones.
            flip = torch.rand(cfg.batch_size, generator=t.latent_gen) < 0.5
            real = to_float_images(images, t.device, t.dist.shard(flip) if cfg.mirror else None)
            if cfg.channels_last and t.device.type == "cuda":
                real = real.contiguous(memory_format=torch.channels_last)
            try:
                tick_stats.append(t.train_step(real))
            except NonFiniteLoss as exc:
                # The failed step has already moved some state (RNGs, w_avg, perhaps D), so
                # the last saved state is kept as it is: resuming from it is exact.
                raise GantkError(
                    f"{exc}; the last good state is {t.out}/latest-state.safetensors "
                    f"(step {t.saved_step}); --resume it with a lower --lr or a higher "
                    "--r1-gamma"
                ) from None
            done = t.step >= total_steps
            if t.step % tick == 0 or done:
                seconds = time.perf_counter() - tick_start
                t.elapsed += seconds
                write_log(t, tick_stats, seconds)
                if progress is not None:
                    progress(t.nimg / 1000, tick_stats[-1])
                tick_stats, tick_start = [], time.perf_counter()
            if t.step % sample == 0 or done:
                write_samples(t)
            if t.step % snap == 0 or done:
                t.save(snapshot=True)
            if cfg.metrics and (t.step % measure_every == 0 or done):
                values = measure(t)
                if progress is not None and values:
                    progress(t.nimg / 1000, values)
            if t.dist.any(t.stop.requested):
                if tick_stats:  # log the steps since the last tick before stopping
                    seconds = time.perf_counter() - tick_start
                    t.elapsed += seconds
                    write_log(t, tick_stats, seconds)
                t.save()
                stopped = True
                break
    return {
        "out": str(t.out),
        "kimg": round(t.nimg / 1000, 3),
        "steps": t.step,
        "interrupted": stopped,
        "checkpoint": str(t.out / "latest.safetensors"),
    }


def measure(t: TrainerLike) -> dict[str, float]:
    """The metrics of ``t``'s G_ema now: logged, and best.safetensors when the first improved."""
    values: dict[str, float] = {}
    improved = False
    if t.metrics is not None:  # the main process only
        values = t.metrics.evaluate(t.G_ema)
        entry = {"step": t.step, "kimg": round(t.nimg / 1000, 4), **values}
        append_log(t.out / LOG_FILE, entry)
        first = values[t.metrics.first]
        if first < t.best_value:
            improved = True
            t.best_value = first
            tensors, kind = t.exported()
            meta = {"network": t.cfg.network.to_dict(), "run_id": t.cfg.run,
                    "kimg": round(t.nimg / 1000, 3), "step": t.step,
                    "metric": t.metrics.first, "value": first}  # fmt: skip
            save_checkpoint(t.out / "best.safetensors", tensors, kind, meta)
    # Every process learns whether the main one improved (save() synchronises them all):
    # the state must know the new best, or a resumed run would replace it with a worse one.
    if float(t.dist.mean(torch.tensor(float(improved), device=t.device))) > 0:
        t.save()
    return values


def write_log(t: TrainerLike, stats: list[dict[str, float]], seconds: float) -> None:
    """One log.jsonl entry: the means of a tick's step statistics, speed and peak memory."""
    if not t.dist.main or not stats:
        return
    keys = sorted({k for s in stats for k in s})
    entry = {"step": t.step, "kimg": round(t.nimg / 1000, 4)}
    for k in keys:
        entry[k] = float(np.mean([s[k] for s in stats if k in s]))
    if t.augment is not None:
        entry["aug_p"] = float(t.augment.p)  # where p stands, not its mean over the tick
    images = len(stats) * t.cfg.batch_size
    entry["sec_per_kimg"] = round(seconds / images * 1000, 3)
    if t.device.type == "cuda":
        entry["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(t.device) / 2**30, 3)
    append_log(t.out / LOG_FILE, entry)
