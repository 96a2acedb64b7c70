"""Scalable fingerprints in deployment: fold a fingerprint into a generator instance, mint
one per user, and read a run's bit decoder.

``make_instances`` draws each user a fingerprint far (in Hamming distance) from every registered
one, folds it into the generator (:func:`fold_instance`: an ordinary
:class:`gantk.gan.folded.GeneratorInstance`) and writes ``OUT/NAME.safetensors`` (fingerprints
at least ``bits // 8`` apart, so no decoding that verifies can be mixed up between users). The
registry (:mod:`gantk.fingerprint.scalable.registry`) is saved only after every instance is
written; instances of a failed call are removed again.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.fingerprint.scalable.networks import (
    BitDecoder,
    FingerprintedGenerator,
    load_fingerprinted,
)
from gantk.fingerprint.scalable.registry import Registry, default_min_distance, locked
from gantk.gan.folded import INSTANCE_KIND, GeneratorInstance
from gantk.gan.networks import AttentionLayer
from gantk.io.checkpoint import read_metadata, save_checkpoint

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@torch.no_grad()
def fold_instance(G: FingerprintedGenerator, fingerprint: torch.Tensor) -> GeneratorInstance:
    """The instance of ``G`` for one fingerprint (bits,), equal to G(z, fingerprint)."""
    instance = GeneratorInstance(G.config).to(next(G.parameters()).device)
    instance.input.load_state_dict(G.input.state_dict())
    ws = G.styles(fingerprint[None].to(G.w_fixed.device))[0]
    index = 0
    for folded, block in zip(instance.blocks, G.blocks, strict=True):
        if not folded.first:
            folded.conv0.fold(block.conv0, ws[index])
        conv1_w = ws[index + folded.num_conv - 1]
        if isinstance(folded.conv1, AttentionLayer):
            folded.conv1.load_state_dict(block.conv1.state_dict())
        else:
            folded.conv1.fold(block.conv1, conv1_w)
        folded.torgb.fold(block.torgb, ws[index + folded.num_conv])
        folded.resample_filter.copy_(block.resample_filter)
        index += folded.num_conv
    return instance.eval().requires_grad_(False)


def instance_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of an instance's weights (tensor names and bytes, not the file, whose metadata
    may change), recorded in the registry."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_instance(path: Path, instance: GeneratorInstance, meta: dict, force: bool) -> str:
    tensors = instance.state_dict()
    digest = instance_digest(tensors)
    save_checkpoint(path, tensors, INSTANCE_KIND,
                    {"network": instance.config.to_dict(), **meta}, force=force)  # fmt: skip
    return digest


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
