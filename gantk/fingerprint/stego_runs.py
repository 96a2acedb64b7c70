"""Starting and resuming ``gantk train stego`` runs, of either design."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import Tensor

from gantk.errors import GantkError
from gantk.fingerprint.stego import StegoDecoder, grow_decoder_head
from gantk.fingerprint.train_native import NativeStegoTrainer
from gantk.fingerprint.train_stego import (
    STATE_FILE,
    StegoTrainConfig,
    StegoTrainer,
    load_stego,
)
from gantk.io.checkpoint import load_training_state


def start_or_resume(
    config: StegoTrainConfig, out: Path, resume: bool, init: Path | None = None
) -> StegoTrainer:
    """A trainer for a new run in ``out`` or, with ``resume``, for the run already there.

    ``init`` starts a new run from a trained pair (e.g. a shipped fp16 model, whose optimizer
    state is gone): at the model's own resolution the pair already communicates, so the image
    loss starts at full weight and the robustness stage is on from the first step; at a larger
    resolution (progressive training) the schedule starts over.
    """
    state = Path(out) / STATE_FILE
    if init is not None and resume:
        raise GantkError("--init starts a new run from a model; --resume continues a run: pick one")
    if resume:
        if not state.is_file():
            raise GantkError(f"{out} has no {STATE_FILE} to resume; start a new run instead")
        _, saved = load_training_state(state, "stego-training-state")
        saved_config = StegoTrainConfig(**{**saved, "robust": list(saved.get("robust", []))})
        # Only the length of the run and the device may change on resume.
        config = replace(saved_config, steps=config.steps, device=config.device)
        trainer = trainer_for(config, out)
        trainer.load_state()
        return trainer
    if state.exists():
        raise GantkError(f"{out} already holds a stego run; use --resume or another --out")
    trainer = trainer_for(config, out)
    if init is not None:
        encoder, decoder = load_stego(init, trainer.device)
        if encoder.config.bits != config.bits:
            raise GantkError(
                f"--init {init} has {encoder.config.bits} bits, but this run asks for "
                f"{config.bits}; give --bits {encoder.config.bits} or another model"
            )
        trainer.encoder.load_state_dict(encoder.state_dict())
        trainer.decoder.load_state_dict(resized_decoder_state(decoder, config.resolution))
        if encoder.config.resolution == config.resolution:
            trainer.accurate_since = -(config.l2_delay + config.l2_ramp)
        # At a new resolution the pair must first find each other again: the authors' schedule
        # (no image loss, no perturbations until bits decode) runs from the start.
    return trainer


def trainer_for(config: StegoTrainConfig, out: Path) -> StegoTrainer:
    """The trainer of the config's design."""
    if config.design == "native":
        return NativeStegoTrainer(config, out)
    return StegoTrainer(config, out)


def resized_decoder_state(decoder: StegoDecoder, resolution: int) -> dict[str, Tensor]:
    """``decoder``'s weights for a decoder at ``resolution`` (a larger power of two, or the
    same): progressive training, e.g. a 32 px model starting a 64 px run."""
    state = decoder.state_dict()
    old = decoder.config.resolution
    if resolution < old:
        raise GantkError(
            f"--init model works at {old}px; it can start runs at {old}px or larger, "
            f"not {resolution}px"
        )
    key = "head.1.weight"
    state[key] = grow_decoder_head(state[key], old // 32, resolution // 32)
    return state
