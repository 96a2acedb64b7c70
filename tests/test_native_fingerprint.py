"""The native-resolution fingerprint design: tiles, pooled decoding, the pilot and its grid
search, the JND map, per-image strength, and what fingerprint-embed records."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gantk.fingerprint import artificial, native, perceptual
from gantk.fingerprint.artificial import embed_folder, to_tensor
from gantk.fingerprint.stego import StegoConfig, StegoDecoder, StegoEncoder
from gantk.fingerprint.strength import MARGIN, REFINE_STRENGTH, SAFETY, Embedder, _Adam
from gantk.fingerprint.train_stego import save_stego

pytestmark = pytest.mark.usefixtures("one_thread")

TILE = 32
BITS = 8


def _models(luma: bool = True) -> tuple[StegoEncoder, StegoDecoder]:
    torch.manual_seed(0)
    config = StegoConfig(BITS, TILE, luma, "native", 36.0)
    return StegoEncoder(config).eval(), StegoDecoder(config).eval()


def _photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A textured test image: smooth colour fields plus fine noise, (1, 3, H, W) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noisy = np.clip(smooth.astype(np.int16) + rng.integers(-20, 21, smooth.shape), 0, 255)
    return to_tensor(noisy.astype(np.uint8))


# ----------------------------------------------------------------------------------------------
# Tiles and pooled decoding


def test_pooled_logits_are_the_mean_of_every_tile_read_on_its_own() -> None:
    _, decoder = _models()
    image = _photo(3 * TILE + 5, 2 * TILE + 9)
    with torch.no_grad():
        pooled = native.pooled_logits(decoder, image, offset=(3, 7))
        by_hand = [
            decoder(image[..., y : y + TILE, x : x + TILE])[0]
            for y in range(3, image.shape[-2] - TILE + 1, TILE)
            for x in range(7, image.shape[-1] - TILE + 1, TILE)
        ]
    assert len(by_hand) == 3 * 2
    torch.testing.assert_close(pooled, torch.stack(by_hand).mean(0), rtol=0, atol=1e-5)


def test_tiles_at_an_offset_that_leaves_no_whole_tile_is_empty() -> None:
    image = _photo(TILE + 3, TILE + 3)
    assert native.tiles_at(image, TILE, (4, 0)).shape == (0, 3, TILE, TILE)
    assert native.tiles_at(image, TILE, (3, 3)).shape == (1, 3, TILE, TILE)


def test_encoder_residual_repeats_the_fingerprint_map_with_the_tile_period() -> None:
    encoder, _ = _models(luma=False)
    bits = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.float32)
    flat = torch.zeros(1, 3, 2 * TILE, 3 * TILE)  # no content: the residual is the map's doing
    with torch.no_grad():
        change = encoder.residual(flat, bits)
        single = encoder(flat[..., :TILE, :TILE], bits) - flat[..., :TILE, :TILE]
    inner = change[..., TILE // 2 : TILE + TILE // 2, TILE : 2 * TILE]
    shifted = change[..., TILE // 2 : TILE + TILE // 2, 2 * TILE : 3 * TILE]
    # Away from the borders, one period to the right is the same residual.
    torch.testing.assert_close(inner[..., 8:-8, 8:-8], shifted[..., 8:-8, 8:-8], atol=1e-5, rtol=0)
    # And on a single tile, residual() is exactly what forward() adds.
    torch.testing.assert_close(change[..., :TILE, :TILE].shape, single.shape)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.residual(flat[..., :TILE, :TILE], bits), single, atol=1e-6, rtol=0
        )
    with pytest.raises(ValueError, match="multiples of 32"):
        encoder.residual(torch.zeros(1, 3, TILE + 1, TILE), bits)


def test_windowed_encoding_matches_one_pass_inside_each_window(monkeypatch) -> None:
    encoder, _ = _models()
    image = _photo(5 * TILE, 4 * TILE)
    bits = torch.ones(1, BITS)
    with torch.no_grad():
        whole = native.raw_residual(encoder, image, bits)
        monkeypatch.setattr(native, "WINDOW_TILES", 1)  # 1-tile windows, 1 tile of context
        windowed = native.raw_residual(encoder, image, bits)
    assert windowed.shape == whole.shape == (1, 1, 5 * TILE, 4 * TILE)
    # One tile of context is most of the U-Net's reach: the two differ far less than the
    # residual itself.
    assert (windowed - whole).abs().mean() < 0.1 * whole.abs().mean()


# ----------------------------------------------------------------------------------------------
# The residual's shape: budget, JND, band-pass, pilot


def test_unit_residual_has_the_budget_psnr_and_follows_the_jnd() -> None:
    encoder, _ = _models()
    height, width = 4 * TILE, 4 * TILE
    flat_left = _photo(height, width)
    flat_left[..., :, : width // 2] = 0.0  # left half flat mid-grey, right half textured
    change = native.unit_residual(encoder, flat_left, torch.ones(1, BITS), budget_db=40.0)
    rms = float(change.detach().square().mean().sqrt())
    assert 10 * math.log10(4 / rms**2) == pytest.approx(40.0, abs=1e-3)
    left, right = change[..., 8:-8, 8 : width // 2 - 8], change[..., 8:-8, width // 2 + 8 : -8]
    assert right.square().mean() > 2 * left.square().mean()


def test_jnd_map_matches_the_chou_li_model_on_flat_and_dark_fields() -> None:
    grey = torch.zeros(1, 3, 16, 16)  # [-1, 1] 0 = level 127.5
    black = -torch.ones(1, 3, 16, 16)
    # Flat: no gradient; luminance adaptation only: 3 + 3/128 (bg - 127) above mid-grey,
    # 17 (1 - sqrt(bg / 127)) + 3 below it; contrast masking max(0, 0.5 - 0.01 bg).
    bg = 127.5
    expected_grey = 3 / 128 * (bg - 127) + 3
    assert perceptual.jnd_map(grey)[0, 0, 8, 8].item() == pytest.approx(expected_grey, rel=1e-5)
    masking_black = 0.5
    expected_black = 20 + masking_black - 0.3 * masking_black
    assert perceptual.jnd_map(black)[0, 0, 8, 8].item() == pytest.approx(expected_black, rel=1e-5)
    edge = grey.clone()
    edge[..., 8:] = 0.6
    # Beside the edge (within the operators' 5x5 reach) contrast masking adds to it.
    assert perceptual.jnd_map(edge)[0, 0, 8, 7].item() > 3 * expected_grey


def test_band_pass_removes_a_constant_and_keeps_fine_detail() -> None:
    x = torch.full((1, 1, 40, 40), 0.3)
    assert perceptual.band_pass(x, 6.0).abs().max() < 1e-6
    checker = (torch.arange(40)[:, None] + torch.arange(40)[None]) % 2 * 2.0 - 1
    kept = perceptual.band_pass(checker[None, None].float(), 6.0)
    assert kept.abs().mean() > 0.95


def test_gaussian_blur_gradient_is_the_true_one() -> None:
    # The blur's hand-written backward (the symmetric kernel's adjoint) against finite
    # differences, with reflected borders and with the replicated ones of tiny inputs.
    for shape, sigma in (((1, 2, 9, 11), 1.0), ((2, 1, 3, 5), 1.5)):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, s=sigma: perceptual.gaussian_blur(t, s), (x,))
    # And the forward is an ordinary Gaussian blur: a centred impulse gives the kernel.
    impulse = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    impulse[..., 10, 10] = 1
    blurred = perceptual.gaussian_blur(impulse, 1.5)[0, 0]
    g = torch.exp(-(torch.arange(-10, 11, dtype=torch.float64) ** 2) / (2 * 1.5**2))
    g = torch.where(torch.arange(-10, 11).abs() <= 4, g, torch.zeros_like(g))  # radius 3 sigma
    g = g / g.sum()
    torch.testing.assert_close(blurred, g[:, None] * g[None, :], rtol=0, atol=1e-12)


def test_pilot_is_zero_mean_unit_rms_and_found_at_any_circular_shift() -> None:
    p = native.pilot(64)[0, 0].double()
    assert abs(float(p.mean())) < 1e-6 and float(p.square().mean()) == pytest.approx(1, rel=1e-5)
    for shift in ((0, 0), (5, 9), (63, 31)):
        rolled = torch.roll(p, shifts=shift, dims=(0, 1))
        cross = torch.fft.fft2(rolled) * torch.fft.fft2(p).conj()
        corr = torch.fft.ifft2(cross / cross.abs().clamp_min(1e-12)).real
        assert divmod(int(corr.argmax()), 64) == shift


# ----------------------------------------------------------------------------------------------
# Finding the grid


def _with_pilot(image: torch.Tensor, strength: float = 0.03) -> torch.Tensor:
    """The image with the pilot repeated from its origin (what embedding adds, without the
    fingerprint part)."""
    height, width = image.shape[-2:]
    tiled = native.pilot(TILE).repeat(1, 1, height // TILE + 1, width // TILE + 1)
    return (image + strength * tiled[..., :height, :width]).clamp(-1, 1)


def test_locate_finds_the_grid_after_a_crop_and_after_halving() -> None:
    marked = _with_pilot(_photo(12 * TILE, 12 * TILE, seed=3))
    grid = native.locate(marked, TILE)
    assert grid.offset == (0, 0) and grid.scale == 1.0 and grid.z >= native.LOCATE_Z
    cropped = marked[..., 37:, 90:]
    grid = native.locate(cropped, TILE)
    # The next tile boundary of the original lies (TILE - 37 % TILE) px into the crop.
    assert grid.offset == ((-37) % TILE, (-90) % TILE) and grid.scale == 1.0
    halved = F.interpolate(marked, scale_factor=0.5, mode="bilinear", antialias=True)
    grid = native.locate(halved, TILE)
    assert grid.scale == 2.0 and grid.z >= native.LOCATE_Z and grid.offset == (0, 0)
    # Cropped, then halved: the grid's offset in the magnified copy, to within a pixel.
    both = F.interpolate(cropped, scale_factor=0.5, mode="bilinear", antialias=True)
    grid = native.locate(both, TILE)
    expected = ((-37) % TILE, (-90) % TILE)
    assert grid.scale == 2.0
    assert all(abs(o - e) <= 1 for o, e in zip(grid.offset, expected, strict=True)), grid


def test_locate_finds_no_grid_in_an_image_without_pilot() -> None:
    for seed in range(4):
        grid = native.locate(_photo(8 * TILE, 10 * TILE, seed=seed), TILE)
        assert grid.z < native.LOCATE_Z and grid.offset == (0, 0) and grid.scale == 1.0


# ----------------------------------------------------------------------------------------------
# Strength


class _Lines(Embedder):
    """An embedder whose evidence is a known line in the strength for each bit (what a real
    decoder's pooled evidence roughly is, each bit its own slope and intercept): lets the test
    know the answer, max over bits of (MARGIN - intercept) / slope."""

    def __init__(self, slopes: list[float], offsets: list[float]) -> None:
        encoder, decoder = _models()
        super().__init__(encoder, decoder, "native", None, None)
        self.slopes, self.offsets = torch.tensor(slopes), torch.tensor(offsets)
        self.checks = 0

    def evidence_at(self, strength: float) -> torch.Tensor:
        self.checks += 1
        return self.slopes * strength + self.offsets

    def needed(self) -> float:
        return float(((MARGIN - self.offsets) / self.slopes).max())


def test_auto_strength_is_the_lowest_that_meets_the_margin() -> None:
    cases = [
        ([3.0], [-0.7]),  # one line
        ([0.8], [0.1]),
        ([20.0], [-15.0]),
        ([1.0, 4.0, 0.3, 2.0], [0.5, -3.0, 0.45, 1.0]),  # the weakest bit is not the steepest
        ([5.0, 0.5, 1.0], [-0.5, 0.2, -6.0]),  # needs 6.5
        ([2.0, 1.0], [1.0, 0.9]),  # every bit passes at any strength: the floor
    ]
    for slopes, offsets in cases:
        embedder = _Lines(slopes, offsets)
        needed = max(embedder.needed(), 0.05)
        chosen = embedder._search(embedder.evidence_at, math.inf)
        assert chosen is not None and float(embedder.evidence_at(chosen).min()) >= MARGIN
        assert needed <= chosen <= needed * SAFETY, (slopes, offsets, chosen, needed)
        # Lines are found in a few checks: the first, a second to draw them, their answer (and
        # the assertion's own check above).
        assert embedder.checks <= 4 + 1, (slopes, offsets, embedder.checks)


def test_auto_strength_gives_none_when_even_the_cap_is_too_weak() -> None:
    embedder = _Lines([1.0, 3.0], [-0.4, 0.0])  # needs 0.9
    assert embedder._search(embedder.evidence_at, 0.5) is None
    assert embedder._search(embedder.evidence_at, 2.0) is not None
    # A bit read the wrong way more surely the stronger the change: no strength helps; the
    # search doubles up to the cap, or gives up as soon as the answer is past give_up_above.
    falling = _Lines([1.0, -0.5], [0.0, 0.2])
    assert falling._search(falling.evidence_at, 50.0) is None and falling.checks == 7
    falling.checks = 0
    assert falling._search(falling.evidence_at, 50.0, give_up_above=2.0) is None
    assert falling.checks == 2
    # A bit whose evidence is noise until the strength is high (no grid found before): found.
    late = _Lines([1.0, 1.0], [0.0, 0.0])
    late.evidence_at = lambda s: torch.tensor([s, -1.0 if s < 3.5 else 1.0])  # type: ignore
    found = late._search(late.evidence_at, 50.0)
    assert found is not None and 3.5 <= found <= 3.5 * SAFETY


def test_refinement_adam_takes_torch_adams_steps() -> None:
    target = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    ours, theirs = torch.zeros(5, 7), torch.zeros(5, 7, requires_grad=True)
    adam, reference = _Adam(ours, 0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(6):
        adam.step(2 * (ours - target))  # the gradient of the squared distance
        reference.zero_grad()
        (theirs - target).square().sum().backward()
        reference.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_refinement_raises_the_weakest_bits_evidence_at_the_same_energy() -> None:
    encoder, decoder = _models()
    embedder = Embedder(encoder, decoder, "native", None, None, precision="fp32")
    image = _photo(4 * TILE, 4 * TILE)
    bits = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.float32)
    signs = bits[0] * 2 - 1
    with torch.no_grad():
        raw = embedder.raw_residual(image, bits)
    refined = embedder.refine(image, raw, bits, strength=2.0)

    def evidence(change: torch.Tensor) -> torch.Tensor:  # per bit, the clean image's
        with torch.no_grad():
            return native.pooled_logits(decoder, image + 2.0 * change) * signs

    before = embedder.shaped(image, raw)
    after = embedder.shaped(image, refined)
    # The shaping holds the budget: the same energy, moved to where the decoder reads it.
    assert float(after.square().mean()) == pytest.approx(float(before.square().mean()), rel=1e-4)
    assert float(evidence(after).min()) > float(evidence(before).min())
    assert float(evidence(after).mean()) > float(evidence(before).mean())


def test_a_change_the_first_refinement_cannot_fix_is_refined_again_stronger(monkeypatch) -> None:
    encoder, decoder = _models()
    embedder = Embedder(encoder, decoder, "native", None, None)
    image = _photo(4 * TILE, 4 * TILE)
    bits = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.float32)
    refined_at: list[float] = []

    def refine(image, raw, bits, at, weight=None):
        refined_at.append(at)
        return raw.flip(-1)

    def evidence(marked: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        # Nothing reads before the second refinement; after it, evidence grows with strength.
        amplitude = float((marked - image).abs().mean()) * 40.0
        return torch.full((2, BITS), amplitude if len(refined_at) >= 2 else -1.0)

    monkeypatch.setattr(embedder, "refine", refine)
    monkeypatch.setattr(embedder, "evidence", evidence)
    done = embedder.embed(image, bits)
    assert refined_at == [REFINE_STRENGTH, 2 * REFINE_STRENGTH]
    assert done.flagged is None and evidence(done.image, bits).min() >= MARGIN


def test_auto_strength_meets_its_margin_on_a_real_image(monkeypatch) -> None:
    encoder, decoder = _models()
    embedder = Embedder(encoder, decoder, "native", None, None)
    image = _photo(4 * TILE, 4 * TILE)
    bits = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.float32)
    # Make the decoder's evidence grow with the fingerprint's amplitude: logits = k * the mean
    # absolute change of the image (so the sign is right and the margin is known).
    signs = bits[0] * 2 - 1

    def margin(marked: torch.Tensor, code: torch.Tensor) -> float:
        return float((marked - image).abs().mean()) * 40.0

    def evidence(marked: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return torch.full((2, BITS), margin(marked, code))

    monkeypatch.setattr(embedder, "evidence", evidence)
    done = embedder.embed(image, bits)
    assert done.flagged is None and margin(done.image, bits) >= MARGIN
    assert margin(embedder.embed(image, bits).image, bits) == margin(done.image, bits)
    assert signs.shape == (BITS,)


# ----------------------------------------------------------------------------------------------
# What fingerprint-embed records


def _folder(tmp_path: Path, count: int = 3, side: int = 3 * TILE) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(parents=True)
    for i in range(count):
        arr = ((_photo(side, side + 8 * i, seed=i)[0].permute(1, 2, 0) + 1) * 127.5).round()
        Image.fromarray(arr.byte().numpy()).save(folder / f"p{i}.png")
    return folder


def test_flagged_images_are_warned_about_and_recorded(tmp_path: Path) -> None:
    encoder, decoder = _models()  # untrained: no strength within 60 dB makes it robust
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    warnings: list[str] = []
    code = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8)
    result = embed_folder(_folder(tmp_path), tmp_path / "out", encoder, model, code,
                          warn=warnings.append, decoder=decoder, min_psnr=60.0)  # fmt: skip
    record = json.loads((tmp_path / "out" / "fingerprint.json").read_text())
    assert record == result.record
    assert record["design"] == "native" and record["strength"]["mode"] == "auto"
    assert sorted(record["flagged"]) == ["p0.png", "p1.png", "p2.png"]
    assert len(warnings) == 3 and all("--min-psnr 60 dB" in w for w in warnings)
    rows = list(csv.DictReader((tmp_path / "out" / "embedding.csv").open()))
    assert [r["image"] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    for row in rows:
        # Embedded at the cap: 60 dB before rounding to 8 bits (which adds its own error).
        assert float(row["psnr_db"]) > 50 and row["flagged"]
        assert 0 <= float(row["delta_e"]) < 0.5
    assert record["psnr_db"]["min"] == pytest.approx(min(float(r["psnr_db"]) for r in rows),
                                                     rel=1e-4)  # fmt: skip


def test_flagged_images_past_the_first_few_are_warned_about_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artificial, "FLAGGED_NAMED", 1)
    encoder, decoder = _models()
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    warnings: list[str] = []
    code = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8)
    embed_folder(_folder(tmp_path), tmp_path / "out", encoder, model, code,
                 warn=warnings.append, decoder=decoder, min_psnr=60.0)  # fmt: skip
    record = json.loads((tmp_path / "out" / "fingerprint.json").read_text())
    assert len(record["flagged"]) == 3  # the record still names every one
    assert len(warnings) == 2 and "--min-psnr 60 dB" in warnings[0]
    assert warnings[1].startswith("2 more images were fingerprinted weaker than auto wanted")
    assert "(3 of 3 in all)" in warnings[1]


def test_fixed_strength_scales_the_residual_and_is_recorded(tmp_path: Path) -> None:
    encoder, decoder = _models()
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    code = np.zeros(BITS, dtype=np.uint8)
    psnrs = {}
    for strength in (1.0, 0.5):
        out = tmp_path / f"out{strength}"
        embed_folder(_folder(tmp_path / str(strength), 1), out, encoder, model, code,
                     decoder=decoder, strength=strength)  # fmt: skip
        record = json.loads((out / "fingerprint.json").read_text())
        assert record["strength"]["mode"] == "fixed" and record["strength"]["mean"] == strength
        assert record["flagged"] == []
        psnrs[strength] = record["psnr_db"]["mean"]
    # Half the strength: 6 dB more (the budget is 36 dB at strength 1), up to 8-bit rounding.
    assert psnrs[1.0] == pytest.approx(36.0, abs=0.3)
    assert psnrs[0.5] - psnrs[1.0] == pytest.approx(20 * math.log10(2), abs=0.4)


def test_embed_then_decode_reads_the_grid_of_a_cropped_copy(cli, tmp_path: Path) -> None:
    encoder, decoder = _models()
    model = save_stego(tmp_path / "m.safetensors", encoder, decoder)
    folder = _folder(tmp_path, 1, side=10 * TILE)
    result = cli("fingerprint-embed", folder, "--out", tmp_path / "out", "--encoder", model,
                 "--strength", "1", "--seed", "3", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    marked = np.asarray(Image.open(tmp_path / "out" / "p0.png"))
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.fromarray(marked[19:, 45:]).save(crops / "c.png")
    decoded = cli("fingerprint-decode", crops, "--decoder", model, "--expect", tmp_path / "out",
                  "--json", "--quiet")  # fmt: skip
    assert decoded.exit_code == 0, decoded.stderr
    row = json.loads(decoded.stdout)["images"][0]
    assert row["offset"] == [(-19) % TILE, (-45) % TILE] and row["scale"] == 1.0
    rows, cols = (marked.shape[0] - 19 - 13) // TILE, (marked.shape[1] - 45 - 19) // TILE
    assert row["pilot_z"] >= native.LOCATE_Z and row["tiles"] == rows * cols
    assert json.loads(decoded.stdout)["summary"]["design"] == "native"


def test_bad_strength_and_min_psnr_are_refused_before_anything_is_written(cli, tmp_path) -> None:
    folder = _folder(tmp_path, 1)
    for args, message in ((["--strength", "strong"], "--strength must be auto or a number"),
                          (["--strength", "nan"], "--strength must be auto or a number"),
                          (["--strength", "-1"], "--strength must be auto or a number"),
                          (["--min-psnr", "5"], "--min-psnr must be in 10..80 dB"),
                          (["--design", "tiles"], "--design must be native or paper")):  # fmt: skip
        result = cli("fingerprint-embed", folder, "--out", tmp_path / "o", *args)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "o").exists()


def test_training_ssim_equals_the_reported_ssim_on_luminance() -> None:
    from gantk.metrics.image_quality import ssim

    a, b = _photo(40, 56, seed=1), _photo(40, 56, seed=2)
    mixed = (0.9 * a + 0.1 * b).clamp(-1, 1)
    expected = ssim(perceptual.luminance(a)[0, 0].double().numpy(),
                    perceptual.luminance(mixed)[0, 0].double().numpy())  # fmt: skip
    assert float(perceptual.ssim_luma(a, mixed)) == pytest.approx(expected, abs=1e-5)


def test_worst_bit_loss_is_the_weakest_bits_shortfall_from_the_margin() -> None:
    from gantk.fingerprint.train_native import MARGIN_TARGET, SOFTMIN_SHARPNESS, worst_bit_loss

    bits = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    pooled = torch.tensor([[3.0, -2.5, 0.2, -4.0], [-5.0, -5.0, 5.0, 5.0]])
    signed = (pooled * (bits * 2 - 1)).double().numpy()
    softmin = -np.log(np.exp(-SOFTMIN_SHARPNESS * signed).sum(axis=1)) / SOFTMIN_SHARPNESS
    expected = np.log1p(np.exp(MARGIN_TARGET - softmin)).mean()
    assert float(worst_bit_loss(pooled, bits)) == pytest.approx(expected, rel=1e-6)
    # The first canvas's weak bit (0.2) owns its term: raising it lowers the loss, raising a
    # strong one hardly moves it.
    weak, strong = pooled.clone(), pooled.clone()
    weak[0, 2], strong[0, 0] = 1.2, 4.0
    base = float(worst_bit_loss(pooled, bits))
    assert base - float(worst_bit_loss(weak, bits)) > 0.25  # (mean over the two canvases)
    assert base - float(worst_bit_loss(strong, bits)) < 1e-3


def test_native_training_with_the_margin_weight_runs_and_records_it(tmp_path: Path) -> None:
    from gantk.fingerprint.stego_runs import start_or_resume
    from gantk.fingerprint.train_stego import StegoTrainConfig

    config = StegoTrainConfig("builtin:photos?n=16&resolution=64", bits=8, resolution=32,
                              batch_size=2, steps=2, snapshot_every=2, log_every=1,
                              design="native", margin_weight=2.0, precision="fp32")  # fmt: skip
    trainer = start_or_resume(config, tmp_path / "run", False)
    trainer.run()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["margin_weight"] == 2.0
    entries = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert len(entries) == 2 and all(math.isfinite(e["bce"]) for e in entries)
    with pytest.raises(Exception, match="--margin-weight"):
        StegoTrainConfig("x", design="native", margin_weight=-1.0).validate()
