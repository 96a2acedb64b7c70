"""Scalable fingerprints in deployment: mint per-user generator instances, keep the secret
registry, and find the user behind a fake.

``make_instances`` draws each user a fingerprint far (in Hamming distance) from every registered
one, folds it into the generator (:func:`gantk.gan.scalable.fold_instance`) and writes
``OUT/NAME.safetensors`` (fingerprints at least ``bits // 8`` apart, so no decoding that
verifies can be mixed up between users). The registry (:mod:`gantk.fingerprint.registry`) is
saved only after every instance is written; instances of a failed call are removed again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.fingerprint.registry import Registry, default_min_distance, locked
from gantk.gan.scalable import BitDecoder, fold_instance, load_fingerprinted, save_instance
from gantk.io.checkpoint import read_metadata

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def run_id(checkpoint: str | Path) -> str:
    """The training run a fingerprinted checkpoint comes from (same for all its snapshots)."""
    import json

    meta = read_metadata(checkpoint)
    return str(json.loads(meta.get("gantk.config", "{}")).get("run_id", "unknown"))


def user_names(users: str | None, count: int | None, registry: Registry) -> list[str]:
    """``--users a,b`` or ``--count N`` (named user-00001… after those registered)."""
    if (users is None) == (count is None):
        raise GantkError("give --users NAME[,NAME…] or --count N (one of the two)")
    if users is not None:
        names = [u.strip() for u in users.split(",") if u.strip()]
        if not names:
            raise GantkError("--users is empty; give names like alice,bob")
    else:
        if count is None or count < 1:
            raise GantkError("--count must be at least 1")
        start = len(registry.entries) + 1
        names = [f"user-{i:05d}" for i in range(start, start + count)]
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise GantkError(
            f"user name {bad[0]!r} cannot name a file; use letters, digits, '-', '_' and '.'"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GantkError(f"user {twice[0]} is listed twice; give each user once")
    known = set(registry.names())
    taken = [n for n in names if n in known]
    if taken:
        raise GantkError(
            f"user {taken[0]} is already in registry {registry.path}; choose another name"
        )
    return names


def make_instances(
    checkpoint: Path,
    users: str | None,
    count: int | None,
    registry_path: Path,
    out: Path,
    seed: int,
    force: bool = False,
    device: str = "cpu",
    advance: Callable[[int], None] | None = None,
) -> list[dict]:
    """Mint one generator instance per user; returns one record per instance."""
    G, _, config = load_fingerprinted(checkpoint, device)
    if out.exists() and not out.is_dir():
        raise GantkError(f"--out {out} is a file; give a folder for the instances")
    # One command at a time per registry: the users drawn, their files and the save belong
    # together (registry.locked).
    with locked(registry_path):
        bits, run = config.fingerprint_bits, run_id(checkpoint)
        registry = Registry.open_or_create(registry_path, bits, run)
        names = user_names(users, count, registry)
        targets = [out / f"{name}.safetensors" for name in names]
        existing = [t for t in targets if os.path.lexists(t)]
        if existing and not force:
            raise GantkError(f"{existing[0]} already exists; pass --force or choose another --out")
        return _mint(G, registry, names, targets, seed, force, advance)


def _mint(
    G: torch.nn.Module,
    registry: Registry,
    names: list[str],
    targets: list[Path],
    seed: int,
    force: bool,
    advance: Callable[[int], None] | None,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    spacing = default_min_distance(registry.bits)
    written: list[Path] = []
    records = []
    try:
        for name, target in zip(names, targets, strict=True):
            code = registry.draw(name, rng, spacing)
            instance = fold_instance(G, torch.as_tensor(code, dtype=torch.float32))
            meta = {"run_id": registry.run}
            # Without --force the file is published only if the name is still free, so an
            # instance another command wrote meanwhile is never replaced, nor later deleted.
            digest = save_instance(target, instance, meta, force=force)
            written.append(target)
            entry = registry.add(name, code, digest, min_distance=spacing)
            records.append({"user": name, "file": str(target), "instance_sha256": digest,
                            "created": entry.created})  # fmt: skip
            if advance:
                advance(1)
        registry.save()
    except BaseException:
        for path in written:  # no instance without its registry entry
            path.unlink(missing_ok=True)
        raise
    return records


def bit_decoder(checkpoint: str | Path, device: str = "cpu") -> BitDecoder:
    """The fingerprint-reading half of F from a fingerprinted run's checkpoint."""
    _, Fnet, config = load_fingerprinted(checkpoint, device)
    return BitDecoder(Fnet, config.z_dim, config.fingerprint_bits).eval()
