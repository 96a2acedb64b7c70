"""Scalable fingerprints: the fingerprinted generator, folding, training, instances, decoding."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import h5py
import pytest
import torch
from helpers import assert_close_in_norm, error_line
from PIL import Image

from gantk.fingerprint.scalable.instances import fold_instance
from gantk.fingerprint.scalable.networks import (
    FingerprintedGenerator,
    make_decoder,
    parse_modulate_res,
)
from gantk.gan.networks import NetworkConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)


def _perturbed(G: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its initial value (biases start at zero, noise strengths too),
    so folding is checked on a generator where every term matters."""
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return G.eval()


@pytest.mark.parametrize(
    "extra", [{}, {"modulate_res": "8-16"}, {"g_attn": "san@8", "attn_kernel": 3}]
)
def test_folded_instance_reproduces_the_fingerprinted_generator(extra):
    torch.manual_seed(0)
    config = NetworkConfig(**TINY, fingerprint_bits=12, **extra)
    G = _perturbed(FingerprintedGenerator(config))
    c = torch.randint(0, 2, (12,)).float()
    z = torch.randn(5, 8)
    instance = fold_instance(G, c)
    expected = G(z, c.expand(5, -1), noise_mode="const")
    # Folded weights sum in another order: a tolerance from the images' size, not per pixel.
    assert_close_in_norm(instance(z, noise_mode="const"), expected, 1e-4, "instance")
    # the instance is only a generator: no fingerprint encoder, no decoder
    names = set(instance.state_dict())
    assert not any(n.startswith(("embed", "F.", "w_fixed")) for n in names)
    # and another fingerprint gives another generator
    other = fold_instance(G, 1 - c)
    assert (other(z, noise_mode="const") - expected).abs().max() > 1e-3


def test_unmodulated_layers_ignore_the_fingerprint():
    config = NetworkConfig(**TINY, fingerprint_bits=6, modulate_res="16")
    G = _perturbed(FingerprintedGenerator(config))
    ws = G.styles(torch.tensor([[0, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0]]).float())
    mask = G.modulated
    # styles of layers below 16 px are the learned constant, the same for both fingerprints
    assert not mask[:3].any() and mask[-3:].all()
    torch.testing.assert_close(ws[0, ~mask], ws[1, ~mask])
    assert (ws[0, mask] - ws[1, mask]).abs().max() > 1e-4
    assert parse_modulate_res("4-8", [4, 8, 16]) == [4, 8]
    with pytest.raises(Exception, match="--modulate-res"):
        parse_modulate_res("32", [4, 8, 16])


