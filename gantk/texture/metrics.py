"""Quantitative evaluation of texture interpolation (Texture Mixer, thesis §3.4.2, Table 3.1).

The "horizontal interpolation task": two side textures (R x R, R the model's resolution) are
placed at the ends of an R x 8R strip (the paper's 128 x 1024) and the method fills the strip.
Per strip:

- SPD (side perceptual distance): LPIPS between the strip's left R x R end and the left texture
  and between its right end and the right texture, averaged. Lower is better: the user's
  textures should survive at the places they were put.
- CGD (centre Gram distance): (GramDist(centre, left) + GramDist(centre, right)) /
  GramDist(left, right), centre = the strip's central R x R crop, GramDist the Frobenius
  distance between the VGG-19 relu1_1..relu5_1 Gram matrices of two images, all five layers
  together. Being a metric, CGD is at least 1, exactly 1 when the centre's style lies on the
  straight segment between the sides' (Table 3.1's values are 1.1-1.5). Lower is better.
- CCD (centre cosine distance): 1 - cos between gram(centre) - gram(left) and
  gram(right) - gram(centre), Gram matrices flattened into one vector: 0 when the centre's
  style lies on the straight path from left to right.
- CSS (centre seam score) and CRS (centre repetition score): the probability that the strip's
  central crop holds a seam, and that it repeats itself, given by two small classifiers trained
  on real crops against two textures concatenated (seams) or one crop tiled twice
  (repetitions); the seam classifier judges the central R x R crop, the repetition classifier
  the central R x 2R crop (the thesis's 128 x 128 and 128 x 256 at its R = 128). Lower is better.
  See :mod:`gantk.texture.classifiers` for their definition and training.
- CIS (centre Inception score): the Inception score (:mod:`gantk.metrics.inception_score`)
  of all central R x R crops, one part. The thesis uses an Inception-ResNet-v2 fine-tuned on
  its texture datasets; gantk has no such network and uses the FID InceptionV3's ImageNet
  logits (``cis[inception]``) or, without its weight file, the seeded random network
  (``cis[random-inception]``): the network is always in the name, because neither is the
  thesis's CIS. Higher is better; at most the number of strips.
- CSWD (centre sliced Wasserstein distance): gantk's multi-scale Laplacian-pyramid SWD
  (:mod:`gantk.metrics.swd`, the ProGAN protocol) between all centre crops and as many real
  R x R crops of the test textures. Like ``gantk evaluate swd`` and ProGAN's report it is
  multiplied by 1e3 and averaged over the pyramid levels. With tens of crops (the paper's
  setting is larger) the value is noisy and biased upwards: compare methods at equal counts.
  ``cswd_floor`` is the same distance between the real crops and as many other real crops
  drawn independently: what sampling alone gives at this count. A method's CSWD near it says
  nothing about realism; measured on 30 held-out texture folders (one draw each), the floor
  was 74 at 48 crops, 74 at 192 and 24 at 768 (34 in another draw), and alpha-blending (73,
  97, 65) beat the v2 Mixer (114, 82, 53) only at 48, at the floor.
- seconds: wall-clock time to make one strip.
- sharpness (gantk's, not the paper's): the mean gradient energy of the strip's central R x R
  crop (squared differences of neighbouring pixels' luminance, both axes) over the mean of the
  two side textures': about 1 when the middle is as detailed as the inputs, about 0.5 for
  alpha-blending two unrelated textures (averaging halves the energy of what the two do not
  share). Higher is better, up to about 1.
- grid (gantk's, not the paper's): how much the strip's middle half repeats at the model's
  latent-cell period (e.g. 4 px), which is where an undertrained decoder draws grid lines: the
  power of the row- and column-mean profiles at that period over the median power of the
  nearby frequencies (the larger of the two axes; about 1 for no periodicity), the median over
  strips. ``grid_real`` is the same measure on real crops of the test textures, what the
  textures themselves have. Medians, not means: a power ratio is heavy-tailed, and the few
  test textures that are tiles or grates (periodic at 4 px themselves) would own a mean.

Feature networks: the standard numbers use ImageNet VGG-19 for the Gram metrics and LPIPS v0.1
with an AlexNet trunk for SPD. Without those weight files the same architectures with fixed
random weights can be used; the metrics then carry the network in their name
(``cgd[random-vgg19]``, ``spd[random-lpips-alex]``) so they are never mistaken for the paper's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.io.images import LUMA_WEIGHTS
from gantk.metrics.features import FeatureNet
from gantk.metrics.inception_score import inception_score
from gantk.metrics.lpips_metric import load_lpips, lpips_distance, network_name
from gantk.metrics.swd import swd_images
from gantk.texture.classifiers import CLASSIFIERS, WIDTH, TextureClassifiers
from gantk.texture.data import TextureSampler, TextureSource
from gantk.texture.gram import GramNet, gram_matrices, gram_vector
from gantk.texture.latent import strip_weights

LENGTH_FACTOR = 8  # strip length in side-texture widths: the paper's 128 x 1024
STANDARD_GRAM = "vgg19"
STANDARD_LPIPS = "lpips-alex"
LPIPS_NETS = ("auto", "alex", "vgg", "random-alex", "random-vgg")
RANDOM_SEED = 0  # random-lpips-* trunks are the same on every machine
# In Table 3.1's order; css, crs and cis only when their networks are given.
METRICS = ("spd", "cgd", "ccd", "css", "crs", "cis", "cswd", "sharpness", "seconds")
PER_STRIP = ("spd", "cgd", "ccd", "css", "crs", "sharpness", "seconds")  # mean and std
CIS_BATCH = 25  # centre crops per Inception pass (each is resized to 299 x 299)
GRID_NEIGHBOURS = 8  # frequency bins on each side that make the reference of the grid peak

# A method makes an R x length strip from (left, right, length); tensors 1x3xRxR in [-1, 1].
Method = Callable[[Tensor, Tensor, int], Tensor]


@dataclass
class StripScores:
    spd: float
    cgd: float
    ccd: float
    sharpness: float
    seconds: float


# -- networks ----------------------------------------------------------------------------------


def load_texture_lpips(
    choice: str = "auto", weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """LPIPS for SPD: ``alex``/``vgg`` are the standard model (the torchvision trunk file is
    required, see :func:`gantk.metrics.lpips_metric.load_lpips`); ``random-alex``/``random-vgg``
    keep LPIPS' learned linear heads (shipped in the lpips wheel) on a trunk with seeded random
    weights and read no file; ``auto`` takes ``alex`` when its file is there."""
    from gantk.io.weights import locate

    if choice not in LPIPS_NETS:
        raise GantkError(f"--lpips-net {choice!r} is not one of {', '.join(LPIPS_NETS)}")
    if choice == "auto":
        choice = "alex" if (weights is not None or locate("alexnet") is not None) else "random-alex"
    if not choice.startswith("random-"):
        return load_lpips(choice, weights, device)
    if weights is not None:
        raise GantkError(
            f"--lpips-net {choice} reads no weight file; drop --lpips-weights or use "
            f"--lpips-net {choice.removeprefix('random-')}"
        )
    import lpips

    base = choice.removeprefix("random-")
    # fork_rng: seeding for a reproducible trunk must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(RANDOM_SEED)
        warnings.simplefilter("ignore")  # lpips' use of torchvision's deprecated arguments
        model = lpips.LPIPS(net=base, pretrained=True, pnet_rand=True, verbose=False)
    model.gantk_name = f"random-lpips-{base}"
    return model.to(device).eval().requires_grad_(False)


def metric_names(
    gram_name: str, lpips_name: str, inception_name: str | None = None
) -> dict[str, str]:
    """Plain metric -> reported name: 'cgd' with ImageNet VGG-19, 'cgd[random-vgg19]' with any
    other Gram network; 'spd' with standard LPIPS-alex, e.g. 'spd[random-lpips-alex]'; CIS
    always with its network ('cis[inception]', 'cis[random-inception]'), never the thesis's."""

    def named(metric: str, network: str, standard: str) -> str:
        return metric if network == standard else f"{metric}[{network}]"

    return {
        "spd": named("spd", lpips_name, STANDARD_LPIPS),
        "cgd": named("cgd", gram_name, STANDARD_GRAM),
        "ccd": named("ccd", gram_name, STANDARD_GRAM),
        "css": "css",
        "crs": "crs",
        "cis": f"cis[{inception_name or 'none'}]",
        "cswd": "cswd",
        "sharpness": "sharpness",
        "seconds": "seconds",
    }


