"""Classic baselines for attributing an image to the source (GAN or real) that made it.

These are the non-learned-fingerprint rows of the attribution table of Yu et al., *Attributing
fake images to GANs* (thesis ch. 4, Table 4.1), plus the spectral detector that later work uses as
a baseline:

``knn``
    k-nearest neighbours on raw pixels.
``eigenface``
    PCA on raw pixels ("Eigenfaces"), then the nearest training image in PCA space.
``eigenface-lr``
    Whitened PCA, then logistic regression on the coefficients (a stronger variant).
``prnu``
    Marra et al. 2019, *Do GANs leave artificial fingerprints?*: a source's fingerprint is the
    mean noise residual of its images; an image goes to the source whose fingerprint correlates
    best with its own residual.
``spectral``
    Durall et al. 2020, *Watch your up-convolution*: the azimuthally averaged log power spectrum
    (a 1-D profile over frequency), then logistic regression.

Every baseline takes RGB ``uint8`` images of shape ``(H, W, 3)``. ``knn``, the eigenfaces and
``prnu`` compare images pixel by pixel, so all their images must have one size
(:attr:`Baseline.needs_same_size`); the caller resizes them. ``spectral`` works on each image at
its native size, because resizing would itself change the spectrum it looks at.

Build one with :func:`make_baseline`; the helpers :func:`azimuthal_average`,
:func:`spectral_profile`, :func:`noise_residual` and :func:`normalized_correlation` are public so
that the features can be inspected and plotted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from gantk.errors import GantkError
from gantk.io.images import LUMA_WEIGHTS

__all__ = [
    "BASELINES",
    "Baseline",
    "EigenfaceBaseline",
    "EigenfaceLogisticBaseline",
    "KNNBaseline",
    "PRNUBaseline",
    "SpectralBaseline",
    "azimuthal_average",
    "make_baseline",
    "noise_residual",
    "normalized_correlation",
    "spectral_profile",
]

BASELINES = ("knn", "eigenface", "eigenface-lr", "prnu", "spectral")

# ITU-R BT.601 luma weights: the usual RGB -> grayscale conversion (PIL's "L" mode uses them too).
_LUMA = np.array(LUMA_WEIGHTS)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1]; float images are taken to be in [0, 1] already."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64)
    raise GantkError(
        f"expected a uint8 image (or float in [0, 1]), got dtype {arr.dtype}; convert it first"
    )


def _grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) gray -> (H, W) float64 luma in [0, 1]."""
    arr = _as_float_image(image)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr @ _LUMA
    if arr.ndim == 2:
        return arr
    raise GantkError(f"expected an (H, W, 3) RGB or (H, W) gray image, got shape {arr.shape}")