def test_decoder_reads_each_image_on_its_own():
    config = NetworkConfig(**TINY, fingerprint_bits=10)
    F = make_decoder(config).eval()
    x = torch.randn(4, 3, 16, 16)
    out = F(x)
    assert out.shape == (4, 8 + 10)
    # no minibatch statistics: an image decodes the same alone as in a batch
    # A batch of 1 may take another convolution kernel: relative to the logits' size.
    assert_close_in_norm(F(x[:1]), out[:1], 1e-5, "logits")


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny fingerprinted run trained through the CLI."""
    from typer.testing import CliRunner

    from gantk.cli.app import app

    out = tmp_path_factory.mktemp("fp") / "run"
    args = ["train", "gan", "builtin:shapes?n=64", "--resolution", "16", "--kimg", "0.032",
            "--batch-size", "8", "--z-dim", "8", "--w-dim", "8", "--mapping-layers", "2",
            "--channel-base", "64", "--channel-max", "8", "--fingerprint-bits", "24",
            "--snapshot-kimg", "0.016", "--sample-kimg", "0.016", "--tick-kimg", "0.016",
            "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def test_training_writes_generator_and_decoder(run):
    from gantk.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "latest.safetensors")
    assert ckpt.kind == "gan-fingerprinted"
    assert any(k.startswith("G.embed.") for k in ckpt.tensors)
    assert any(k.startswith("F.") for k in ckpt.tensors)
    assert ckpt.config["network"]["fingerprint_bits"] == 24 and ckpt.config["run_id"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"bit_acc", "bits_bce", "z_rec", "consistency", "loss_d"} <= set(log[-1])
    # Path length regularization, as the authors' EG_logistic_ns_pathreg (step 0 is a pl step).
    assert log[0]["pl_penalty"] >= 0


def test_path_length_is_taken_on_the_fingerprint_styles(tmp_path, monkeypatch):
    from gantk.fingerprint.scalable.train import ScalableTrainer
    from gantk.gan import losses
    from gantk.gan.config import TrainConfig
    from gantk.gan.networks import NetworkConfig

    seen = []
    real_path_lengths = losses.path_lengths

    def spy(synthesis, ws):
        # The styles come out of the fingerprint embedding E, so the penalty trains it too.
        embed = list(trainer.G.embed.parameters())
        grads = torch.autograd.grad(ws.sum(), embed, allow_unused=True, retain_graph=True)
        seen.append((ws.shape, any(g is not None and g.abs().sum() > 0 for g in grads)))
        return real_path_lengths(synthesis, ws)

    monkeypatch.setattr(losses, "path_lengths", spy)
    net = NetworkConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=2, channel_base=32,
                        channel_max=8, fingerprint_bits=6)  # fmt: skip
    cfg = TrainConfig(data="builtin:shapes?n=16", out=str(tmp_path), network=net, batch_size=4,
                      pl_interval=2, device="cpu")  # fmt: skip
    trainer = ScalableTrainer(cfg, log=lambda _: None)
    real = torch.zeros(4, 3, 8, 8)
    stats = [trainer.train_step(real) for _ in range(3)]
    assert len(seen) == 2 and "pl_penalty" in stats[0] and "pl_penalty" not in stats[1]
    assert seen[0] == ((2, trainer.G.num_ws, 8), True)  # a half batch of per-layer styles


def test_resume_continues_exactly(run, tmp_path, cli):
    import shutil

    from gantk.io.checkpoint import load_checkpoint

    # Two copies of the finished run resumed for the same 2 more steps must agree bit for bit
    # (every random draw, fingerprints included, comes from saved state).
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(run, a)
    shutil.copytree(run, b)
    for folder in (a, b):
        result = cli("train", "gan", "--resume", folder, "--kimg", "0.048", "--device", "cpu",
                     "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    ca, cb = (load_checkpoint(f / "latest.safetensors") for f in (a, b))
    ta, tb = ca.tensors, cb.tensors
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # the run keeps its identity across resumes (registries are bound to it)
    original = load_checkpoint(run / "latest.safetensors").config["run_id"]
    assert ca.config["run_id"] == cb.config["run_id"] == original and len(original) == 16
    before = load_checkpoint(run / "latest.safetensors").tensors
    assert any(not torch.equal(ta[k], before[k]) for k in ta)  # training did move the weights


def test_instances_registry_generate_decode(run, cli, tmp_path):
    models, reg = tmp_path / "models", tmp_path / "reg.h5"
    result = cli("fingerprint-embed", run / "latest.safetensors", "--users", "alice,bob",
                 "--registry", reg, "--out", models, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [r["user"] for r in json.loads(result.stdout)["instances"]] == ["alice", "bob"]
    assert stat.S_IMODE(os.stat(reg).st_mode) == 0o600
    # appending users to the registry
    result = cli("fingerprint-embed", run / "latest.safetensors", "--count", "2", "--registry",
                 reg, "--out", models, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sorted(p.stem for p in models.iterdir()) == ["alice", "bob", "user-00003", "user-00004"]
    from gantk.fingerprint.scalable.registry import Registry

    assert Registry.open(reg).names() == ["alice", "bob", "user-00003", "user-00004"]

    # an instance is an ordinary generator for `gantk generate`
    fakes = tmp_path / "fakes"
    result = cli("generate", models / "alice.safetensors", "-n", "6", "--out", fakes, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert len(list(fakes.iterdir())) == 6 and Image.open(next(fakes.iterdir())).size == (16, 16)

    result = cli("fingerprint-decode", fakes, "--decoder", run / "latest.safetensors",
                 "--registry", reg, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["images"]
    assert len(rows) == 6 and {"name", "nearest", "matches", "verified"} <= set(rows[0]["user"])
    summary = report["summary"]
    assert summary["no_match"] + sum(summary["users"].values()) == 6
    # an untrained few-step decoder reads near-random bits: nobody may be verified
    assert summary["user"]["threshold"] >= 23 and not summary["user"]["verified"]
    assert summary["users"] == {} and summary["no_match"] == 6


HOLD_REGISTRY = """
import sys, time
from pathlib import Path
from gantk.fingerprint.scalable.registry import locked
with locked(sys.argv[1]):
    Path(sys.argv[2]).touch()
    while not Path(sys.argv[3]).exists():
        time.sleep(0.02)
