"""PRD (Sajjadi et al. 2018) against distributions whose curves are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gantk.errors import GantkError
from gantk.metrics.prd import f_beta, plot_prd, prd_curve, prd_from_features, slopes


def f(p: float, r: float, beta: float) -> float:
    return (1 + beta**2) * p * r / (beta**2 * p + r)


def blobs(modes: list[int], per_mode: int, seed: int) -> np.ndarray:
    """Tight clusters around far-apart corners: mode m sits at 100 * e_m."""
    rng = np.random.default_rng(seed)
    centres = 100.0 * np.eye(8)
    return np.concatenate([centres[m] + rng.normal(0, 0.1, (per_mode, 8)) for m in modes])


def test_slopes_span_both_ends_and_pass_through_one() -> None:
    lam = slopes(1001)
    assert lam[500] == pytest.approx(1.0, abs=1e-12)
    assert lam[0] < 1e-9 and lam[-1] > 1e9 and np.all(np.diff(lam) > 0)


def test_curve_of_half_the_modes_by_hand() -> None:
    # P uniform over 4 bins, Q uniform over 2 of them: alpha(l) = min(l, 2) / 2, beta = alpha / l.
    p, q = np.full(4, 0.25), np.array([0.5, 0.5, 0, 0])
    precision, recall = prd_curve(p, q, angles=101)
    lam = slopes(101)
    expected = np.minimum(lam, 2) / 2
    np.testing.assert_allclose(precision, expected, atol=1e-12)
    np.testing.assert_allclose(recall, np.minimum(expected / lam, 1), atol=1e-12)


def test_f_beta_takes_the_best_point_of_the_curve() -> None:
    precision, recall = np.array([1.0, 0.5, 0.0]), np.array([0.2, 0.5, 1.0])
    assert f_beta(precision, recall, 8) == pytest.approx(max(f(1, 0.2, 8), f(0.5, 0.5, 8)))
    assert f_beta(np.zeros(3), np.zeros(3), 8) == 0.0


def test_identical_sets_score_one() -> None:
    x = blobs([0, 1, 2, 3], 50, seed=0)
    result = prd_from_features(x, x.copy(), clusters=4, runs=2)
    assert result.f_beta == pytest.approx(1.0, abs=1e-9)
    assert result.f_beta_inv == pytest.approx(1.0, abs=1e-9)


def test_disjoint_sets_score_zero() -> None:
    real, fake = blobs([0, 1], 60, seed=0), blobs([2, 3], 60, seed=1)
    result = prd_from_features(real, fake, clusters=4, runs=2)
    assert result.f_beta == 0.0 and result.f_beta_inv == 0.0
    assert result.precision.max() == 0.0


def test_generator_covering_half_the_modes() -> None:
    # Real: 4 modes x 50; generated: 2 of those modes x 100. Precision reaches 1 (every sample is
    # on a real mode), recall stops at 1/2 (half the modes are missed).
    real, fake = blobs([0, 1, 2, 3], 50, seed=0), blobs([0, 1], 100, seed=1)
    result = prd_from_features(real, fake, clusters=4, runs=3)
    assert result.precision.max() == pytest.approx(1.0, abs=1e-9)
    assert result.recall.max() == pytest.approx(0.5, abs=1e-9)
    # Best points at l = 2 (p = 1, r = 1/2): F8 = 65/129, F1/8 = (65/64) * 0.5 / (1/64 + 0.5).
    assert result.f_beta == pytest.approx(f(1, 0.5, 8), abs=2e-3)
    assert result.f_beta_inv == pytest.approx(f(1, 0.5, 1 / 8), abs=2e-3)
    # ... and swapping the roles swaps precision and recall.
    swapped = prd_from_features(fake, real, clusters=4, runs=3)
    assert swapped.recall.max() == pytest.approx(1.0, abs=1e-9)
    assert swapped.precision.max() == pytest.approx(0.5, abs=1e-9)
    assert math.isclose(swapped.f_beta, result.f_beta_inv, abs_tol=2e-3)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"clusters": 1}, "--clusters 1 must be between 2"),
        ({"runs": 0}, "--runs must be at least 1"),
        ({"angles": 2}, "--angles must be at least 3"),
    ],
)
def test_bad_settings_are_user_errors(kw: dict, message: str) -> None:
    x = blobs([0, 1], 10, seed=0)
    with pytest.raises(GantkError, match=message):
        prd_from_features(x, x, **kw)


def test_unequal_sets_are_refused() -> None:
    with pytest.raises(GantkError, match="equal size, got 20 and 10"):
        prd_from_features(blobs([0, 1], 10, 0), blobs([0], 10, 1))


def test_plot_writes_a_png(tmp_path) -> None:
    x = blobs([0, 1], 20, seed=0)
    path = tmp_path / "prd.png"
    plot_prd({"G": prd_from_features(x, x, clusters=2, runs=1)}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command line --------------------------------------------------------------------------


def test_cli_prd_against_the_library(cli, tmp_path) -> None:
    import json

    import torch

    from gantk.metrics.distribution import feature_pass
    from gantk.metrics.features import load_feature_net
    from gantk.metrics.sources import open_source

    real, fake = "builtin:shapes?n=30", "builtin:digits?n=30&resolution=32"
    plot = tmp_path / "prd.png"
    result = cli("evaluate", "prd", real, fake, "--features", "random-inception", "--clusters",
                 "5", "--runs", "2", "--angles", "51", "--plot", plot, "--json", "--device",
                 "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    got = summary["metrics"]
    assert set(got) == {f"prd[random-inception]_{k}" for k in
                        ("f_8", "f_1/8", "max_precision", "max_recall")}  # fmt: skip
    assert len(summary["prd_curve"]["precision"]) == 51
    assert plot.read_bytes()[:4] == b"\x89PNG" and summary["plot"] == str(plot)
    # The same numbers straight from the library on the same features.
    net = load_feature_net("random-inception", None, "cpu")
    feats = [
        feature_pass(open_source(s, None, None, 0, 1.0, "cpu"), [net], ["random-inception"])[1]
        for s in (real, fake)
    ]
    expected = prd_from_features(*(f["random-inception"].double().numpy() for f in feats),
                                 clusters=5, runs=2, angles=51)  # fmt: skip
    assert got["prd[random-inception]_f_8"] == pytest.approx(expected.f_beta, abs=1e-9)
    assert got["prd[random-inception]_f_1/8"] == pytest.approx(expected.f_beta_inv, abs=1e-9)
    assert torch.is_tensor(feats[0]["random-inception"])


def test_cli_prd_errors(cli, tmp_path) -> None:
    from helpers import error_line

    result = cli("evaluate", "prd", "builtin:shapes?n=20", "builtin:shapes?n=30",
                 "--features", "random-inception", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2
    assert "equal size, got 20 and 30" in error_line(result)
    result = cli("evaluate", "fid", "builtin:shapes?n=20", "builtin:shapes?n=20", "--plot",
                 tmp_path / "p.png")  # fmt: skip
    assert result.exit_code == 2 and "--plot draws the PRD curve" in error_line(result)
    assert not (tmp_path / "p.png").exists()