def azimuthal_average(power: np.ndarray) -> np.ndarray:
    """Mean of a centred 2-D spectrum over rings of integer radius around its centre.

    ``power`` is a 2-D array whose zero frequency sits at ``(H // 2, W // 2)``, where
    ``np.fft.fftshift`` puts it for even and odd sizes alike. Pixel ``(y, x)`` belongs to ring
    ``round(hypot(y - H // 2, x - W // 2))``. Returns the ring means for radius ``0 .. R``, R the
    rounded distance to the farthest corner; rounding (rather than truncating) centres each ring
    on its integer radius, and no ring in ``0 .. R`` is ever empty.
    """
    arr = np.asarray(power, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise GantkError(f"azimuthal_average needs a non-empty 2-D array, got shape {arr.shape}")
    h, w = arr.shape
    yy, xx = np.indices((h, w))
    ring = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(np.int64).ravel()
    sums = np.bincount(ring, weights=arr.ravel())
    counts = np.bincount(ring)
    return sums / counts


def spectral_profile(image: np.ndarray, bins: int = 64) -> np.ndarray:
    """Durall et al.'s spectral feature of one image: a normalised 1-D log power profile.

    Grayscale -> 2-D FFT (orthonormal, so white noise has the same power at every image size) ->
    ``log(|F|² + 1e-10)`` centred with ``fftshift`` -> :func:`azimuthal_average` -> resampled
    with ``np.interp`` to ``bins`` points over the normalised radius ``[0, 1]`` (ring radius /
    largest ring radius), so that images of different native sizes give comparable profiles.

    Each profile then has its mean subtracted. A gain (contrast) change multiplies the power by
    a constant, and so does a change of image size for natural images, so both only shift the
    log profile; subtracting the mean removes that shift. Durall et al. min-max scale instead (and
    a z-score would do likewise), but dividing by the spread throws away how steeply the power
    falls with frequency, which is what up-sampling alters, and blows up the noise of nearly flat
    (noise-like) spectra. Rings are in pixel units, so for non-square images a ring mixes
    slightly different frequencies along x and y.
    """
    if bins < 2:
        raise GantkError(f"spectral_profile needs at least 2 bins, got {bins}")
    gray = _grayscale(image)
    spectrum = np.fft.fftshift(np.fft.fft2(gray, norm="ortho"))
    # eps keeps log finite where a frequency has exactly no power (e.g. a constant image).
    log_power = np.log(np.abs(spectrum) ** 2 + 1e-10)
    rings = azimuthal_average(log_power)
    if rings.size == 1:  # a 1x1 image has only the DC ring
        profile = np.full(bins, rings[0])
    else:
        radius = np.linspace(0.0, 1.0, rings.size)
        profile = np.interp(np.linspace(0.0, 1.0, bins), radius, rings)
    return profile - profile.mean()


def _noise_variance(channel: np.ndarray) -> float:
    """Donoho's robust noise estimate: (median |HH| / 0.6745)², HH the finest diagonal Haar
    coefficients, which hold almost only noise in natural images."""
    h, w = channel.shape
    c = channel[: h - h % 2, : w - w % 2]
    hh = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2.0
    sigma = float(np.median(np.abs(hh))) / 0.6745 if hh.size else 0.0
    # Never below uint8 quantisation noise, (1/255)²/12: every stored image has at least that, and
    # a zero estimate (clean synthetic images) would otherwise zero the whole residual.
    return max(sigma * sigma, (1.0 / 255.0) ** 2 / 12.0)


def noise_residual(image: np.ndarray) -> np.ndarray:
    """The noise residual ``x - denoise(x)`` of one image, per channel, on the [0, 1] scale.

    ``image`` is ``(H, W, 3)`` (or ``(H, W)``) uint8, or float in [0, 1]; the result is float64 of
    the same shape. The denoiser is an adaptive (Wiener) filter in a 3x3 window with reflected
    borders: ``denoise(x) = m + max(v - n, 0) / max(v, n) · (x - m)``, with ``m`` and ``v`` the
    local mean and variance and ``n`` the channel's noise variance (:func:`_noise_variance`). It
    is the spatial counterpart of the wavelet-domain Wiener filter of the PRNU literature (Lukáš
    et al. 2006), deterministic, and needs no PyWavelets. So the residual is
    ``(x - m) · min(n / v, 1)``: all of the high-pass signal in flat regions, where a fingerprint
    is visible, and a shrunken share in textured ones, where content would swamp it.
    """
    x = _as_float_image(image)
    if x.ndim not in (2, 3):
        raise GantkError(f"expected an (H, W, 3) or (H, W) image, got shape {x.shape}")
    channels = x[..., None] if x.ndim == 2 else x
    out = np.empty_like(channels)
    for c in range(channels.shape[2]):
        ch = channels[..., c]
        mean = ndimage.uniform_filter(ch, size=3, mode="reflect")
        var = np.maximum(ndimage.uniform_filter(ch * ch, size=3, mode="reflect") - mean**2, 0.0)
        noise = _noise_variance(ch)
        out[..., c] = (ch - mean) * (noise / np.maximum(var, noise))
    return out[..., 0] if x.ndim == 2 else out


def _standardize_rows(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its norm; an all-constant row stays all zero."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def normalized_correlation(
    a: np.ndarray, b: np.ndarray, axis: int | None = None
) -> float | np.ndarray:
    """Normalised cross-correlation: the inner product of zero-mean, unit-norm ``a`` and ``b``.

    With ``axis=None`` both arrays are flattened and one float comes back (equal to Pearson's r,
    ``np.corrcoef(a.ravel(), b.ravel())[0, 1]``). With an ``axis`` the correlation is taken along
    it, with numpy broadcasting over the other axes, and an array comes back. A constant input
    has no defined correlation; it gives 0 here (no evidence either way) rather than NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if axis is None:
        if a.size != b.size:
            raise GantkError(f"cannot correlate arrays of {a.size} and {b.size} elements")
        a, b, axis = a.ravel(), b.ravel(), 0
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    num = np.sum(a * b, axis=axis)
    den = np.sqrt(np.sum(a * a, axis=axis) * np.sum(b * b, axis=axis))
    r = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return float(r) if r.ndim == 0 else r


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


class Baseline(ABC):
    """A source classifier: :meth:`fit` on labelled images, then :meth:`predict` new ones.

    Labels are source indices ``0 .. num_classes - 1``; every source needs at least one training
    image. :meth:`scores` gives one column per source (higher = more likely) and
    :meth:`predict` is its argmax (ties go to the lower index); :meth:`features` is the
    representation the baseline classifies, e.g. for a Fréchet-distance ratio between sources.
    """

    name: str = ""
    needs_same_size: bool = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.num_classes = 0
        self._fitted = False
        self._shape: tuple[int, ...] | None = None  # the one image size of same-size baselines

    # ---- public interface ----

    def fit(self, images: Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> Baseline:
        """Learn from ``images`` with source ``labels`` (ints in ``0 .. num_classes - 1``)."""
        self._fitted = False  # a failed refit must not leave a half-updated model usable
        arrays = self._check_images(images, fitting=True)
        y = self._check_labels(labels, len(arrays), num_classes)
        if self.needs_same_size:
            self._shape = arrays[0].shape
        self._fit(arrays, y, num_classes)
        self.num_classes = num_classes
        self._fitted = True
        return self

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The most likely source of each image: int64 ``(N,)``."""
        return np.argmax(self.scores(images), axis=1).astype(np.int64)

    def scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Float ``(N, num_classes)``, higher = more likely that source made the image."""
        arrays = self._check_images(images, fitting=False)
        return self._scores(arrays)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Float ``(N, D)``: the representation the baseline classifies."""
        arrays = self._check_images(images, fitting=False)
        return self._features(arrays)

    # ---- what subclasses implement ----

    @abstractmethod
    def _fit(self, images: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None: ...

    @abstractmethod
    def _scores(self, images: list[np.ndarray]) -> np.ndarray: ...

    @abstractmethod
    def _features(self, images: list[np.ndarray]) -> np.ndarray: ...

    # ---- shared plumbing ----

    def _expand(self, classes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Classifier columns (one per class it saw) -> one column per source."""
        out = np.zeros((values.shape[0], self.num_classes), dtype=np.float64)
        out[:, np.asarray(classes, dtype=np.int64)] = values
        return out

    def _check_images(self, images: Sequence[np.ndarray], fitting: bool) -> list[np.ndarray]:
        if not fitting and not self._fitted:
            raise GantkError(f"the {self.name} baseline is not fitted yet; call fit() first")
        arrays = [np.asarray(im) for im in images]
        if not arrays:
            raise GantkError(f"the {self.name} baseline got no images; pass at least one")
        for im in arrays:
            if im.ndim != 3 or im.shape[2] != 3 or im.shape[0] < 1 or im.shape[1] < 1:
                raise GantkError(
                    f"expected RGB images of shape (H, W, 3), got shape {im.shape}; "
                    "convert them to RGB first"
                )
            if im.dtype != np.uint8:
                raise GantkError(
                    f"expected uint8 images (0-255), got dtype {im.dtype}; convert them first"
                )
        if self.needs_same_size:
            shapes = sorted({im.shape for im in arrays})
            if len(shapes) > 1:
                sizes = ", ".join(_size(s) for s in shapes[:3]) + (", …" if len(shapes) > 3 else "")
                raise GantkError(
                    f"the {self.name} baseline compares pixels, but the images differ in size "
                    f"({sizes}); resize them to one size first"
                )
            if not fitting and arrays[0].shape != self._shape:
                assert self._shape is not None
                raise GantkError(
                    f"the {self.name} baseline was fitted on {_size(self._shape)} images but got "
                    f"{_size(arrays[0].shape)}; resize them to one size first"
                )
        return arrays

    def _check_labels(self, labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
        if int(num_classes) != num_classes or num_classes < 2:
            raise GantkError(f"attribution needs at least 2 sources, got num_classes={num_classes}")
        y = np.asarray(labels)
        if y.shape != (n,):
            raise GantkError(
                f"expected {n} labels (one per image), got an array of shape {y.shape}"
            )
        integral = y.dtype.kind in "iub" or (
            y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))
        )
        if not integral:
            raise GantkError(f"labels must be integer source indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= num_classes:
            raise GantkError(
                f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}; "
                "check num_classes"
            )
        missing = np.setdiff1d(np.arange(num_classes), y)
        if missing.size:
            raise GantkError(
                f"source(s) {', '.join(map(str, missing[:5]))} have no training images; "
                "give every source at least one"
            )
        return y


def _pixels(images: list[np.ndarray]) -> np.ndarray:
    """(N, H·W·3) float32 in [0, 1]; float32 halves the memory of the stored training set."""
    return np.stack([im.reshape(-1) for im in images]).astype(np.float32) / np.float32(255.0)


class KNNBaseline(Baseline):
    """k-nearest neighbours (Euclidean) on raw pixels scaled to [0, 1].

    ``k`` defaults to ``min(5, smallest source's training count)``, minus one if that is even:
    1 (the plain nearest neighbour) is the noisiest choice, 5 is scikit-learn's default, more
    neighbours than the smallest source has would let it lose every vote, and an odd ``k`` cannot
    tie between two sources. Scores are the neighbours' vote fractions.
    """

    name = "knn"
    needs_same_size = True

    def __init__(self, seed: int = 0, k: int | None = None) -> None:
        super().__init__(seed)
        if k is not None and k < 1:
            raise GantkError(f"k must be at least 1, got {k}")
        self.k = k
        self.k_used = 0
        self._model: KNeighborsClassifier | None = None

    def _fit(self, images: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
        if self.k is not None:
            k = min(self.k, len(images))
        else:
            k = min(5, int(np.bincount(labels).min()))
            if k % 2 == 0:
                k -= 1
        # Brute force: trees do not help in thousands of dimensions.
        self._model = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
        self._model.fit(_pixels(images), labels)
        self.k_used = k

    def _scores(self, images: list[np.ndarray]) -> np.ndarray:
        assert self._model is not None
        proba = self._model.predict_proba(_pixels(images))
        return self._expand(self._model.classes_, proba)

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        return _pixels(images)


class EigenfaceBaseline(Baseline):
    """Eigenfaces (Turk & Pentland 1991), the baseline of thesis Table 4.1: PCA on raw pixels,
    then the nearest training image (Euclidean) in the space of PCA coefficients.

    ``n_components = min(max_components, n_samples - 1, n_features)`` (150 by default, enough for
    the sets of Table 4.1). Scores are one-hot on the nearest neighbour's source. Features are the
    PCA coefficients. ``eigenface-lr`` (:class:`EigenfaceLogisticBaseline`) is a stronger variant.
    """

    name = "eigenface"
    needs_same_size = True
    whiten = False

    def __init__(self, seed: int = 0, max_components: int = 150) -> None:
        super().__init__(seed)
        if max_components < 1:
            raise GantkError(f"max_components must be at least 1, got {max_components}")
        self.max_components = max_components
        self._pca: PCA | None = None
        self._clf: KNeighborsClassifier | LogisticRegression | None = None

    def _classifier(self) -> KNeighborsClassifier | LogisticRegression:
        return KNeighborsClassifier(n_neighbors=1, algorithm="brute")

    def _fit(self, images: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
        x = _pixels(images)
        n_components = max(1, min(self.max_components, x.shape[0] - 1, x.shape[1]))
        self._pca = PCA(n_components=n_components, whiten=self.whiten, random_state=self.seed)
        coeffs = self._pca.fit_transform(x)
        self._clf = self._classifier()
        self._clf.fit(coeffs, labels)

    def _scores(self, images: list[np.ndarray]) -> np.ndarray:
        assert self._clf is not None
        proba = self._clf.predict_proba(self._features(images))
        return self._expand(self._clf.classes_, proba)

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        assert self._pca is not None
        return np.ascontiguousarray(self._pca.transform(_pixels(images)), dtype=np.float64)


class EigenfaceLogisticBaseline(EigenfaceBaseline):
    """Whitened PCA coefficients and multinomial logistic regression: as simple as the classic
    recogniser, less sensitive to the noisy trailing components (its L2 penalty damps them), and
    stronger than the paper's baseline; gives calibrated per-source probabilities as scores."""

    name = "eigenface-lr"
    whiten = True

    def _classifier(self) -> LogisticRegression:
        return LogisticRegression(max_iter=2000, random_state=self.seed)


class PRNUBaseline(Baseline):
    """Marra et al. 2019: the fingerprint of a source is the mean noise residual
    (:func:`noise_residual`) of its training images, and an image is attributed to the source
    whose fingerprint has the highest :func:`normalized_correlation` with its own residual.

    Scores are those correlations (in [-1, 1]). Features are the flattened residuals, the space
    the fingerprints live in (the correlations with the fitted fingerprints are :meth:`scores`).
    """

    name = "prnu"
    needs_same_size = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.fingerprints: np.ndarray | None = None  # (num_classes, H, W, 3)
        self._unit_fingerprints: np.ndarray | None = None  # (num_classes, H·W·3), NCC-ready

    def _fit(self, images: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
        # Running sums: memory is one residual per source, not one per training image.
        sums = np.zeros((num_classes, *images[0].shape), dtype=np.float64)
        for im, label in zip(images, labels, strict=True):
            sums[label] += noise_residual(im)
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        self.fingerprints = sums / counts[:, None, None, None]
        self._unit_fingerprints = _standardize_rows(self.fingerprints.reshape(num_classes, -1))

    def _scores(self, images: list[np.ndarray]) -> np.ndarray:
        assert self._unit_fingerprints is not None
        residuals = _standardize_rows(self._features(images))
        # Row-wise NCC against every fingerprint at once: unit rows make it a matrix product.
        return residuals @ self._unit_fingerprints.T

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([noise_residual(im).reshape(-1) for im in images]).astype(np.float32)


class SpectralBaseline(Baseline):
    """Durall et al. 2020: :func:`spectral_profile` of each image (at its native size), then
    logistic regression (multinomial for more than two sources) behind a
    :class:`~sklearn.preprocessing.StandardScaler`, so every frequency bin weighs alike. Scores
    are the class probabilities; features are the profiles."""

    name = "spectral"
    needs_same_size = False

    def __init__(self, seed: int = 0, bins: int = 64) -> None:
        super().__init__(seed)
        if bins < 2:
            raise GantkError(f"the spectral baseline needs at least 2 bins, got {bins}")
        self.bins = bins
        self._model: Pipeline | None = None

    def _fit(self, images: list[np.ndarray], labels: np.ndarray, num_classes: int) -> None:
        self._model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=5000, random_state=self.seed)
        )
        self._model.fit(self._profiles(images), labels)

    def _scores(self, images: list[np.ndarray]) -> np.ndarray:
        assert self._model is not None
        proba = self._model.predict_proba(self._profiles(images))
        return self._expand(self._model.classes_, proba)

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        return self._profiles(images)

    def _profiles(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([spectral_profile(im, self.bins) for im in images])


_CLASSES: dict[str, type[Baseline]] = {
    "knn": KNNBaseline,
    "eigenface": EigenfaceBaseline,
    "eigenface-lr": EigenfaceLogisticBaseline,
    "prnu": PRNUBaseline,
    "spectral": SpectralBaseline,
}


def make_baseline(name: str, seed: int = 0) -> Baseline:
    """A fresh, unfitted baseline by name (one of :data:`BASELINES`); ``seed`` fixes any
    randomness in its fitting (PCA's randomized solver), so results repeat."""
    key = str(name).strip().lower()
    if key not in _CLASSES:
        raise GantkError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return _CLASSES[key](seed=seed)
