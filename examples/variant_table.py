"""Mean ± std of fid[shapes-cnn] per variant: OUT/VARIANT/seedN/fid.json, as written by
examples/shapes_variant.sh.

    python examples/variant_table.py runs/losses [--params] [--json table.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def parameter_counts(run: Path) -> tuple[int, int]:
    """(G, D) parameters of a run's networks."""
    from gantk.gan.run import load_run_networks

    G, D, _ = load_run_networks(run)
    return sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--params", action="store_true", help="Also count G and D parameters.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = {}
    for variant in sorted(p for p in args.out.iterdir() if p.is_dir()):
        runs = sorted(variant.glob("seed*/fid.json"))
        if not runs:
            continue
        scores = []
        for path in runs:
            rows = json.loads(path.read_text())["fid_shapes_cnn"]
            scores.append(next(v for k, v in rows.items() if k.startswith("generator at")))
        row = {
            "seeds": [int(p.parent.name[4:]) for p in runs],
            "fid": scores,
            "mean": statistics.fmean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        }
        if args.params:
            row["G_params"], row["D_params"] = parameter_counts(runs[0].parent)
        table[variant.name] = row
    print(f"{'variant':<16} {'seeds':>5} {'fid[shapes-cnn] mean ± std':>28}  per seed")
    for name, row in table.items():
        per_seed = ", ".join(f"{v:.1f}" for v in row["fid"])
        extra = f"  G {row['G_params']:,} / D {row['D_params']:,}" if "G_params" in row else ""
        print(f"{name:<16} {len(row['fid']):>5} {row['mean']:>18.1f} ± {row['std']:<7.1f}  "
              f"{per_seed}{extra}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
