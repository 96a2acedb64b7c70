"""The GAN training loop on a tiny 16 px StyleGAN2: losses, attention, resume, Ctrl-C, NaN."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gantk.errors import GantkError
from gantk.gan import losses
from gantk.gan.config import TrainConfig
from gantk.gan.generate import load_generator
from gantk.gan.networks import NetworkConfig
from gantk.gan.run import CONFIG_FILE, resume_training, start_training
from gantk.gan.trainer import STATE_KIND, Trainer
from gantk.io.checkpoint import load_checkpoint, load_training_state
from gantk.io.datasets import open_dataset

DATA = "builtin:shapes?n=32"
BATCH = 8
STEP_KIMG = BATCH / 1000


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(_: str) -> None:
    pass


def config(out: Path, steps: int, **kw) -> TrainConfig:
    net_kw = {k: kw.pop(k) for k in ("g_attn", "d_attn") if k in kw}
    network = NetworkConfig(
        resolution=16,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        channel_base=128,
        channel_max=16,
        attn_kernel=3,
        **net_kw,
    )
    base = dict(
        data=DATA,
        out=str(out),
        network=network,
        kimg=steps * STEP_KIMG,
        batch_size=BATCH,
        tick_kimg=STEP_KIMG,  # a log line every step
        snapshot_kimg=100.0,
        sample_kimg=100.0,
        grid=2,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def log_entries(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def losses_of(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "sec_per_kimg"} for e in entries]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).tensors


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]


# --- every loss -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("ns", {}),
        ("saturating", {}),
        ("wgan-gp", {}),
        ("hinge", {}),
        ("contrastive", {"contrastive_warmup_epochs": 0.5}),  # 32 images, batch 8: 2 steps
    ],
)
def test_each_loss_trains_and_makes_a_usable_generator(
    tmp_path: Path, loss: str, extra: dict
) -> None:
    out = tmp_path / "run"
    result = start_training(config(out, 4, loss=loss, r1_interval=2, **extra), log=quiet)
    assert result["steps"] == 4 and result["interrupted"] is False
    assert result["kimg"] == pytest.approx(0.032)
    entries = log_entries(out)
    assert [e["step"] for e in entries] == [1, 2, 3, 4]
    for e in entries:
        assert math.isfinite(e["loss_d"]) and math.isfinite(e["loss_g"]), e
    if loss == "wgan-gp":
        assert all("gp" in e and "r1" not in e for e in entries)
    else:
        assert [("r1" in e) for e in entries] == [True, False, True, False]
    G = load_generator(result["checkpoint"])
    assert G.config.resolution == 16
    with torch.no_grad():
        img = G(torch.randn(3, 32))
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()
    samples = sorted(out.glob("samples-*.png"))
    assert samples
    with Image.open(samples[-1]) as im:
        assert im.format == "PNG" and im.size == (2 * 16, 2 * 16)
    meta = load_checkpoint(result["checkpoint"]).config
    assert meta["loss"] == loss and meta["step"] == 4
    assert json.loads((out / CONFIG_FILE).read_text())["loss"] == loss
    assert list(out.glob("snapshot-*.safetensors"))


@pytest.mark.parametrize(("g_attn", "d_attn"), [("san@8", "reference@8"), ("sagan@8", "self@8")])
def test_attention_options_train(tmp_path: Path, g_attn: str, d_attn: str) -> None:
    out = tmp_path / "run"
    cfg = config(out, 3, g_attn=g_attn, d_attn=d_attn, r1_interval=2, pl_interval=2)
    result = start_training(cfg, log=quiet)
    assert result["steps"] == 3
    for e in log_entries(out):
        assert math.isfinite(e["loss_d"]) and math.isfinite(e["loss_g"]), e
    G = load_generator(out / "latest.safetensors")
    assert G.config.g_attn == g_attn
    state, stored = load_training_state(out / "latest-state.safetensors", STATE_KIND)
    assert stored["network"]["d_attn"] == d_attn
    # The attention blocks took part in training: their output projections moved off zero.
    d_proj = [k for k in state["D"] if k.endswith("conv0.proj.weight")]
    assert d_proj and all(state["D"][k].abs().sum() > 0 for k in d_proj)


def test_contrastive_warmup_uses_ns_first(tmp_path: Path, monkeypatch) -> None:
    kinds: dict[str, list[str]] = {"d": [], "g": []}
    real_d, real_g = losses.d_loss, losses.g_loss

    def spy_d(kind, *args):
        kinds["d"].append(kind)
        return real_d(kind, *args)

    def spy_g(kind, *args):
        kinds["g"].append(kind)
        return real_g(kind, *args)

    monkeypatch.setattr(losses, "d_loss", spy_d)
    monkeypatch.setattr(losses, "g_loss", spy_g)
    run = config(tmp_path / "run", 5, loss="contrastive", contrastive_warmup_epochs=0.75)
    start_training(run, log=quiet)  # 0.75 x 32 images / batch 8 = 3 warm-up steps
    expected = ["ns"] * 3 + ["contrastive"] * 2
    assert kinds == {"d": expected, "g": expected}


def test_contrastive_warmup_defaults_to_the_thesis_20_epochs() -> None:
    assert TrainConfig(data=DATA, out="x").contrastive_warmup_epochs == 20.0
    # A run saved before warm-up epochs existed keeps its own (step) warm-up on resume.
    old = TrainConfig.from_dict({"data": DATA, "out": "x", "contrastive_warmup": 7})
    assert (old.contrastive_warmup, old.contrastive_warmup_epochs) == (7, 0.0)
    trainer = Trainer(config(Path("unused"), 1, loss="contrastive"), log=quiet)
    assert trainer.warmup_steps == 20 * 32 // BATCH


# --- presets and lazy regularization ---------------------------------------------------------


def adam_settings(opt: torch.optim.Optimizer) -> tuple[float, float, float]:
    group = opt.param_groups[0]
    return group["lr"], *group["betas"]


@pytest.mark.parametrize(
    ("kw", "d_ratio", "g_ratio"),
    [
        ({}, 16 / 17, 4 / 5),  # R1 every 16 D steps, path length every 4 G steps
        ({"r1_interval": 4, "pl_interval": 2}, 4 / 5, 2 / 3),
        ({"pl_weight": 0.0}, 16 / 17, 1.0),  # no path length: G is not lazily regularized
        ({"r1_gamma": 0.0}, 1.0, 4 / 5),
        ({"loss": "wgan-gp"}, 1.0, 4 / 5),  # its gradient penalty runs every step
    ],
)
def test_adam_is_rescaled_for_lazy_regularization(kw: dict, d_ratio: float, g_ratio: float) -> None:
    cfg = config(Path("unused"), 1, **{"r1_interval": 16, "pl_interval": 4, **kw})
    trainer = Trainer(cfg, log=quiet)
    # StyleGAN2 (training_loop.py): lr * k/(k+1), beta ** (k/(k+1)) for interval k.
    for opt, ratio in ((trainer.opt_D, d_ratio), (trainer.opt_G, g_ratio)):
        lr, beta1, beta2 = adam_settings(opt)
        assert lr == pytest.approx(0.002 * ratio, rel=1e-12)
        assert (beta1, beta2) == (0.0, pytest.approx(0.99**ratio, rel=1e-12))


def test_resumed_run_keeps_the_rescaled_adam(tmp_path: Path) -> None:
    out = tmp_path / "run"
    start_training(config(out, 2, r1_interval=16, pl_interval=4), log=quiet)
    state, _ = load_training_state(out / "latest-state.safetensors", STATE_KIND)
    trainer = Trainer(TrainConfig.from_dict(json.loads((out / CONFIG_FILE).read_text())), log=quiet)
    trainer.load_state(state)
    assert adam_settings(trainer.opt_D)[0] == pytest.approx(0.002 * 16 / 17)
    assert adam_settings(trainer.opt_G)[2] == pytest.approx(0.99 ** (4 / 5))


def test_presets_name_the_r1_weight_and_ema_rampup(tmp_path: Path) -> None:
    assert config(tmp_path / "d", 1).preset == "auto"  # the default, as StyleGAN2-ADA's
    # A run saved before presets existed resumes with the settings it trained with.
    assert TrainConfig.from_dict({"data": DATA, "out": "x"}).preset == "auto"
    auto = config(tmp_path / "a", 1, preset="auto")
    assert auto.gamma == pytest.approx(0.0002 * 16**2 / BATCH)
    assert auto.ema_rampup_now == 0.05
    paper = config(tmp_path / "p", 1, preset="paper")
    assert paper.gamma == 10.0 and paper.ema_rampup_now is None
    # An explicit --r1-gamma wins over either preset.
    assert config(tmp_path / "q", 1, preset="paper", r1_gamma=0.5).gamma == 0.5
    start_training(paper, log=quiet)
    assert json.loads((tmp_path / "p" / CONFIG_FILE).read_text())["preset"] == "paper"
    with pytest.raises(GantkError, match="--config must be one of auto, paper"):
        config(tmp_path / "x", 1, preset="ffhq").validate()


# --- exact resume ---------------------------------------------------------------------------

EXACT = dict(mirror=True, r1_interval=2, pl_interval=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "straight"
    start_training(config(out, 6, **EXACT), log=quiet)
    return out


def test_resume_equals_an_uninterrupted_run(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "resumed"
    first = start_training(config(out, 3, **EXACT), log=quiet)
    assert first["steps"] == 3
    result = resume_training(out, {"kimg": 6 * STEP_KIMG}, log=quiet)
    assert result["steps"] == 6
    assert_same_tensors(uninterrupted / "latest.safetensors", out / "latest.safetensors")
    assert_same_tensors(
        uninterrupted / "latest-state.safetensors", out / "latest-state.safetensors"
    )
    assert losses_of(log_entries(out)) == losses_of(log_entries(uninterrupted))
    assert json.loads((out / CONFIG_FILE).read_text())["kimg"] == pytest.approx(0.048)


def test_resume_rewinds_the_log_past_the_saved_state(tmp_path: Path, uninterrupted: Path):
    """A kill after steps were logged but before they were saved, and a line cut short by the
    kill: the resumed run logs each step once, exactly as the uninterrupted run did."""
    out = tmp_path / "killed"
    start_training(config(out, 3, **EXACT), log=quiet)
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "kimg": 0.032, "loss_d": 9.9}) + "\n")
        f.write('{"step": 5, "kimg": 0.0')  # the line the kill cut short
    resume_training(out, {"kimg": 6 * STEP_KIMG}, log=quiet)
    entries = log_entries(out)
    assert [e["step"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert losses_of(entries) == losses_of(log_entries(uninterrupted))


def test_ctrl_c_saves_and_resume_finishes_the_run(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "stopped"
    cfg = config(out, 6, **EXACT)
    out.mkdir()
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    messages: list[str] = []
    trainer = Trainer(cfg, log=messages.append)
    ticks = []

    def progress(kimg: float, stats: dict) -> None:
        ticks.append(kimg)
        if len(ticks) == 2:
            trainer.stop.request()  # what the first Ctrl-C does

    result = trainer.run(progress)
    assert result["interrupted"] is True and result["steps"] == 2 and trainer.step == 2
    assert any("stopping" in m for m in messages)
    state, _ = load_training_state(out / "latest-state.safetensors", STATE_KIND)
    assert state["step"] == 2
    resumed = resume_training(out, {"kimg": cfg.kimg}, log=quiet)
    assert resumed["steps"] == 6 and resumed["interrupted"] is False
    assert_same_tensors(uninterrupted / "latest.safetensors", out / "latest.safetensors")
    assert losses_of(log_entries(out)) == losses_of(log_entries(uninterrupted))


def test_a_real_sigint_stops_after_the_step_and_restores_the_handler(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    ticks = []

    def progress(kimg: float, stats: dict) -> None:
        ticks.append(kimg)
        if len(ticks) == 1:
            signal.raise_signal(signal.SIGINT)

    result = start_training(config(tmp_path / "run", 5), log=quiet, progress=progress)
    assert result["interrupted"] is True and result["steps"] == 1
    assert signal.getsignal(signal.SIGINT) is before
    assert (tmp_path / "run" / "latest-state.safetensors").is_file()


# --- non-finite losses ----------------------------------------------------------------------


def _poison_d_loss(monkeypatch: pytest.MonkeyPatch, at_call: int) -> tuple[list, object]:
    """Make the ``at_call``-th discriminator loss NaN (the steps before it stay finite);
    returns the list of calls seen and the real loss function."""
    calls = []
    real_d = losses.d_loss

    def poisoned(kind, real, fake):
        calls.append(kind)
        value = real_d(kind, real, fake)
        return value * float("nan") if len(calls) == at_call else value

    monkeypatch.setattr(losses, "d_loss", poisoned)
    return calls, real_d


def test_nan_loss_stops_with_the_last_good_state(tmp_path: Path, monkeypatch) -> None:
    calls, _ = _poison_d_loss(monkeypatch, at_call=3)
    out = tmp_path / "run"
    with pytest.raises(GantkError) as info:
        start_training(config(out, 6, snapshot_kimg=STEP_KIMG), log=quiet)
    message = str(info.value)
    assert "step 2" in message and "nan" in message
    assert "latest-state.safetensors" in message and str(out) in message
    assert len(calls) == 3
    state, _ = load_training_state(out / "latest-state.safetensors", STATE_KIND)
    assert state["step"] == 2
    for net in ("G", "D", "G_ema"):
        for name, value in state[net].items():
            assert torch.isfinite(value).all(), (net, name)
    G = load_generator(out / "latest.safetensors")
    assert all(torch.isfinite(p).all() for p in G.parameters())


# --- bad input ------------------------------------------------------------------------------


def test_dataset_resolution_must_match_the_network(tmp_path: Path) -> None:
    dataset = open_dataset(DATA, resolution=32)
    with pytest.raises(GantkError, match=r"32px but the network is 16px.*--resolution 32"):
        Trainer(config(tmp_path / "run", 2), dataset=dataset, log=quiet)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"data": "builtin:shapes?n=4"}, ["4 images", "fewer than one batch of 8"]),
        ({"loss": "foo"}, ["unknown loss 'foo'", "contrastive"]),
        ({"amp": "fp16"}, ["--amp fp16", "CUDA"]),
        ({"amp": "fp8"}, ["--amp 'fp8'"]),
        ({"batch_size": 6, "data": "builtin:shapes?n=4"}, ["fewer than one batch of 6"]),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    tmp_path: Path, kw: dict, words: list[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(GantkError) as info:
        start_training(config(out, 2, **kw), log=quiet)
    for word in words:
        assert word in str(info.value)
    assert not out.exists()


def test_resume_of_a_folder_without_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(GantkError, match="no resumable run"):
        resume_training(tmp_path / "empty", {"kimg": 1.0}, log=quiet)
    with pytest.raises(GantkError, match="no resumable run"):
        resume_training(tmp_path / "missing", {"kimg": 1.0}, log=quiet)


def test_resume_refuses_changed_settings(uninterrupted: Path, tmp_path: Path) -> None:
    before = (uninterrupted / "latest-state.safetensors").read_bytes()
    with pytest.raises(GantkError) as info:
        resume_training(uninterrupted, {"loss": "hinge", "kimg": 1.0}, log=quiet)
    assert "loss='ns'" in str(info.value) and "'hinge'" in str(info.value)
    with pytest.raises(GantkError, match="batch_size"):
        resume_training(uninterrupted, {"batch_size": 4}, log=quiet)
    assert (uninterrupted / "latest-state.safetensors").read_bytes() == before


def test_new_run_refuses_a_non_empty_out_without_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GantkError, match=r"already holds a run.*--force"):
        start_training(config(out, 1), log=quiet)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "log.jsonl").write_text('{"stale": true}\n')
    (out / "snapshot-000099kimg.safetensors").write_bytes(b"old run")
    start_training(config(out, 1), force=True, log=quiet)
    assert [e["step"] for e in log_entries(out)] == [1]
    assert (out / "keep.txt").read_text() == "mine"  # only run artifacts are replaced
    assert not (out / "snapshot-000099kimg.safetensors").exists()


def test_step_batches_depend_only_on_seed_and_step(tmp_path: Path) -> None:
    from gantk.gan.loop import StepBatchSampler
    from gantk.nn.distributed import Dist

    a = StepBatchSampler(32, 8, seed=0, start_step=0, dist=Dist())
    b = StepBatchSampler(32, 8, seed=0, start_step=5, dist=Dist())
    first = [batch for _, batch in zip(range(7), iter(a), strict=False)]
    later = [batch for _, batch in zip(range(2), iter(b), strict=False)]
    assert later == first[5:7]
    halves = [StepBatchSampler(32, 8, 0, 0, Dist(rank, 2)).indices(3) for rank in (0, 1)]
    assert halves[0] + halves[1] == a.indices(3)
    assert np.all(np.array(a.indices(3)) < 32)


def test_the_nan_advice_can_be_followed(tmp_path: Path, monkeypatch) -> None:
    _, real_d = _poison_d_loss(monkeypatch, at_call=2)
    out = tmp_path / "run"
    with pytest.raises(GantkError, match="lower --lr"):
        start_training(config(out, 3), log=quiet)
    monkeypatch.setattr(losses, "d_loss", real_d)
    result = resume_training(out, {"kimg": 3 * STEP_KIMG, "lr": 0.0005}, log=quiet)
    assert result["steps"] == 3
    state, saved_config = load_training_state(out / "latest-state.safetensors", STATE_KIND)
    assert saved_config["lr"] == 0.0005
    # The lowered rate, with lazy regularization's rescaling (path length every 4 G steps).
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(0.0005 * 4 / 5)


def test_nan_state_is_the_state_before_the_failed_step(tmp_path: Path, monkeypatch) -> None:
    clean = tmp_path / "clean"
    start_training(config(clean, 2), log=quiet)
    _poison_d_loss(monkeypatch, at_call=3)
    failed = tmp_path / "failed"
    with pytest.raises(GantkError, match="step 2"):
        start_training(config(failed, 6, snapshot_kimg=STEP_KIMG), log=quiet)
    assert_same_tensors(clean / "latest-state.safetensors", failed / "latest-state.safetensors")


def test_a_snapshot_of_the_untrained_generator_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen: list[list[str]] = []

    def progress(kimg: float, stats: dict) -> None:  # after step 1, before any save
        seen.append(sorted(p.name for p in out.glob("*.safetensors")))

    start_training(config(out, 1), log=quiet, progress=progress)
    assert (out / "samples-000000kimg.png").is_file()
    assert "snapshot-000000kimg.safetensors" in seen[0]
