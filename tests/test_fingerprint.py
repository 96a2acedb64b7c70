"""Artificial fingerprints: bit strings and statistics, embedding folders, decoding with
verdicts, robustness sweeps, stego training and resume, and the CLI's errors."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line
from PIL import Image

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder, grow_decoder_head
from gantk.fingerprint.stego_runs import start_or_resume
from gantk.fingerprint.train_stego import (
    WEIGHT_RATE,
    StegoTrainConfig,
    StegoTrainer,
    chroma_energy,
    l2_weight_at,
    load_stego,
    save_stego,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BITS = 8
CODE = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Bits and statistics


def test_hex_and_binary_round_trip() -> None:
    assert fpbits.to_hex(CODE) == "0xb2"
    np.testing.assert_array_equal(fpbits.parse("0xb2", 8), CODE)
    np.testing.assert_array_equal(fpbits.parse("10110010", 8), CODE)
    code = fpbits.random_bits(100, 3)
    assert len(fpbits.to_hex(code)) == 2 + 25
    np.testing.assert_array_equal(fpbits.parse(fpbits.to_hex(code), 100), code)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0xb2f", "does not hold 8 bits"),
        ("0xzz", "not valid hex"),
        ("1011", "has 4 bits but the model uses 8"),
        ("hello", "neither hex"),
    ],
)
def test_bad_fingerprint_strings(text: str, message: str) -> None:
    with pytest.raises(GantkError, match=message):
        fpbits.parse(text, 8)
    # 100 bits in hex: 25 digits whose top bits beyond 100 must be zero.
    with pytest.raises(GantkError):
        fpbits.parse("0x" + "f" * 26, 100)


def test_p_value_and_threshold_against_exact_binomial() -> None:
    def exact(k: int, n: int) -> float:
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n

    for k in (50, 60, 75, 90):
        assert fpbits.p_value(k, 100) == pytest.approx(exact(k, 100), rel=1e-9)
    # The paper: 75 of 100 bits matching has p = 2.8e-7.
    assert fpbits.p_value(75, 100) == pytest.approx(2.8e-7, rel=0.05)
    k = fpbits.threshold(100, 1e-6)
    assert exact(k, 100) <= 1e-6 < exact(k - 1, 100)
    assert fpbits.threshold(8, 1e-6) == 9  # 8 bits can never reach that rate
    with pytest.raises(GantkError, match="--fpr"):
        fpbits.threshold(100, 0)


def test_folder_test_does_not_pool_dependent_images() -> None:
    # A clean model whose decoder reads nearly the same bits from every image: pooling all
    # 1000 x 100 bits would call a 0.52 accuracy "certain"; the majority vote does not.
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 100)
    bias = target.copy()
    bias[52:] = 1 - bias[52:]  # the decoder's habit agrees with the fingerprint on 52 bits
    decoded = np.where(rng.random((1000, 100)) < 0.9, bias, 1 - bias)
    naive = fpbits.p_value(int((decoded == target).sum()), decoded.size)
    test = fpbits.folder_test(decoded, np.broadcast_to(target, decoded.shape))
    assert naive < 1e-10  # what pooling would claim
    assert test["method"] == "majority vote" and test["trials"] == 100
    assert test["matches"] == 52 and test["p_value"] > 0.3
    # Per-image fingerprints: every bit is a fair coin under the null, so they pool.
    targets = rng.integers(0, 2, (1000, 100))
    pooled = fpbits.folder_test(decoded, targets)
    assert pooled["method"] == "pooled bits" and pooled["trials"] == 100_000
    assert pooled["p_value"] > 1e-3


def test_majority_and_closest_with_correction(tmp_path: Path) -> None:
    decoded = np.array([[1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(fpbits.majority(decoded), [1, 0, 1, 1])
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps({"fingerprints": [
            {"name": "alice", "fingerprint": "0xb2", "bits": 8},
            {"name": "bob", "fingerprint": "0x4d", "bits": 8},
            {"name": "carol", "fingerprint": "0x1", "bits": 4},
        ]})
    )  # fmt: skip
    entries = fpbits.read_registry(registry)
    best = fpbits.closest(CODE, entries)
    assert best["name"] == "alice" and best["matches"] == 8
    assert best["p_value_corrected"] == pytest.approx(2 * best["p_value"])  # two 8-bit entries
    registry.write_text("{}")
    with pytest.raises(GantkError, match="not a fingerprint registry"):
        fpbits.read_registry(registry)


# ----------------------------------------------------------------------------------------------
# Models for the tests


def _tiny_models(resolution: int = 32) -> tuple[StegoEncoder, StegoDecoder]:
    torch.manual_seed(0)
    config = StegoConfig(BITS, resolution)
    return StegoEncoder(config).eval(), StegoDecoder(config).eval()


def _oracle_decoder(code: np.ndarray, resolution: int = 32) -> StegoDecoder:
    """A decoder that reads ``code`` from every image (last layer: zero weights, ±5 bias): lets
    the tests know exactly what decoding must report."""
    decoder = StegoDecoder(StegoConfig(len(code), resolution)).eval()
    with torch.no_grad():
        decoder.logits.weight.zero_()
        decoder.logits.bias.copy_(torch.from_numpy(code.astype(np.float32) * 10 - 5))
    return decoder


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    encoder, _ = _tiny_models()
    return save_stego(tmp_path / "stego.safetensors", encoder, _oracle_decoder(CODE))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Mixed sizes, a sub-folder, a grayscale and an RGBA image."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(root / "gray.png")
    Image.fromarray(rng.integers(0, 256, (36, 36, 4), dtype=np.uint8), "RGBA").save(
        root / "alpha.png"
    )
    return root


def test_save_and_load_stego_in_float16(tmp_path: Path) -> None:
    encoder, decoder = _tiny_models()
    path = save_stego(tmp_path / "m.safetensors", encoder, decoder, dtype=torch.float16)
    enc2, dec2 = load_stego(path)
    weight = encoder.secret.weight
    torch.testing.assert_close(enc2.secret.weight, weight.half().float())
    assert dec2.config == decoder.config


# ----------------------------------------------------------------------------------------------
# Embedding


def test_embed_keeps_names_sizes_and_modes(cli, photos: Path, model_file: Path, tmp_path: Path):
    out = tmp_path / "marked"
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    result = cli("fingerprint-embed", photos, "--encoder", model_file, "--fingerprint", "0xb2",
                 "--out", out, "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "fingerprint.json").read_text())
    assert record["fingerprint"] == "0xb2" and record["bits"] == 8 and record["images"] == 4
    assert record["encoder"]["resolution"] == 32 and len(record["encoder"]["sha256"]) == 64
    assert record["psnr_db"]["min"] > 0 and -1 <= record["ssim"]["mean"] <= 1
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert files == ["a.png", "alpha.png", "gray.png", "sub/b.png"]
    assert Image.open(out / "a.png").size == (48, 40)
    assert Image.open(out / "gray.png").mode == "L"
    alpha = Image.open(out / "alpha.png")
    assert alpha.mode == "RGBA"
    np.testing.assert_array_equal(
        np.asarray(alpha)[..., 3], np.asarray(Image.open(photos / "alpha.png"))[..., 3]
    )
    assert before == {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}


def test_embed_per_image_and_jpeg(cli, photos: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "marked"
    result = cli("fingerprint-embed", photos, "--encoder", model_file, "--per-image",
                 "--format", "jpeg", "--quality", "90", "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "fingerprint.json").read_text())
    assert record["per_image"] and record["jpeg_quality"] == 90 and record["fingerprint"] is None
    with (out / "fingerprints.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == ["a.jpg", "alpha.jpg", "gray.jpg", "sub/b.jpg"]
    assert len({r["fingerprint"] for r in rows}) > 1  # different fingerprints
    assert all((out / r["image"]).is_file() for r in rows)


def test_embed_errors(cli, photos: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "marked"
    base = ["fingerprint-embed", photos, "--encoder", model_file, "--out", out]
    assert "--bits 100 does not match the encoder, which embeds 8" in error_line(
        cli(*base, "--bits", "100")
    )
    assert "has 3 bits" in error_line(cli(*base, "--fingerprint", "101"))
    assert "is not a folder" in error_line(
        cli("fingerprint-embed", photos / "a.png", "--encoder", model_file, "--out", out)
    )
    assert "does not exist" in error_line(
        cli("fingerprint-embed", photos, "--encoder", tmp_path / "none.safetensors", "--out", out)
    )
    assert not out.exists()
    # Too small an image: nothing is written.
    Image.fromarray(np.zeros((8, 30, 3), dtype=np.uint8)).save(photos / "tiny.png")
    assert "at least 16x16" in error_line(cli(*base))
    assert not out.exists()
    (photos / "tiny.png").unlink()
    # An output folder that holds another fingerprint.
    assert cli(*base, "--fingerprint", "0xb2", "--quiet").exit_code == 0
    line = error_line(cli(*base, "--fingerprint", "0x01", "--force"))
    assert "already holds images with fingerprint 0xb2" in line


# ----------------------------------------------------------------------------------------------
# Decoding


def test_decode_reports_accuracy_p_values_and_verdicts(
    cli, photos: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "marked"
    cli("fingerprint-embed", photos, "--encoder", model_file, "--fingerprint", "0xb2",
        "--out", out, "--quiet")  # fmt: skip
    table = tmp_path / "decoded.csv"
    result = cli("fingerprint-decode", out, "--decoder", model_file, "--expect", out,
                 "--fpr", "0.01", "--csv", table, "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    summary = report["summary"]
    # The oracle decoder reads 0xb2 everywhere: 8/8 bits, p = 2^-8 per image.
    assert summary["threshold_matches"] == 8 and summary["detected"] == 4
    assert summary["mean_bit_accuracy"] == 1.0 and summary["verdict"] == "fingerprinted"
    # One fingerprint for all: the folder test is the majority vote, 8 trials.
    assert summary["folder_test"]["method"] == "majority vote"
    assert summary["folder_p_value"] == pytest.approx(2.0**-8)
    assert all(r["p_value"] == pytest.approx(2.0**-8) for r in report["images"])
    with table.open() as f:
        assert len(list(csv.DictReader(f))) == 4
    # Testing for another fingerprint (0x4d = 01001101 is the complement): nothing matches.
    other = json.loads(
        cli(
            "fingerprint-decode",
            out,
            "--decoder",
            model_file,
            "--expect",
            "0x4d",
            "--json",
            "--quiet",
        ).stdout
    )["summary"]
    assert other["mean_bit_accuracy"] == 0.0 and other["verdict"] == "not detected"


def test_decode_errors(cli, photos: Path, model_file: Path, tmp_path: Path) -> None:
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    (record_dir / "fingerprint.json").write_text(
        json.dumps({"bits": 8, "fingerprint": "0xb2", "encoder": {"resolution": 64}})
    )
    assert "works at 32x32" in error_line(
        cli("fingerprint-decode", photos, "--decoder", model_file, "--expect", record_dir)
    )
    (record_dir / "fingerprint.json").write_text(json.dumps({"bits": 100, "fingerprint": "0x0"}))
    assert "records 100-bit fingerprints" in error_line(
        cli("fingerprint-decode", photos, "--decoder", model_file, "--expect", record_dir)
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no files; put images" in error_line(
        cli("fingerprint-decode", empty, "--decoder", model_file)
    )


# ----------------------------------------------------------------------------------------------
# Robustness


def test_robustness_sweep_table_json_and_plot(
    cli, photos: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "marked"
    cli("fingerprint-embed", photos, "--encoder", model_file, "--fingerprint", "0xb2",
        "--out", out, "--quiet")  # fmt: skip
    plot = tmp_path / "robustness.png"
    result = cli("evaluate", "robustness", out, "--decoder", model_file, "--expect", out,
                 "--perturb", "jpeg,crop", "--plot", plot, "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [r["perturbation"] for r in rows] == ["jpeg"] * 8 + ["crop"] * 7
    assert all(r["bit_accuracy"] == 1.0 for r in rows)  # the oracle ignores the image
    assert Image.open(plot).format == "PNG"
    assert "unknown perturbation(s) sharpen" in error_line(
        cli(
            "evaluate",
            "robustness",
            out,
            "--decoder",
            model_file,
            "--expect",
            out,
            "--perturb",
            "sharpen",
        )
    )


# ----------------------------------------------------------------------------------------------
# Training


def test_l2_schedule() -> None:
    config = StegoTrainConfig("builtin:photos", l2_weight=10, l2_delay=100, l2_ramp=200)
    assert l2_weight_at(5000, None, config) == 0.0
    assert l2_weight_at(150, 50, config) == 0.0  # within the delay
    assert l2_weight_at(250, 50, config) == pytest.approx(5.0)  # half-way up the ramp
    assert l2_weight_at(900, 50, config) == 10.0


def _train_config(steps: int, **extra) -> StegoTrainConfig:
    return StegoTrainConfig("builtin:photos?n=16", bits=BITS, resolution=32, batch_size=4,
                            steps=steps, robust=["jpeg", "crop"], snapshot_every=2,
                            log_every=1, **extra)  # fmt: skip


@pytest.mark.parametrize("extra", [{}, {"target_acc": 0.6, "chroma_weight": 2.0, "l2_delay": 0,
                                        "l2_ramp": 1}])  # fmt: skip
def test_training_writes_files_and_resumes_exactly(tmp_path: Path, extra: dict) -> None:
    straight = StegoTrainer(_train_config(6, **extra), tmp_path / "a")
    straight.accurate_since = 0  # switch the robustness stage and the L2 ramp on at once
    straight.run()
    assert (tmp_path / "a" / "stego.safetensors").is_file()
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 6

    first = StegoTrainer(_train_config(4, **extra), tmp_path / "b")
    first.accurate_since = 0
    first.run()
    resumed = start_or_resume(_train_config(6, **extra), tmp_path / "b", resume=True)
    assert resumed.step == 4 and resumed.accurate_since == 0
    resumed.run()
    for a, b in zip(straight.encoder.parameters(), resumed.encoder.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.weight_scale == straight.weight_scale
    assert resumed.acc_ema == straight.acc_ema
    if extra:  # the self-tuning weight moved, by whole steps of WEIGHT_RATE
        moves = math.log(straight.weight_scale) / WEIGHT_RATE
        assert straight.weight_scale != 1.0 and abs(moves - round(moves)) < 1e-6
    with pytest.raises(GantkError, match="already holds a stego run"):
        start_or_resume(_train_config(6), tmp_path / "b", resume=False)


def test_self_tuning_image_weight_follows_the_accuracy(tmp_path: Path) -> None:
    trainer = StegoTrainer(_train_config(1, target_acc=0.9, l2_delay=2, l2_ramp=3), tmp_path)
    trainer.accurate_since, trainer.step = 10, 14  # ramp not finished: the weight stays put
    trainer._tune_weight(1.0)
    assert trainer.weight_scale == 1.0
    trainer.step, trainer.acc_ema = 15, 0.95
    trainer._tune_weight(0.95)  # running accuracy above the target: weight up
    assert trainer.weight_scale == pytest.approx(math.exp(WEIGHT_RATE))
    trainer.acc_ema = 0.5
    trainer._tune_weight(0.5)  # below: back down
    trainer._tune_weight(0.5)
    assert trainer.weight_scale == pytest.approx(math.exp(-WEIGHT_RATE))
    # The running mean is exponential with decay 0.98.
    assert trainer.acc_ema == pytest.approx(0.5)
    off = StegoTrainer(_train_config(1), tmp_path / "off")
    off.accurate_since, off.step, off.acc_ema = 0, 10**6, 1.0
    off._tune_weight(1.0)
    assert off.weight_scale == 1.0


def test_chroma_energy_against_hand_values() -> None:
    grey = torch.full((1, 3, 4, 4), 0.3)  # equal R, G, B: luminance only, no chroma
    assert chroma_energy(grey).item() == pytest.approx(0.0, abs=1e-12)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 0.2  # +0.1 of red on the [0, 1] scale
    cb, cr = -0.168736 * 0.1, 0.5 * 0.1  # BT.601
    assert chroma_energy(red).item() == pytest.approx(cb**2 + cr**2, rel=1e-6)


def test_grown_decoder_head_reads_block_means_as_before() -> None:
    torch.manual_seed(1)
    weight = torch.randn(5, 3 * 1 * 1)
    grown = grow_decoder_head(weight, 1, 2)
    assert grown.shape == (5, 3 * 2 * 2)
    features = torch.randn(2, 3, 1, 1)
    spread = features.repeat(1, 1, 2, 2)  # each old position copied over its 2x2 block
    torch.testing.assert_close(spread.flatten(1) @ grown.T, features.flatten(1) @ weight.T)
    weight = torch.randn(4, 2 * 2 * 2)
    fine = torch.randn(3, 2, 4, 4)  # a 4x4 grid: the old layer saw its 2x2 block means
    means = torch.nn.functional.avg_pool2d(fine, 2)
    torch.testing.assert_close(
        fine.flatten(1) @ grow_decoder_head(weight, 2, 4).T, means.flatten(1) @ weight.T
    )
    with pytest.raises(GantkError, match="cannot grow"):
        grow_decoder_head(weight, 2, 3)


def test_train_stego_cli_errors(cli, tmp_path: Path) -> None:
    assert "give --out" in error_line(cli("train", "stego", "builtin:photos"))
    assert "leave out DATASET" in error_line(
        cli("train", "stego", "builtin:photos", "--out", tmp_path / "r", "--resume")
    )
    assert "fewer than --batch-size" in error_line(
        cli(
            "train",
            "stego",
            "builtin:photos?n=8",
            "--out",
            tmp_path / "r",
            "--resolution",
            "32",
            "--batch-size",
            "16",
        )
    )
    assert "power of two >= 32" in error_line(
        cli("train", "stego", "builtin:photos", "--out", tmp_path / "r", "--resolution", "48")
    )
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# Secrecy


def test_secrecy_attack_spots_its_own_encoder(cli, model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    clean, marked_src = tmp_path / "clean", tmp_path / "owner_src"
    for folder, offset in ((clean, 0), (marked_src, 100)):
        folder.mkdir()
        for i in range(16):
            smooth = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(smooth).resize((32, 32), Image.Resampling.BILINEAR).save(
                folder / f"{offset + i}.png"
            )
    marked = tmp_path / "owner"
    cli("fingerprint-embed", marked_src, "--encoder", model_file, "--out", marked, "--quiet")
    # The attacker holding the owner's very encoder is the worst case: it must be detected.
    result = cli("evaluate", "secrecy", marked, clean, "--attack-encoder", model_file,
                 "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    # The thesis' protocol: 16 + 16 test images; trained on them as they are (32) and encoded
    # twice (32). (Telling 1 from 2 marks on 32 tiny images is beyond it: no accuracy bar.)
    assert report["protocol"] == "paper" and report["test_images"] == 32
    assert report["train_images"] == 64 and 0 <= report["attack_accuracy"] <= 1
    transfer = cli("evaluate", "secrecy", marked, clean, "--attack-encoder", model_file,
                   "--protocol", "transfer", "--json", "--quiet")  # fmt: skip
    report = json.loads(transfer.stdout)
    assert report["protocol"] == "transfer" and report["test_images"] == 16
    assert report["attack_accuracy"] >= 0.9
    bad = cli("evaluate", "secrecy", marked, clean, "--attack-encoder", model_file,
              "--protocol", "guess")  # fmt: skip
    assert bad.exit_code == 2 and "use one of paper, transfer" in error_line(bad)
    assert "same folder" in error_line(
        cli("evaluate", "secrecy", clean, clean, "--attack-encoder", model_file)
    )


def test_ats_paper_protocol_counts_marks_as_the_thesis(monkeypatch) -> None:
    """Thesis §5.5.5 with a stand-in attacker whose every application adds one "mark" and a
    feature that reads the mark count: train 0-1 marks (the test set) vs 2-3 (encoded twice),
    test on the test set encoded once; a perfect feature must then be a perfect attack."""
    from gantk.fingerprint import secrecy

    def mark(attacker, images, generator, design="paper"):
        return [image + 1.0 for image in images]

    monkeypatch.setattr(secrecy, "_mark", mark)

    def marks(images, resolution, design="paper"):
        return np.array([[float(image[0, 0, 0, 0])] for image in images])

    monkeypatch.setattr(secrecy, "residual_features", marks)

    class Attacker:
        class config:
            resolution, bits = 8, 4

    owner = [torch.ones(1, 3, 8, 8) for _ in range(6)]  # marked once by the owner
    clean = [torch.zeros(1, 3, 8, 8) for _ in range(9)]
    result = secrecy.ats_attack(owner, clean, Attacker(), protocol="paper")
    assert result["test_images"] == 12 and result["train_images"] == 24  # balanced: 6 + 6
    assert result["attack_accuracy"] == 1.0
    assert result["flagged_owner_images"] == 1.0 and result["flagged_clean_images"] == 0.0


def test_decode_one_image_against_a_registry(cli, photos: Path, model_file: Path, tmp_path):
    registry = tmp_path / "owners.json"
    registry.write_text(json.dumps({"fingerprints": [
        {"name": "alice", "fingerprint": "0xb2", "bits": 8},
        {"name": "bob", "fingerprint": "0x0f", "bits": 8},
    ]}))  # fmt: skip
    result = cli("fingerprint-decode", photos / "a.png", "--decoder", model_file,
                 "--registry", registry, "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["image"] for r in report["images"]] == ["a.png"]
    assert report["images"][0]["decoded"] == "0xb2"
    assert report["summary"]["closest"]["name"] == "alice"
    assert "verdict" not in report["summary"]  # nothing to test without --expect


def test_init_from_a_trained_model(tmp_path: Path) -> None:
    encoder, decoder = _tiny_models()
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    trainer = start_or_resume(_train_config(2), tmp_path / "run", resume=False, init=model)
    torch.testing.assert_close(trainer.encoder.secret.weight, encoder.secret.weight)
    assert l2_weight_at(0, trainer.accurate_since, trainer.config) == trainer.config.l2_weight
    # The full image loss survives a resume (the negative start is not "never accurate").
    trainer.run()
    resumed = start_or_resume(_train_config(3), tmp_path / "run", resume=True)
    assert resumed.accurate_since == trainer.accurate_since < 0
    with pytest.raises(GantkError, match="pick one"):
        start_or_resume(_train_config(2), tmp_path / "run", resume=True, init=model)
    other = save_stego(tmp_path / "o.safetensors", *_tiny_models(64))
    with pytest.raises(GantkError, match="64px or larger, not 32px"):
        start_or_resume(_train_config(2), tmp_path / "run2", resume=False, init=other)
    wrong_bits = StegoConfig(BITS + 1, 32)
    other = save_stego(tmp_path / "b.safetensors", StegoEncoder(wrong_bits),
                       StegoDecoder(wrong_bits))  # fmt: skip
    with pytest.raises(GantkError, match="has 9 bits"):
        start_or_resume(_train_config(2), tmp_path / "run3", resume=False, init=other)


def test_init_at_a_larger_resolution_restarts_the_schedule(tmp_path: Path) -> None:
    encoder, decoder = _tiny_models(32)
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    config = replace(_train_config(2), resolution=64)
    trainer = start_or_resume(config, tmp_path / "run", resume=False, init=model)
    assert trainer.decoder.config.resolution == 64 and trainer.accurate_since is None
    torch.testing.assert_close(trainer.encoder.secret.weight, encoder.secret.weight)
    torch.testing.assert_close(
        trainer.decoder.head[1].weight, grow_decoder_head(decoder.head[1].weight, 1, 2)
    )


def test_luma_encoder_changes_luminance_only() -> None:
    torch.manual_seed(0)
    encoder = StegoEncoder(StegoConfig(BITS, 32, luma=True)).eval()
    images = torch.rand(2, 3, 32, 32) * 1.6 - 0.8  # away from the clipping range
    with torch.no_grad():
        out = encoder(images, torch.randint(0, 2, (2, BITS)).float())
    residual = out - images
    assert residual.abs().max() > 1e-3  # it does change the image
    inside = (out.abs() < 0.9999).all(dim=1)  # where no channel was clipped to the range
    assert inside.float().mean() > 0.5
    for a, b in ((0, 1), (1, 2)):
        torch.testing.assert_close(
            residual[:, a][inside], residual[:, b][inside], atol=1e-6, rtol=0
        )
    assert chroma_energy(residual * inside[:, None]).item() < 1e-12
    # The same weights without the option: the residual has colour, and its luminance is what
    # the luma encoder keeps (BT.601 weights).
    plain = StegoEncoder(StegoConfig(BITS, 32))
    plain.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        full = plain.eval()(images, torch.zeros(2, BITS)) - images
        kept = encoder(images, torch.zeros(2, BITS)) - images
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luminance = (full * weights).sum(1, keepdim=True)
    clipped = (kept[:, :1] - luminance).abs() > 1e-6
    assert clipped.float().mean() < 0.5  # only where images + luminance left [-1, 1]
    assert ((kept[:, :1] + images[:, :1]).abs()[clipped] > 0.9999).all()
    assert chroma_energy(full).item() > 1e-8


def test_luma_is_kept_in_the_model_file(tmp_path: Path) -> None:
    config = StegoConfig(BITS, 32, luma=True)
    path = save_stego(tmp_path / "m.safetensors", StegoEncoder(config), StegoDecoder(config))
    encoder, _ = load_stego(path)
    assert encoder.config.luma


def test_embed_keeps_16_bit_grayscale_and_gray_alpha(cli, model_file: Path, tmp_path: Path):
    """16-bit stays 16-bit (the change lands in the top 8 bits; the low ones survive), LA stays
    LA; PSNR is measured on what the decoder sees (the top 8 bits), not on a clipped copy."""
    root = tmp_path / "deep"
    root.mkdir()
    rng = np.random.default_rng(1)
    deep = np.linspace(0, 65535, 40 * 40).reshape(40, 40) + rng.integers(-200, 200, (40, 40))
    deep = np.clip(deep, 0, 65535).astype(np.uint16)
    Image.fromarray(deep).save(root / "deep.png")
    assert Image.open(root / "deep.png").mode == "I;16"
    la = rng.integers(0, 256, (32, 32, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(root / "la.png")
    out = tmp_path / "marked"
    result = cli("fingerprint-embed", root, "--encoder", model_file, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    saved = Image.open(out / "deep.png")
    assert saved.mode == "I;16"
    marked = np.asarray(saved, dtype=np.int64)
    change = marked - deep.astype(np.int64)
    inside = (marked > 0) & (marked < 65535)
    assert np.all(change[inside] % 257 == 0) and np.any(change != 0)
    top = lambda a: np.round(a / 257.0)  # noqa: E731
    mse = np.mean((top(marked) - top(deep.astype(np.float64))) ** 2)
    record = json.loads((out / "fingerprint.json").read_text())
    psnrs = [record["psnr_db"]["min"], record["psnr_db"]["max"]]
    assert any(abs(p - 10 * np.log10(255.0**2 / mse)) < 1e-6 for p in psnrs)
    assert marked.mean() == pytest.approx(deep.mean(), abs=257 * 3)  # not clipped to white
    saved_la = Image.open(out / "la.png")
    assert saved_la.mode == "LA"
    np.testing.assert_array_equal(np.asarray(saved_la)[..., 1], la[..., 1])


def test_embed_refuses_modes_it_cannot_keep(cli, model_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "cmyk"
    root.mkdir()
    Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(root / "c.tif")
    out = tmp_path / "marked"
    line = error_line(cli("fingerprint-embed", root, "--encoder", model_file, "--out", out))
    assert "is a CMYK image" in line and "convert it to RGB" in line
    assert not out.exists()


def test_ctrl_c_saves_after_the_step_and_restores_the_handler(tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)

    def interrupt(entry: dict) -> None:
        if entry["step"] == 1:  # a real SIGINT, as `timeout -s INT` or Ctrl-C sends
            signal.raise_signal(signal.SIGINT)

    config = replace(_train_config(4), snapshot_every=100)
    trainer = StegoTrainer(config, tmp_path / "run")
    trainer.run(on_log=interrupt)
    assert trainer.step == 1 and signal.getsignal(signal.SIGINT) is before
    # Saved at the stop although no snapshot was due, and resumable from there.
    assert (tmp_path / "run" / "stego.safetensors").is_file()
    resumed = start_or_resume(config, tmp_path / "run", resume=True)
    assert resumed.step == 1
    resumed.run()
    assert resumed.step == 4