# -- one strip ---------------------------------------------------------------------------------


def center_crop(strip: Tensor, size: int, width: int | None = None) -> Tensor:
    """The central ``size`` x ``width`` crop (default square): columns 3.5R..4.5R of an 8R
    strip for R x R, 3R..5R for R x 2R."""
    width = size if width is None else width
    total_h, total_w = strip.shape[-2:]
    if total_h < size or total_w < width:
        raise GantkError(f"a {total_h}x{total_w} strip has no central {size}x{width} crop")
    y, x = (total_h - size) // 2, (total_w - width) // 2
    return strip[..., y : y + size, x : x + width]


def classifier_scores(classifiers: TextureClassifiers, strip: Tensor, size: int) -> dict:
    """{'css': P(seam), 'crs': P(repetition)} of one strip (1x3xHxW): each classifier on the
    strip's central crop of its size, R x R and R x 2R."""
    return {
        key: float(classifiers.probability(name, center_crop(strip, size, WIDTH[name] * size))[0])
        for key, name in zip(("css", "crs"), CLASSIFIERS, strict=True)
    }


def center_inception_score(inception: FeatureNet, centers: Tensor) -> float:
    """CIS: the Inception score (one part) of the central crops (N, 3, R, R) uint8."""
    logits = torch.cat([inception(part).cpu() for part in centers.split(CIS_BATCH)])
    return inception_score(logits)[0]


