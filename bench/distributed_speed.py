"""Two processes against one on the same cores: data-parallel training and split batch work.

Each job runs three ways on the CPU: one process on one thread (the reference), one process on
``--threads`` threads (what a machine with that many cores does without torchrun), and
``--processes`` processes of one thread each joined by gloo, as torchrun would start them
(gantk.nn.distributed). Times are wall-clock seconds of the work itself (model loading and
process start-up excluded; for the split runs, the slowest process including its collectives).

Jobs: the native stego trainer's steps (global batch --batch, 64 px canvases of 32 px tiles),
the attributor trainer's steps (32 px, batch 32), the FID feature pass (random-weight
Inception, --images images of builtin:shapes) and fingerprint-embed (builtin:stego-100, auto
strength, 64 px photos).

    python bench/distributed_speed.py                 # the table in docs/performance.md
    python bench/distributed_speed.py --jobs fid --images 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

JOBS = ("stego", "attributor", "fid", "embed")


def _stego(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    from gantk.fingerprint.train_native import NativeStegoTrainer
    from gantk.fingerprint.train_stego import StegoTrainConfig

    config = StegoTrainConfig(f"builtin:photos?n={4 * args.batch}", bits=32, resolution=32,
                              batch_size=args.batch, design="native", canvas=2,
                              precision="fp32")  # fmt: skip
    trainer = NativeStegoTrainer(config, work / "stego")
    batches = trainer.batches()
    trainer.train_step(next(batches))  # warm-up

    def run() -> None:
        for _ in range(args.steps):
            trainer.train_step(next(batches))

    return run


def _attributor(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    from gantk.attribution.train import AttributorTrainConfig, AttributorTrainer

    sources = work / "sources"
    if not sources.exists():  # made once, before any process starts
        raise FileNotFoundError(sources)
    config = AttributorTrainConfig(str(sources), 32, steps=10**6, batch_size=32,
                                   val_fraction=0.0, precision="fp32")  # fmt: skip
    trainer = AttributorTrainer(config, work / "attributor")
    trainer.train_step()  # warm-up

    def run() -> None:
        for _ in range(args.steps):
            trainer.train_step()

    return run


def _fid(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    from gantk.metrics.distribution import feature_pass, pooled
    from gantk.metrics.features import load_feature_net
    from gantk.metrics.sources import open_source
    from gantk.nn.distributed import Shard, init_distributed, work_range

    dist = init_distributed("cpu")
    net = load_feature_net("random-inception", None, "cpu")
    source = open_source(f"builtin:shapes?n={args.images}", args.images)
    net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))  # warm-up
    mine = work_range(source.batch_count(8), Shard(), dist)

    def run() -> None:
        pooled(feature_pass(source, [net], (), 8, 0, None, mine), dist)

    return run


def _embed(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    from gantk.fingerprint.artificial import embed_folder, resolve_model
    from gantk.fingerprint.train_stego import load_stego
    from gantk.nn.distributed import Shard, init_distributed

    dist = init_distributed("cpu")
    model = resolve_model("builtin:stego-100")
    encoder, decoder = load_stego(model)
    code = np.random.default_rng(0).integers(0, 2, encoder.config.bits, dtype=np.uint8)

    def run() -> None:
        out = dist.broadcast(work / f"marked-{uuid.uuid4().hex}")  # one folder for all ranks
        # As the command's defaults: the model's design, auto strength, --min-psnr 33.
        embed_folder(work / "photos", out, encoder, model, code, decoder=decoder,
                     design=encoder.config.design, min_psnr=33.0, shard=Shard(),
                     dist=dist)  # fmt: skip

    return run


SETUPS = {"stego": _stego, "attributor": _attributor, "fid": _fid, "embed": _embed}


def _time(job: str, args: argparse.Namespace, work: Path) -> float:
    from gantk.nn.distributed import init_distributed

    dist = init_distributed("cpu")
    run = SETUPS[job](args, work)
    dist.barrier()
    start = time.perf_counter()
    run()
    seconds = torch.tensor([time.perf_counter() - start])
    if dist.world > 1:  # the slowest process sets the pace
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    return float(seconds)


def _worker(rank: int, world: int, port: int, job: str, args, work: Path, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(1)
    seconds = _time(job, args, work)
    if rank == 0:
        out.write_text(json.dumps(seconds))
    torch.distributed.destroy_process_group()


def _split(job: str, args: argparse.Namespace, work: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = work / f"{job}-split.json"
    torch.multiprocessing.spawn(_worker, (args.processes, port, job, args, work, result),
                                nprocs=args.processes, join=True)  # fmt: skip
    return json.loads(result.read_text())


def _inputs(work: Path, args: argparse.Namespace) -> None:
    from PIL import Image

    from gantk.io.builtin import load_builtin
    from gantk.io.export import export_images

    export_images(load_builtin("builtin:photos", count=args.images, resolution=64), work / "photos")
    rng = np.random.default_rng(0)
    for k, name in enumerate(("ganA", "real")):
        (work / "sources" / name).mkdir(parents=True)
        for i in range(64):
            arr = rng.integers(0, 256, (32, 32, 3)) // (1 + k)
            Image.fromarray(arr.astype(np.uint8)).save(work / "sources" / name / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma list of " + ", ".join(JOBS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads of the one-process run")
    parser.add_argument("--steps", type=int, default=6, help="training steps timed")
    parser.add_argument("--batch", type=int, default=16, help="stego trainer's global batch")
    parser.add_argument("--images", type=int, default=32, help="images of the FID and embed jobs")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    report: dict = {"machine": platform.machine(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "load_average_before": os.getloadavg(),
                    "processes": args.processes, "threads": args.threads, "jobs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _inputs(work, args)
        for job in jobs:
            times = {}
            for threads in (1, args.threads):
                torch.set_num_threads(threads)
                times[f"1 process x {threads} thread(s)"] = _time(job, args, work)
            times[f"{args.processes} processes x 1 thread"] = _split(job, args, work)
            reference = times["1 process x 1 thread(s)"]
            report["jobs"][job] = {
                "seconds": times,
                "speed-up over 1 x 1": {k: reference / v for k, v in times.items()},
            }
    report["load_average_after"] = os.getloadavg()
    width = max(len(k) for job in report["jobs"].values() for k in job["seconds"])
    print(f"{'job':<12} {'run':<{width}} {'seconds':>9} {'speed-up':>9}")
    for job, found in report["jobs"].items():
        for run, seconds in found["seconds"].items():
            speed = found["speed-up over 1 x 1"][run]
            print(f"{job:<12} {run:<{width}} {seconds:>9.2f} {speed:>8.2f}x")
    print(f"load average before / after: {report['load_average_before']} / "
          f"{report['load_average_after']}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "distributed_speed.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