"""


def test_registry_in_use_by_another_process(run, cli, tmp_path, monkeypatch):
    """Two commands adding users to one registry: the second waits for the first, and one that
    cannot get the registry fails cleanly: no instance written, the other's files untouched."""
    import subprocess
    import sys
    import time

    from gantk.fingerprint.scalable import registry as registry_module

    models, reg = tmp_path / "models", tmp_path / "reg.h5"
    first = cli("fingerprint-embed", run / "latest.safetensors", "--users", "alice",
                "--registry", reg, "--out", models, "--quiet")  # fmt: skip
    assert first.exit_code == 0, first.stderr
    before = (models / "alice.safetensors").read_bytes(), reg.read_bytes()
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_REGISTRY, str(reg), str(ready), str(go)])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.02)
        monkeypatch.setattr(registry_module, "LOCK_WAIT_S", 0.3)
        result = cli("fingerprint-embed", run / "latest.safetensors", "--users", "bob",
                     "--registry", reg, "--out", models)  # fmt: skip
    finally:
        go.touch()
        holder.wait(30)
    assert result.exit_code == 2
    assert "being changed by another gantk process" in error_line(result)
    assert sorted(os.listdir(models)) == ["alice.safetensors"]
    assert ((models / "alice.safetensors").read_bytes(), reg.read_bytes()) == before
    # once the other process is done, the same command goes through
    again = cli("fingerprint-embed", run / "latest.safetensors", "--users", "bob",
                "--registry", reg, "--out", models, "--quiet")  # fmt: skip
    assert again.exit_code == 0, again.stderr
    assert sorted(os.listdir(models)) == ["alice.safetensors", "bob.safetensors"]


def test_scalable_bad_input(run, cli, tmp_path):
    from gantk.io.checkpoint import save_checkpoint

    models, reg = tmp_path / "models", tmp_path / "reg.h5"
    ckpt = run / "latest.safetensors"
    result = cli("fingerprint-embed", ckpt, "--users", "alice", "--registry", reg, "--out", models)
    assert result.exit_code == 0, result.stderr
    fakes = tmp_path / "fakes"
    assert cli("generate", models / "alice.safetensors", "-n", "2", "--out", fakes).exit_code == 0
    # a user already present
    assert "already in registry" in error_line(
        cli("fingerprint-embed", ckpt, "--users", "alice", "--registry", reg, "--out", models)
    )
    # a checkpoint trained without fingerprints
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(plain, {"w": torch.zeros(1)}, "gan-generator", {"network": {}})
    assert "trained without --fingerprint-bits" in error_line(
        cli(
            "fingerprint-embed",
            plain,
            "--users",
            "x",
            "--registry",
            tmp_path / "r2.h5",
            "--out",
            models,
        )
    )
    # generating from the training checkpoint instead of an instance
    assert "make per-user generators" in error_line(
        cli("generate", ckpt, "-n", "1", "--out", tmp_path / "g")
    )
    # a registry of another bit length
    from gantk.fingerprint.scalable.registry import Registry

    other = Registry.create(tmp_path / "r64.h5", 64, "someotherrun")
    other.save()
    assert "64-bit fingerprints" in error_line(
        cli("fingerprint-decode", fakes, "--decoder", ckpt, "--registry", tmp_path / "r64.h5")
    )
    # a registry of another training run: a warning, decoding goes on
    wrong = Registry.create(tmp_path / "r24.h5", 24, "someotherrun")
    wrong.save()
    result = cli("fingerprint-decode", fakes, "--decoder", ckpt, "--registry",
                 tmp_path / "r24.h5")  # fmt: skip
    assert result.exit_code == 0 and "decoded bits will be random" in result.stderr
    # a tampered registry
    with h5py.File(reg, "r+") as f:
        names = [k for k in f if f[k].dtype.kind == "u"]
        data = f[names[0]]
        data[0, 0] = 1 - data[0, 0]
    assert "checksum" in error_line(
        cli("fingerprint-embed", ckpt, "--users", "zoe", "--registry", reg, "--out", models)
    )
    # --users and --count together, neither
    assert "one of the two" in error_line(
        cli("fingerprint-embed", ckpt, "--registry", tmp_path / "r3.h5", "--out", models)
    )
    assert "give --registry" in error_line(
        cli("fingerprint-embed", ckpt, "--users", "a", "--out", models)
    )


