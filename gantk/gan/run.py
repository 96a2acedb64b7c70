"""A GAN run's lifecycle: start one in a fresh folder, resume one exactly, load its networks.

A run folder holds ``train-config.json`` (the :class:`gantk.gan.config.TrainConfig`, the only
settings ``--resume`` reads), ``latest-state.safetensors`` (everything, for the exact resume)
and what :mod:`gantk.gan.loop` writes. Which trainer trains a run is
:func:`gantk.gan.trainer.trainer_class`'s choice among the registered ones.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gantk.errors import GantkError
from gantk.gan.config import TrainConfig
from gantk.gan.networks import Discriminator, Generator, NetworkConfig, with_resampling_of
from gantk.gan.trainer import STATE_KIND, Trainer, trainer_class
from gantk.io.atomic import atomic_file, check_run_folder, new_run
from gantk.io.checkpoint import load_checked_state, load_training_state
from gantk.io.config_schema import build_matching, parse_config, section
from gantk.nn.distributed import init_distributed

CONFIG_FILE = "train-config.json"
RUN_ARTIFACTS = (
    "latest.safetensors",
    "latest-state.safetensors",
    "snapshot-*.safetensors",
    "samples-*.png",
    "log.jsonl",
    "best.safetensors",
    "metrics-real-*.npz",
    CONFIG_FILE,
)
# Options that may differ on --resume (how long and how often), the rest must match.
# lr and r1_gamma may change so that a diverged run can continue more gently.
RESUMABLE_CHANGES = (
    "kimg",
    "snapshot_kimg",
    "sample_kimg",
    "tick_kimg",
    "workers",
    "device",
    "lr",
    "r1_gamma",
    "metrics_kimg",
    "batch_gpu",  # the recipe stays the same: only how the batch is sliced changes
)


def start_from(trainer: Trainer, config: TrainConfig) -> None:
    """Transfer learning: G and G_ema from ``config.init`` (its network is the run's), D from
    ``config.init_discriminator`` when given; optimizers start afresh."""
    from gantk.gan.generate import load_generator
    from gantk.gan.nvidia import load_discriminator

    assert config.init is not None
    G = load_generator(config.init)
    if G.config != config.network:
        raise GantkError(f"{config.init} holds another network than the run's ({G.config})")
    for net in (trainer.G, trainer.G_ema):
        net.load_state_dict(G.state_dict())
    if config.init_discriminator:
        D = load_discriminator(config.init_discriminator)
        if D.config != G.config:
            raise GantkError(
                f"{config.init_discriminator} does not fit the generator {config.init} (another "
                "network); give the discriminator converted with it"
            )
        trainer.D.load_state_dict(D.state_dict())


def write_config(run_dir: Path, config: TrainConfig) -> None:
    with atomic_file(run_dir / CONFIG_FILE, force=True) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2))


def start_training(
    config: TrainConfig,
    force: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[float, dict], None] | None = None,
) -> dict[str, Any]:
    """A new run in ``config.out`` (which must be empty or absent unless ``force``)."""
    out = Path(config.out)
    dist = init_distributed(config.device)
    # The folder must be writable (checked for built-in data too), and never inside the data;
    # only the main process checks that it is empty (the others see its files appear).
    inputs = [] if config.data.startswith("builtin:") else [config.data]
    check_run_folder(out, inputs, force=force or not dist.main)
    if not config.run:
        import uuid

        config.run = uuid.uuid4().hex[:16]
    trainer = trainer_class(config)(config, dist=dist, log=log)
    if config.init:
        start_from(trainer, config)
    # A run that fails before its first state (a full disk) leaves no config and no folder.
    resumable = lambda: (out / "latest-state.safetensors").is_file()  # noqa: E731
    with new_run(out, resumable) if dist.main else contextlib.nullcontext():
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            # --force replaces an earlier run: remove its artifacts (nothing else in the folder).
            for pattern in RUN_ARTIFACTS:
                for stale in out.glob(pattern):
                    stale.unlink()
            write_config(out, config)
        dist.barrier()
        return trainer.run(progress)


def resume_training(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float, dict], None] | None = None,
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` exactly where it stopped (``kimg`` may be raised)."""
    run_dir = Path(run_dir)
    state_file = run_dir / "latest-state.safetensors"
    if not (run_dir / CONFIG_FILE).is_file() or not state_file.is_file():
        raise GantkError(
            f"{run_dir} holds no resumable run (no {CONFIG_FILE} and "
            "latest-state.safetensors); start one with `gantk train gan DATA --out`"
        )
    from gantk.io.files import read_json

    try:
        config = TrainConfig.from_dict(read_json(run_dir / CONFIG_FILE, "run config"))
    except (ValueError, GantkError) as exc:
        raise GantkError(
            f"{run_dir / CONFIG_FILE} is damaged ({exc}); restore it from a copy of the run "
            "or start a new --out"
        ) from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        owner, field_name = (
            (config.network, key[8:]) if key.startswith("network.") else (config, key)
        )
        current = getattr(owner, field_name, None)
        if key in RESUMABLE_CHANGES:
            setattr(config, key, value)
        elif value != current:
            raise GantkError(
                f"{run_dir} was trained with {field_name}={current!r}, not {value!r}; "
                "resume with the same settings or start a new --out"
            )
    config.out = str(run_dir)
    state, stored_config = load_training_state(state_file, STATE_KIND)
    # Compared as configs, so fields added by a newer gantk (with their defaults) still match.
    try:
        stored = parse_config(NetworkConfig, section(stored_config, "network"), "network")
    except ValueError:
        stored = None  # not this run's state: refused below
    same = stored == config.network
    if not config.run:  # a run started before runs had identities gets one now, for good
        import uuid

        config.run = uuid.uuid4().hex[:16]
    if not same:
        raise GantkError(f"{state_file} does not belong to the config in {run_dir}/{CONFIG_FILE}")
    if isinstance(state, dict) and isinstance(state.get("G"), dict):
        config.network = with_resampling_of(config.network, state["G"])
    dist = init_distributed(config.device)
    trainer = trainer_class(config)(config, dist=dist, log=log)
    load_checked_state(trainer.load_state, state, state_file)
    if dist.main:
        write_config(run_dir, config)
    return trainer.run(progress)


def load_run_networks(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[Generator, Discriminator, TrainConfig]:
    """The EMA generator and the discriminator of a run, from its latest-state file."""
    run_dir = Path(run_dir)
    state_file = run_dir / "latest-state.safetensors"
    if not state_file.is_file():
        raise GantkError(
            f"{run_dir} has no latest-state.safetensors; give a `gantk train gan` run folder"
        )
    state, config_dict = load_training_state(state_file, STATE_KIND)
    try:
        config = TrainConfig.from_dict(config_dict)
        config.network.validate()
    except (ValueError, GantkError) as exc:
        raise GantkError(f"{state_file} has an unusable training config ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("G_ema"), dict):
        config.network = with_resampling_of(config.network, state["G_ema"])
    if config.network.fingerprint_bits:
        raise GantkError(
            f"{run_dir} is a fingerprinted run (scalable fingerprints); its generator takes a "
            "fingerprint too: evaluate its instances instead (`gantk fingerprint-embed`)"
        )
    parts = state if isinstance(state, dict) else {}
    G = build_matching(
        lambda: Generator(config.network), parts.get("G_ema", {}), state_file, "generator"
    )
    D = build_matching(
        lambda: Discriminator(config.network), parts.get("D", {}), state_file, "discriminator"
    )
    return (
        G.to(device).eval().requires_grad_(False),
        D.to(device).eval().requires_grad_(False),
        config,
    )
