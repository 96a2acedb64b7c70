"""--precision: how 'auto' resolves, what each trainer records, and bf16 steps that train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gantk.errors import GantkError
from gantk.fingerprint.stego_runs import start_or_resume
from gantk.fingerprint.train_stego import StegoTrainConfig
from gantk.nn import precision

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_is_bf16_exactly_where_the_cpu_has_it(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # asked for: emulated is allowed
    assert precision.resolve_precision("none", "cpu") == "fp32"  # --amp's old spelling


def test_unknown_or_unusable_precisions_are_refused() -> None:
    with pytest.raises(GantkError, match="--precision must be one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("fp8", "cpu")
    with pytest.raises(GantkError, match="fp16 needs a CUDA device"):
        precision.resolve_precision("fp16", "cpu")


def test_autocast_runs_convolutions_in_the_half_type_and_fp32_switches_it_off() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with precision.autocast("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
        with precision.autocast("fp32", "cpu"):
            assert conv(x).dtype == torch.float32


def _stego_config(tmp: Path, name: str, **extra) -> StegoTrainConfig:
    settings = {"bits": 8, "resolution": 32, "batch_size": 4, "steps": 3, "snapshot_every": 3,
                "log_every": 1, "design": "native", "target_acc": 0.9, **extra}  # fmt: skip
    return StegoTrainConfig("builtin:photos?n=16&resolution=64", **settings)


def test_stego_training_records_the_resolved_precision_and_resume_keeps_it(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    trainer = start_or_resume(_stego_config(tmp_path, "a", precision="auto"), tmp_path / "a", False)
    trainer.run()
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["precision"] == "bf16"
    entries = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(e["bce"])) for e in entries)
    # On a machine without native bf16 the run goes on as it started.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    resumed = start_or_resume(_stego_config(tmp_path, "a", steps=4), tmp_path / "a", True)
    assert resumed.config.precision == "bf16" and resumed.step == 3


def test_bf16_and_fp32_stego_steps_agree_on_the_first_loss(tmp_path: Path) -> None:
    losses = {}
    for name in ("fp32", "bf16"):
        trainer = start_or_resume(_stego_config(tmp_path, name, precision=name),
                                  tmp_path / name, False)  # fmt: skip
        losses[name] = trainer.train_step(next(trainer.batches()))["bce"]
    # Same weights, same batch: the BCE differs by bf16's rounding of the logits only.
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_cli_refuses_fp16_on_the_cpu_before_writing(cli, tmp_path: Path) -> None:
    for command in (["train", "stego", "builtin:photos"], ["train", "texture", "builtin:textures"],
                    ["train", "gan", "builtin:shapes"]):  # fmt: skip
        result = cli(*command, "--out", tmp_path / "run", "--precision", "fp16", "--device", "cpu")
        assert result.exit_code == 2, command
        assert "fp16 needs a CUDA device" in result.stderr
        assert not (tmp_path / "run").exists()


def test_gan_keeps_the_old_amp_spelling_and_refuses_both(cli, tmp_path: Path) -> None:
    from gantk.cli.train_gan import _amp

    assert _amp("fp32", "none", "cpu") == "none" and _amp("bf16", None, "cpu") == "bf16"
    assert _amp("fp32", "bf16", "cpu") == "bf16"  # a script's old --amp still works
    assert _amp("fp32", None, "cpu") == "none"
    both = cli("train", "gan", "builtin:shapes", "--out", tmp_path / "r", "--precision", "bf16",
               "--amp", "bf16")  # fmt: skip
    assert both.exit_code == 2 and "give --precision only" in both.stderr
