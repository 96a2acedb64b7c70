"""The classic attribution baselines: their helpers against independent computations, each
baseline on synthetic sources it can (and one set it cannot) tell apart, and its user errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gantk.attribution.baselines import (
    BASELINES,
    Baseline,
    azimuthal_average,
    make_baseline,
    noise_residual,
    normalized_correlation,
    spectral_profile,
)
from gantk.errors import GantkError

# ---- synthetic sources --------------------------------------------------------------------


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random smooth content in [0, 1]: blurred noise around mid-grey, a different scene per
    call, with no fine detail of its own (so any high-frequency signal comes from the source)."""
    x = ndimage.gaussian_filter(rng.standard_normal((h, w, 3)), sigma=(2.5, 2.5, 0))
    return 0.5 + 0.15 * x / x.std()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _fingerprint_sources(
    n_per_class: int, num_classes: int, size: int = 24, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Every source draws the same kind of content; what tells them apart is only a fixed,
    faint per-source noise pattern (the fingerprint) under fresh per-image noise."""
    rng = np.random.default_rng(seed)
    patterns = [0.03 * rng.standard_normal((size, size, 3)) for _ in range(num_classes)]
    images, labels = [], []
    for i in range(n_per_class * num_classes):
        c = i % num_classes
        x = _smooth(rng, size, size) + patterns[c] + 0.015 * rng.standard_normal((size, size, 3))
        images.append(_to_uint8(x))
        labels.append(c)
    return images, np.array(labels)


def _look_sources(
    n_per_class: int, size: int = 16, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Three sources that look different: a red square, a green disc, a blue stripe, each with
    jittered placement, brightness and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    images, labels = [], []
    for i in range(3 * n_per_class):
        c = i % 3
        x = np.full((size, size, 3), 0.3) + 0.08 * rng.standard_normal((size, size, 3))
        cy, cx = rng.integers(size // 3, size - size // 3, size=2)
        if c == 0:
            mask = (abs(yy - cy) < 4) & (abs(xx - cx) < 4)
        elif c == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
        else:
            mask = abs(xx - cx) < 2
        x[mask, c] += rng.uniform(0.4, 0.6)
        images.append(_to_uint8(x))
        labels.append(c)
    return images, np.array(labels)


def _upsampled_sources(n_per_class: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Source 0: smooth content plus white noise at full resolution, as a camera makes it.
    Source 1: the same, but its noise comes at half resolution, up-sampled 2x by pixel
    repetition (the simplest up-convolution), which starves the top frequencies. Native sizes
    (some non-square) are drawn independently of the source, so size cannot give it away."""
    rng = np.random.default_rng(seed)
    sizes = [(24, 24), (32, 32), (40, 40), (28, 36), (36, 24)]
    images, labels = [], []
    for i in range(2 * n_per_class):
        c = i % 2
        h, w = sizes[rng.integers(len(sizes))]
        if c == 0:
            noise = rng.standard_normal((h, w, 3))
        else:
            noise = rng.standard_normal((h // 2, w // 2, 3)).repeat(2, axis=0).repeat(2, axis=1)
        images.append(_to_uint8(_smooth(rng, h, w) + 0.03 * noise))
        labels.append(c)
    return images, np.array(labels)


def _power_law(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """An n x n gray image whose Fourier amplitude falls as 1/f**exponent (natural images: ~1),
    which looks alike at every scale."""
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    return np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) / f**exponent).real


def _split(images: list[np.ndarray], labels: np.ndarray, n_train: int):
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def _accuracy(model: Baseline, images: list[np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean(model.predict(images) == labels))


# ---- helpers against independent computations ---------------------------------------------


def test_azimuthal_average_by_hand():
    # 3x3: the centre is ring 0; the 4 edge neighbours (distance 1) and the 4 corners
    # (distance 1.41, rounds to 1) make ring 1.
    power = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(azimuthal_average(power), [4.0, (36.0 - 4.0) / 8])


@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (5, 2)])
def test_azimuthal_average_matches_brute_force(shape):
    power = np.random.default_rng(1).random(shape)
    h, w = shape
    rings: dict[int, list[float]] = {}
    for y in range(h):
        for x in range(w):
            r = round(((y - h // 2) ** 2 + (x - w // 2) ** 2) ** 0.5)
            rings.setdefault(r, []).append(power[y, x])
    expected = [np.mean(rings[r]) for r in range(max(rings) + 1)]
    np.testing.assert_allclose(azimuthal_average(power), expected)


def test_spectral_profile_shape_and_size_invariance():
    rng = np.random.default_rng(2)
    for h, w in [(16, 16), (33, 20), (64, 64)]:
        profile = spectral_profile(_to_uint8(rng.random((h, w, 3))), bins=32)
        assert profile.shape == (32,)
        assert np.all(np.isfinite(profile))
        assert abs(profile.mean()) < 1e-9
    # A gain change only shifts the log spectrum, which the normalisation removes.
    gray = rng.random((20, 24))
    np.testing.assert_allclose(spectral_profile(0.3 * gray), spectral_profile(gray), atol=1e-6)

    # Scale-invariant images give the same profile over normalised radius at 48 and 128 px,
    # and a clearly different one for a different spectral slope (mean of 4 images each; the
    # first two and last two bins hold few pixels and are left out).
    def mean_profile(n: int, exponent: float) -> np.ndarray:
        return np.mean([spectral_profile(_power_law(rng, n, exponent), 16) for _ in range(4)], 0)

    small, large, flatter = mean_profile(48, 1.0), mean_profile(128, 1.0), mean_profile(128, 0.5)
    assert np.abs(small - large)[2:-2].max() < 0.6
    assert np.abs(flatter - large)[2:-2].max() > 1.0


def test_normalized_correlation_is_pearson():
    rng = np.random.default_rng(3)
    a = rng.random((6, 5, 3))
    b = 0.5 * a + rng.random((6, 5, 3))
    r = normalized_correlation(a, b)
    assert isinstance(r, float)
    assert r == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    assert normalized_correlation(a, -3 * a + 1) == pytest.approx(-1.0)
    rows = normalized_correlation(a.reshape(6, -1), b.reshape(6, -1), axis=1)
    pairs = zip(a.reshape(6, -1), b.reshape(6, -1), strict=True)
    expected = [np.corrcoef(x, y)[0, 1] for x, y in pairs]
    np.testing.assert_allclose(rows, expected)
    assert normalized_correlation(np.ones(4), a.ravel()[:4]) == 0.0


def test_noise_residual_keeps_the_fingerprint_not_the_content():
    rng = np.random.default_rng(4)
    pattern = 0.03 * rng.standard_normal((32, 32, 3))
    content = _smooth(rng, 32, 32)
    residual = noise_residual(_to_uint8(content + pattern))
    assert residual.shape == (32, 32, 3)
    assert normalized_correlation(residual, pattern) > 0.6
    assert abs(normalized_correlation(residual, content)) < 0.2


# ---- each baseline separates what it should -----------------------------------------------


@pytest.mark.parametrize("name", ["knn", "eigenface", "eigenface-lr"])
def test_pixel_baselines_separate_sources_that_look_different(name):
    images, labels = _look_sources(25)
    tr_x, tr_y, te_x, te_y = _split(images, labels, 45)
    model = make_baseline(name).fit(tr_x, tr_y, num_classes=3)
    assert _accuracy(model, te_x, te_y) > 0.9


def test_prnu_separates_sources_by_fingerprint_alone():
    images, labels = _fingerprint_sources(30, num_classes=2)
    tr_x, tr_y, te_x, te_y = _split(images, labels, 40)
    model = make_baseline("prnu").fit(tr_x, tr_y, num_classes=2)
    assert _accuracy(model, te_x, te_y) > 0.9
    # The learned fingerprint is the planted one (up to the denoiser's high-pass); source 0's
    # pattern is the first draw of _fingerprint_sources(seed=0).
    rng = np.random.default_rng(0)
    planted = 0.03 * rng.standard_normal((24, 24, 3))
    assert normalized_correlation(model.fingerprints[0], planted) > 0.5
    assert abs(normalized_correlation(model.fingerprints[1], planted)) < 0.2


def test_spectral_separates_upconvolution_artefacts_at_mixed_native_sizes():
    images, labels = _upsampled_sources(30)
    tr_x, tr_y, te_x, te_y = _split(images, labels, 30)
    model = make_baseline("spectral").fit(tr_x, tr_y, num_classes=2)
    assert len({im.shape for im in te_x}) > 1  # the test set really mixes sizes
    assert _accuracy(model, te_x, te_y) > 0.9


@pytest.mark.parametrize("name", BASELINES)
def test_random_labels_give_chance_accuracy(name):
    # Negative control: a single source (one fingerprint, one kind of content) split into two
    # "sources" by coin flips. 120 held-out images put accuracy 0.8 more than 6 standard
    # deviations above chance (0.5).
    images, _ = _fingerprint_sources(160, num_classes=1, size=16, seed=5)
    labels = np.random.default_rng(6).integers(0, 2, size=len(images))
    tr_x, tr_y, te_x, te_y = _split(images, labels, 40)
    model = make_baseline(name).fit(tr_x, tr_y, num_classes=2)
    assert _accuracy(model, te_x, te_y) < 0.8


@pytest.mark.parametrize("name", BASELINES)
def test_scores_and_features_shapes(name):
    images, labels = _look_sources(8, size=24)
    model = make_baseline(name, seed=1).fit(images[:18], labels[:18], num_classes=3)
    test = images[18:]
    scores = model.scores(test)
    predicted = model.predict(test)
    assert scores.shape == (len(test), 3)
    assert np.all(np.isfinite(scores))
    assert predicted.dtype == np.int64 and predicted.shape == (len(test),)
    np.testing.assert_array_equal(np.argmax(scores, axis=1), predicted)
    features = model.features(test)
    assert features.ndim == 2 and features.shape[0] == len(test)
    assert np.all(np.isfinite(features))
    expected_dims = {"knn": 24 * 24 * 3, "prnu": 24 * 24 * 3, "spectral": 64}
    if name in expected_dims:
        assert features.shape[1] == expected_dims[name]
    else:
        assert features.shape[1] == 17  # eigenface: n_samples - 1 PCA components


def test_needs_same_size_flags():
    assert [make_baseline(n).needs_same_size for n in BASELINES] == [True] * 4 + [False]
    assert [make_baseline(n).name for n in BASELINES] == list(BASELINES)


def test_spectral_accepts_mixed_sizes_in_one_call():
    images, labels = _upsampled_sources(4)
    model = make_baseline("spectral").fit(images, labels, num_classes=2)
    mixed = [np.zeros((20, 30, 3), np.uint8), np.full((50, 50, 3), 128, np.uint8)]
    assert model.predict(mixed).shape == (2,)


def test_knn_default_k_is_odd_and_fits_the_smallest_source():
    images, labels = _look_sources(8)
    model = make_baseline("knn").fit(images, labels, num_classes=3)
    assert model.k_used == 5
    keep = np.r_[np.flatnonzero(labels != 2), np.flatnonzero(labels == 2)[:4]]
    model.fit([images[i] for i in keep], labels[keep], num_classes=3)
    assert model.k_used == 3  # min(5, 4) = 4, made odd


# ---- user errors ----------------------------------------------------------------------------


def test_unknown_name_lists_the_choices():
    with pytest.raises(GantkError) as err:
        make_baseline("resnet")
    for name in BASELINES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", BASELINES)
def test_use_before_fit(name):
    model = make_baseline(name)
    image = [np.zeros((16, 16, 3), np.uint8)]
    for method in (model.predict, model.scores, model.features):
        with pytest.raises(GantkError, match="fit"):
            method(image)


@pytest.mark.parametrize("name", ["knn", "eigenface", "prnu"])
def test_mixed_sizes_rejected(name):
    images, labels = _look_sources(4)
    mixed = [*images[:-1], np.zeros((20, 16, 3), np.uint8)]
    with pytest.raises(GantkError, match="resize them to one size"):
        make_baseline(name).fit(mixed, labels, num_classes=3)
    model = make_baseline(name).fit(images, labels, num_classes=3)
    with pytest.raises(GantkError, match="resize them to one size"):
        model.predict([images[0], np.zeros((20, 16, 3), np.uint8)])


@pytest.mark.parametrize("name", ["knn", "eigenface", "prnu"])
def test_predict_at_another_size_than_fit(name):
    images, labels = _look_sources(4, size=16)
    model = make_baseline(name).fit(images, labels, num_classes=3)
    with pytest.raises(GantkError, match=r"fitted on 16x16 .*resize them to one size"):
        model.predict([np.zeros((32, 32, 3), np.uint8)])


def test_bad_inputs():
    images, labels = _look_sources(4)
    model = make_baseline("knn")
    with pytest.raises(GantkError, match="no training images"):
        model.fit(images, labels, num_classes=4)
    with pytest.raises(GantkError, match=r"0\.\.1"):
        model.fit(images, labels, num_classes=2)
    with pytest.raises(GantkError, match="one per image"):
        model.fit(images, labels[:-1], num_classes=3)
    with pytest.raises(GantkError, match="uint8"):
        model.fit([im.astype(np.float32) for im in images], labels, num_classes=3)
    with pytest.raises(GantkError, match="RGB"):
        model.fit([im[..., 0] for im in images], labels, num_classes=3)
    with pytest.raises(GantkError, match="no images"):
        model.fit([], labels[:0], num_classes=3)


def test_eigenface_is_the_nearest_neighbour_in_pca_space():
    # Independent computation: PCA by SVD of the centred training pixels, then the nearest
    # training image's source.
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(12)]
    labels = np.array([0, 1, 2] * 4)
    tests = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(5)]
    model = make_baseline("eigenface").fit(images, labels, num_classes=3)
    x = np.stack([im.reshape(-1) for im in images]) / 255.0
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:11]  # n_samples - 1 components
    train = (x - mean) @ basis.T
    queries = (np.stack([im.reshape(-1) for im in tests]) / 255.0 - mean) @ basis.T
    nearest = np.argmin(((queries[:, None] - train[None]) ** 2).sum(-1), axis=1)
    scores = model.scores(tests)
    assert np.array_equal(scores.argmax(axis=1), labels[nearest])
    assert np.array_equal(scores.max(axis=1), np.ones(5))  # one-hot: the neighbour's source