def gram_scores(
    grams_left: list[Tensor], grams_right: list[Tensor], grams_center: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """(CGD, CCD) per sample from the three images' Gram matrices (lists over layers of
    (B, C, C)); computed in float64 because the Gram differences of similar textures are small
    next to the matrices themselves."""
    left = [g.double() for g in grams_left]
    right = [g.double() for g in grams_right]
    center = [g.double() for g in grams_center]
    v_left, v_right, v_center = gram_vector(left), gram_vector(right), gram_vector(center)
    # Distances are Frobenius norms (not squared) over all five layers' Gram matrices: a metric,
    # so CGD >= 1 with equality on the straight path, matching Table 3.1's values (1.1-1.5).
    cgd = ((v_center - v_left).norm(dim=1) + (v_right - v_center).norm(dim=1)) / (
        v_right - v_left
    ).norm(dim=1)
    ccd = 1.0 - F.cosine_similarity(v_center - v_left, v_right - v_center, dim=1, eps=1e-30)
    return cgd, ccd


@torch.no_grad()
def score_strip(
    strip: Tensor,
    left: Tensor,
    right: Tensor,
    gram_net: GramNet,
    lpips_model: nn.Module,
    seconds: float = 0.0,
) -> StripScores:
    """SPD, CGD and CCD of one strip (1x3xHxW in [-1, 1]) made from ``left`` and ``right``
    (1x3xRxR); ``seconds`` is passed through (the time it took to make the strip)."""
    size = left.shape[-1]
    if strip.shape[-2] < size or strip.shape[-1] < 2 * size:
        raise GantkError(
            f"a {strip.shape[-2]}x{strip.shape[-1]} strip cannot hold two {size} px textures"
        )
    device = next(gram_net.parameters()).device
    # One memory layout for all: crops from the sampler come channels-last, and the convolutions
    # then take another code path, so identical pixels would not give exactly identical features.
    strip, left, right = (t.to(device).float().contiguous() for t in (strip, left, right))
    ends = torch.cat([strip[..., :size, :size], strip[..., :size, -size:]])
    # One LPIPS call for both ends: the two distances are then averaged.
    spd = lpips_distance(lpips_model, ends, torch.cat([left, right])).mean()
    # One Gram-net pass for the three R x R images: rows 0, 1, 2 = left, right, centre.
    grams = gram_matrices(gram_net, torch.cat([left, right, center_crop(strip, size)]))
    cgd, ccd = gram_scores(
        [g[0:1] for g in grams], [g[1:2] for g in grams], [g[2:3] for g in grams]
    )
    sides = (gradient_energy(left) + gradient_energy(right)) / 2
    sharpness = gradient_energy(center_crop(strip, size)) / max(sides, 1e-12)
    return StripScores(float(spd), float(cgd[0]), float(ccd[0]), sharpness, float(seconds))


def gradient_energy(image: Tensor) -> float:
    """Mean squared difference of horizontally and vertically neighbouring pixels' luminance
    of a (1, 3, H, W) image in [-1, 1]: how much fine detail it has."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=image.device)
    luma = (image[0].double() * weights.view(3, 1, 1)).sum(dim=0)
    across = (luma[:, 1:] - luma[:, :-1]).square().mean()
    down = (luma[1:] - luma[:-1]).square().mean()
    return float((across + down) / 2)


# -- the baseline ------------------------------------------------------------------------------


def _tiled(texture: Tensor, length: int, anchor: int) -> Tensor:
    """``texture`` repeated along the width, one copy starting exactly at column ``anchor``."""
    size = texture.shape[-1]
    columns = (torch.arange(length, device=texture.device) - anchor) % size
    return texture[..., columns]


def alpha_blend_strip(left: Tensor, right: Tensor, length: int) -> Tensor:
    """Naive pixel-space interpolation: each side texture tiled over the canvas (aligned with
    its copy at its end) and cross-faded with the horizontal ramp the Mixer uses in latent
    space (:func:`gantk.texture.latent.strip_weights` at pixel resolution): ``left`` alone over
    the first R columns, ``right`` alone over the last R, linear in between."""
    size = left.shape[-1]
    if length < 2 * size:
        raise GantkError(f"a strip of {length} px cannot hold two {size} px textures")
    weights = strip_weights(1, length, size).to(left.device, left.dtype)  # (2, 1, length)
    return weights[0] * _tiled(left, length, 0) + weights[1] * _tiled(right, length, length - size)


# -- the task ----------------------------------------------------------------------------------


def check_sources(sources: list[TextureSource], size: int, split: str) -> None:
    """Every test texture must hold an R x R crop; the message says which one does not."""
    for source in sources:
        height, width = source.image.shape[:2]
        if height < size or width < size:
            part = "" if split == "all" else f" (its {split} split)"
            hint = "" if split == "all" else ", or --split all"
            raise GantkError(
                f"test texture {source.name} is {width}x{height} px{part}, smaller than the "
                f"model's {size} px textures; give test textures of at least {size} px{hint}"
            )


def sample_pairs(
    sources: list[TextureSource], size: int, count: int, seed: int = 0, split: str = "all"
) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """``count`` (left, right) pairs of plain ``size`` crops, each pair from two different
    textures when there are several (interpolating a texture with itself says little), and
    ``count`` further crops as the real set of CSWD. Deterministic given ``seed``; ``split``
    (the part of the images the sources hold) only words the error for too small textures."""
    check_sources(sources, size, split)
    rng = np.random.default_rng(seed)
    samplers = [TextureSampler([s], size, augment=False) for s in sources]
    pairs = []
    for _ in range(count):
        if len(sources) > 1:
            a, b = (int(i) for i in rng.choice(len(sources), size=2, replace=False))
        else:
            a = b = 0
        pairs.append((samplers[a].sample(1, rng), samplers[b].sample(1, rng)))
    real = TextureSampler(sources, size, augment=False).sample(count, rng)
    return pairs, real


# The random stream of CSWD's second real set: apart from the pairs' and the first real set's
# stream (seed alone), so adding the floor left every earlier figure as it was.
FLOOR_STREAM = 1


def cswd_floor(sources: list[TextureSource], real_crops: Tensor, seed: int = 0) -> float:
    """The noise floor of CSWD at this count (see the module's docstring): the SWD (x1e3,
    mean over levels) between ``real_crops`` and as many other plain crops of ``sources``,
    drawn with ``seed``'s own stream."""
    size = real_crops.shape[-1]
    rng = np.random.default_rng([seed, FLOOR_STREAM])
    other = TextureSampler(sources, size, augment=False).sample(len(real_crops), rng)
    return float(swd_images(_to_uint8(real_crops), _to_uint8(other), seed=seed)["mean"])


def periodic_peak(image: Tensor, period: int) -> float:
    """Power at ``period`` pixels of the row-mean and column-mean luminance profiles of
    ``image`` (1x3xHxW or 3xHxW, [-1, 1]) over the median power of the ``GRID_NEIGHBOURS`` bins
    on each side; the larger of the two axes. Profiles are mean-removed and Hann-windowed."""
    grey = image.reshape(-1, *image.shape[-2:]).double().mean(dim=0)
    peaks = []
    for profile in (grey.mean(dim=1), grey.mean(dim=0)):  # rows (horizontal lines), columns
        n = profile.numel()
        k0 = round(n / period)
        if period < 2 or k0 + 1 >= n // 2:
            continue
        centred = (profile - profile.mean()) * torch.hann_window(
            n, periodic=False, dtype=grey.dtype
        )
        power = torch.fft.rfft(centred).abs().square()
        lo, hi = max(1, k0 - GRID_NEIGHBOURS), min(power.numel(), k0 + GRID_NEIGHBOURS + 1)
        around = torch.cat([power[lo : k0 - 1], power[k0 + 2 : hi]])  # the peak may leak a bin
        peaks.append(float(power[k0] / around.median().clamp_min(1e-12)))
    if not peaks:
        raise GantkError(
            f"an image of {tuple(image.shape[-2:])} px is too small for period {period}"
        )
    return max(peaks)


def _to_uint8(images: Tensor) -> Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def evaluate_interpolation(
    method: Method,
    pairs: list[tuple[Tensor, Tensor]],
    real_crops: Tensor,
    gram_net: GramNet,
    lpips_model: nn.Module,
    length_factor: int = LENGTH_FACTOR,
    *,
    on_strip: Callable[[int, Tensor], None] | None = None,
    swd_seed: int = 0,
    warmup: bool = True,
    grid_period: int | None = None,
    classifiers: TextureClassifiers | None = None,
    inception: FeatureNet | None = None,
) -> dict:
    """Run ``method`` on every pair (strips R x ``length_factor``·R) and score it.

    Returns ``{"metrics": {name: mean, name + "_std": std, ..., "cswd": value}, "pairs": N,
    "length": pixels, "networks": {"gram": ..., "lpips": ...}}`` with names from
    :func:`metric_names` (std over pairs, ddof=0). ``on_strip(i, strip)`` sees each strip
    (for sample grids and progress). With ``warmup`` the first pair is run once untimed
    before the timed runs. With ``grid_period`` (the model's latent-cell size in pixels) the
    result also has ``grid`` and ``grid_real`` (see the module's docstring); with
    ``classifiers`` (of the strips' R) CSS and CRS, with ``inception`` (a logits network,
    :func:`gantk.metrics.features.load_inception_logits`) CIS.
    """
    if not pairs:
        raise GantkError("no texture pairs to evaluate; ask for at least one pair")
    size = pairs[0][0].shape[-1]
    length = length_factor * size
    if classifiers is not None and classifiers.config.resolution != size:
        raise GantkError(
            f"the seam and repetition classifiers are for {classifiers.config.resolution} px "
            f"textures, these are {size} px; train classifiers for them with `gantk train "
            f"texture-classifiers --resolution {size}`"
        )
    if warmup:  # first-call costs (allocator, cuDNN autotuning) are not the method's
        method(*pairs[0], length)
    scores: list[dict[str, float]] = []
    centers, grids = [], []
    for index, (left, right) in enumerate(pairs):
        start = time.perf_counter()
        strip = method(left, right, length)
        if strip.is_cuda:
            torch.cuda.synchronize(strip.device)  # kernels run asynchronously
        seconds = time.perf_counter() - start
        if strip.shape[-1] != length or strip.shape[-2] < size:
            raise GantkError(
                f"the method made a {strip.shape[-2]}x{strip.shape[-1]} strip, "
                f"expected {size}x{length}"
            )
        strip_scores = asdict(score_strip(strip, left, right, gram_net, lpips_model, seconds))
        if classifiers is not None:
            strip_scores.update(classifier_scores(classifiers, strip, size))
        scores.append(strip_scores)
        if grid_period:
            grids.append(periodic_peak(strip[..., length // 4 : 3 * length // 4], grid_period))
        centers.append(_to_uint8(center_crop(strip, size)))
        if on_strip is not None:
            on_strip(index, strip)
    inception_name = inception.name if inception is not None else None
    names = metric_names(gram_net.name, network_name(lpips_model), inception_name)
    metrics: dict[str, float] = {}
    for key in (k for k in PER_STRIP if k in scores[0]):
        values = np.array([s[key] for s in scores], dtype=np.float64)
        metrics[names[key]] = float(values.mean())
        metrics[names[key] + "_std"] = float(values.std())
    if inception is not None:
        metrics[names["cis"]] = center_inception_score(inception, torch.cat(centers))
    cswd = swd_images(_to_uint8(real_crops), torch.cat(centers), seed=swd_seed)
    metrics[names["cswd"]] = float(cswd["mean"])
    if grid_period:
        metrics["grid"] = float(np.median(grids))
        metrics["grid_real"] = float(np.median([periodic_peak(c, grid_period) for c in real_crops]))
    return {
        "metrics": metrics,
        "pairs": len(pairs),
        "length": length,
        "networks": {"gram": gram_net.name, "lpips": network_name(lpips_model)},
    }
