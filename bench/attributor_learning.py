"""How fast attributors learn pixel-level fingerprints, for equal CPU time.

On examples/pixel_provenance.py's sources (the same photo content at 32 px, made by nearest,
bilinear or transposed-convolution up-sampling, or bilinear + JPEG; test content from photos
never seen in training), each contender trains with one thread for --seconds of its own CPU
time (process time, so other jobs on the machine do not shift the comparison), and its
accuracy on the test set is measured --checkpoints times along the way (not counted).
Contenders:

- ``plain``: a plain three-layer CNN (3x3 convolutions 32-64-64, ReLU, global average pool,
  linear), Adam lr 1e-3 — what anyone would write first;
- ``fast`` and ``paper``: ``gantk train attributor``'s two recipes (gantk.attribution.recipes),
  through the trainer the command uses;
- ``paper+X``: the paper's recipe with one of fast's changes (lr, betas, width), ``fast-X``:
  fast with that one setting back at the paper's value, and both without mirroring.

Runs go --jobs at a time (one thread each), --seeds per contender; the table holds the median
accuracy at each checkpoint and every run goes to OUT/attributor_learning.json.

    python bench/attributor_learning.py --seconds 240 --seeds 2 --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gantk.attribution.data import read_images, to_float
from gantk.attribution.recipes import RECIPES, Recipe
from gantk.attribution.train import AttributorTrainConfig, AttributorTrainer, predict_logits

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pixel_provenance.py"
# Each of fast's changes applied alone to the paper's recipe ("paper+X"), each taken back alone
# from fast ("fast-X"), and both without mirroring (a suspect that both recipes keep).
FAST, PAPER = RECIPES["fast"], RECIPES["paper"]
ABLATIONS = {
    "paper+lr": ("paper", {"lr": FAST.lr}),
    "paper+betas": ("paper", {"betas": FAST.betas}),
    "paper+width": ("paper", {"channel_base": FAST.channel_base}),
    "paper+no-mirror": ("paper", {"mirror": False}),
    "fast-lr": ("fast", {"lr": PAPER.lr}),
    "fast-betas": ("fast", {"betas": PAPER.betas}),
    "fast-width": ("fast", {"channel_base": PAPER.channel_base}),
    "fast+no-mirror": ("fast", {"mirror": False}),
}
CONTENDERS = ["plain", "fast", "paper", *ABLATIONS]


def plain_cnn(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


class PlainTrainer:
    """The plain CNN on the same batches: uniform sampling, batch 32, no augmentation."""

    def __init__(self, data: Path, seed: int) -> None:
        torch.manual_seed(seed)
        self.data = read_images(str(data), 32, labeled=True)
        self.labels = torch.as_tensor(self.data.labels)
        self.model = plain_cnn(len(self.data.class_names or []))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.generator = torch.Generator().manual_seed(seed)

    def train_step(self) -> None:
        idx = torch.randint(len(self.labels), (32,), generator=self.generator)
        loss = F.cross_entropy(self.model(to_float(self.data.images[idx])), self.labels[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def gantk_trainer(name: str, data: Path, seed: int) -> AttributorTrainer:
    base, changes = (name, {}) if name in RECIPES else ABLATIONS[name]
    recipe: Recipe = dataclasses.replace(RECIPES[base], **changes)
    config = AttributorTrainConfig(
        data=str(data), resolution=32, recipe=base, lr=recipe.lr, val_fraction=0.0,
        channel_base=recipe.default_channel_base(32), seed=seed,
    )  # fmt: skip
    trainer = AttributorTrainer(config, Path("unused"))
    trainer.recipe = recipe
    trainer.optimizers = trainer.model.make_optimizers(recipe.lr, recipe.betas)
    return trainer


def accuracy(model: nn.Module, test) -> float:
    predictions = predict_logits(model, test.images, batch_size=256).argmax(1)
    return float((predictions.numpy() == test.labels).mean())


def run_one(name: str, data: Path, seed: int, seconds: float, checkpoints: int) -> dict:
    torch.set_num_threads(1)
    trainer = PlainTrainer(data / "train", seed) if name == "plain" else (
        gantk_trainer(name, data / "train", seed))  # fmt: skip
    test = read_images(str(data / "test"), 32, labeled=True)
    marks = [seconds * (i + 1) / checkpoints for i in range(checkpoints)]
    spent, steps, curve = 0.0, 0, []
    trainer.model.train()
    while marks:
        start = time.process_time()
        trainer.train_step()
        spent += time.process_time() - start
        steps += 1
        if spent >= marks[0]:
            marks.pop(0)
            curve.append({"seconds": spent, "steps": steps, "acc": accuracy(trainer.model, test)})
    return {"contender": name, "seed": seed, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("out/provenance"))
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=240.0, help="training time per run")
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    args = parser.parse_args()
    names = args.contenders.split(",")
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        sys.exit(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
    if not (args.data / "test").is_dir():
        subprocess.run([sys.executable, str(EXAMPLE), str(args.data)], check=True)

    jobs = [(n, s) for s in range(args.seeds) for n in names]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, n, args.data, s, args.seconds, args.checkpoints)
                   for n, s in jobs]  # fmt: skip
        runs = [f.result() for f in futures]

    marks = [args.seconds * (i + 1) / args.checkpoints for i in range(args.checkpoints)]
    machine = platform.processor() or platform.machine()
    print(
        f"held-out test accuracy (photos never seen in training), median of {args.seeds} "
        f"seed(s); at CPU seconds of training, one thread ({machine})"
    )
    print(f"{'contender':<18}" + "".join(f"{m:>8.0f}s" for m in marks) + f"{'steps':>8}")
    for name in names:
        mine = [r for r in runs if r["contender"] == name]
        accs = [statistics.median(r["curve"][i]["acc"] for r in mine) for i in range(len(marks))]
        steps = statistics.median(r["curve"][-1]["steps"] for r in mine)
        print(f"{name:<18}" + "".join(f"{a:>9.3f}" for a in accs) + f"{steps:>8.0f}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"seconds": args.seconds, "torch": torch.__version__, "runs": runs}
    (args.out / "attributor_learning.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
