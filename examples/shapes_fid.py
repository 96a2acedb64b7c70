"""Does the GAN learn? FID of a run's snapshots on builtin:shapes, in a feature space we state.

No Inception weights can be downloaded here, so the features come from a small CNN trained (in
this script, in ~20 s on a CPU) to recognise the nine attributes of builtin:shapes (kind,
colour, size, count); its 64-d penultimate layer is the feature space, and the metric is
reported as fid[shapes-cnn]. Reference points: two disjoint real sets (the floor) and the
untrained generator (snapshot 0).

    python examples/shapes_fid.py runs/shapes32 [--count 2000] [--json out.json] [--last]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gantk.gan.generate import load_generator
from gantk.gan.sampling import NOISE_SEED_OFFSET, latents_for, sample_uint8
from gantk.io.builtin import load_builtin
from gantk.metrics.frechet import GaussianStats, frechet_from_stats


class AttributeNet(nn.Module):
    def __init__(self, attributes: int = 9) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC or NCHW -> float NCHW in [-1, 1] at 32 px."""
    if images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    x = images.float() / 127.5 - 1
    return F.interpolate(x, size=32, mode="area") if x.shape[-1] != 32 else x


def train_feature_net(seed: int = 123, epochs: int = 3) -> tuple[AttributeNet, float]:
    torch.manual_seed(seed)
    data = load_builtin("builtin:shapes", count=6000, resolution=32, seed=seed)
    x = to_input(torch.from_numpy(data.images))
    y = torch.from_numpy(data.attributes).float()
    net = AttributeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    held = load_builtin("builtin:shapes", count=1000, resolution=32, seed=seed + 1)
    with torch.no_grad():
        pred = net(to_input(torch.from_numpy(held.images))) > 0
    accuracy = (pred == torch.from_numpy(held.attributes).bool()).float().mean().item()
    return net.eval(), accuracy


@torch.no_grad()
def stats_of(net: AttributeNet, batches) -> GaussianStats:
    stats = GaussianStats(64)
    for images in batches:
        stats.update(net.body(to_input(images)))
    return stats


def real_batches(count: int, seed: int):
    data = load_builtin("builtin:shapes", count=count, resolution=32, seed=seed)
    yield from torch.from_numpy(data.images).split(250)


def fake_batches(checkpoint: Path, count: int):
    """Seeded latents and seeded random noise inputs, as every gantk metric samples."""
    G = load_generator(checkpoint)
    z = latents_for(range(10_000, 10_000 + count), G)
    for start, chunk in zip(range(0, count, 250), z.split(250), strict=True):
        yield sample_uint8(G, chunk, NOISE_SEED_OFFSET + 10_000 + start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--last", action="store_true", help="Score only the last snapshot (variant comparisons)."
    )
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    net, accuracy = train_feature_net()
    print(f"feature net: attribute accuracy {accuracy:.3f} on held-out scenes")
    reference = stats_of(net, real_batches(args.count, seed=1000))
    rows = {
        "real vs real (floor)": frechet_from_stats(
            reference, stats_of(net, real_batches(args.count, seed=2000))
        )
    }
    snapshots = sorted(
        args.run.glob("snapshot-*kimg.safetensors"),
        key=lambda p: int(re.search(r"(\d+)kimg", p.name).group(1)),
    )
    for snap in snapshots[-1:] if args.last else snapshots:
        kimg = int(re.search(r"(\d+)kimg", snap.name).group(1))
        rows[f"generator at {kimg} kimg"] = frechet_from_stats(
            reference, stats_of(net, fake_batches(snap, args.count))
        )
    width = max(len(k) for k in rows)
    print(f"{'':<{width}}  fid[shapes-cnn], {args.count} vs {args.count} images")
    for name, value in rows.items():
        print(f"{name:<{width}}  {value:10.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"feature_net_accuracy": accuracy, "count": args.count, "fid_shapes_cnn": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