def test_capacity_against_brute_force():
    import numpy as np

    from gantk.fingerprint.scalable.evaluation import capacity

    rows = capacity([8, 20], bag=300, seed=3)
    rng = np.random.default_rng(3)
    for row, length in zip(rows, [8, 20], strict=True):
        codes = rng.integers(0, 2, (300, length)).astype(np.float32) * 2 - 1
        best = max(int((codes[i] == codes[j]).sum()) for i in range(300) for j in range(i + 1, 300))
        assert row["max_overlap"] == best / length
    assert rows[0]["max_overlap"] == 1.0  # 300 codes of 8 bits must collide (256 possible)


def test_evaluate_scalable_command(run, cli, tmp_path):
    png = tmp_path / "robust.png"
    result = cli("evaluate", "scalable", run / "latest.safetensors", "--real",
                 "builtin:shapes?n=8", "--instances", "1,3", "--per-instance", "2", "-n", "8",
                 "--perturb", "jpeg", "--capacity-bag", "50", "--plot", png, "--device", "cpu",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bit_accuracy"]["images"] == 8 and 0 <= doc["bit_accuracy"]["mean_bit_accuracy"] <= 1
    worlds = doc["closed_world"]
    assert [w["instances"] for w in worlds] == [1, 3]
    assert [w["images"] for w in worlds] == [2 + 6, 6 + 6]  # fakes + the real images
    assert {r["perturbation"] for r in doc["robustness"]} == {"jpeg"}
    assert Image.open(png).format == "PNG"
    assert "--instances" in error_line(
        cli("evaluate", "scalable", run / "latest.safetensors", "--instances", "0")
    )


def test_generator_and_decoder_learn_to_communicate():
    """The mechanism at toy scale: trained jointly on the fingerprint and z losses, F reads
    both back far better than chance (BCE 0.693, z MSE 1) within 150 steps."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    config = NetworkConfig(resolution=16, z_dim=8, w_dim=32, mapping_layers=2, channel_base=512,
                           channel_max=32, fingerprint_bits=8)  # fmt: skip
    G, Fd = FingerprintedGenerator(config), make_decoder(config)
    opt = torch.optim.Adam([*G.parameters(), *Fd.parameters()], lr=0.002, betas=(0.0, 0.99))
    history = []
    for _ in range(150):
        z, c = torch.randn(32, 8), torch.randint(0, 2, (32, 8)).float()
        out = Fd(G(z, c))
        z_loss = F.mse_loss(out[:, :8], z)
        bits_loss = F.binary_cross_entropy_with_logits(out[:, 8:], c)
        opt.zero_grad()
        (z_loss + 2 * bits_loss).backward()
        opt.step()
        history.append((z_loss.item(), bits_loss.item()))
    z_end, bits_end = (sum(v) / 20 for v in zip(*history[-20:], strict=True))
    assert bits_end < 0.62 and z_end < 0.7, (z_end, bits_end)


def test_decoder_ignores_reference_attention_and_modulate_needs_bits(cli, tmp_path):
    config = NetworkConfig(**TINY, fingerprint_bits=4, d_attn="reference@8", attn_kernel=3)
    assert make_decoder(config)(torch.randn(2, 3, 16, 16)).shape == (2, 12)
    assert "add --fingerprint-bits" in error_line(
        cli(
            "train",
            "gan",
            "builtin:shapes?n=16",
            "--resolution",
            "16",
            "--modulate-res",
            "8",
            "--out",
            tmp_path / "r",
        )
    )


def test_fingerprints_are_secret_by_default(run, cli, tmp_path):
    from gantk.fingerprint.scalable.registry import Registry

    codes = []
    for k in range(2):
        reg = tmp_path / f"r{k}.h5"
        result = cli("fingerprint-embed", run / "latest.safetensors", "--users", "alice",
                     "--registry", reg, "--out", tmp_path / f"m{k}", "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        codes.append(Registry.open(reg).fingerprints()[0])
    assert (codes[0] != codes[1]).any()  # no shared default seed
