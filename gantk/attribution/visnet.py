"""visNet: GAN fingerprints as images (Yu et al., ICCV'19 §3.3, thesis Fig. 4.7).

The attribution classifier hides its fingerprints in a 512-d feature space; visNet makes them
images. An autoencoder R reconstructs the input; what it leaves out, the residual
``F_im = R(I) - I``, is the *image fingerprint*. Each source y owns a freely trainable *model
fingerprint* image ``F_mod^y`` of the same size. The logit of class y is the correlation
``corr(F_im, F_mod^y)`` (zero-mean, unit-norm, vectorized inner product), times a learned scale.

Training minimizes, over R and the model fingerprints,

    20 · ||R(I) - I||_1  +  0.1 · L_adv  +  1 · CE(softmax(logits), y),

where L_adv is a WGAN-GP game with a reconstruction critic D_rec: the critic learns to tell a
real image I from its reconstruction R(I) (``D_rec(R(I)) - D_rec(I) + 10 · GP``), and R learns to
fool it (``-D_rec(R(I))``), which keeps reconstructions sharp so the residual is not just blur.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.attribution.networks import AttributionModel, AttributorConfig
from gantk.errors import GantkError
from gantk.io.atomic import atomic_file, check_output
from gantk.nn.distributed import Dist
from gantk.nn.layers import EqualConv2d, EqualLinear
from gantk.nn.penalties import (
    gp_weights,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from gantk.nn.resample import DEFAULT_FILTER, make_filter, upsample2d

# The paper's loss weights (Eq. 4): "not sensitive to dataset and are fixed".
PIX_WEIGHT = 20.0
ADV_WEIGHT = 0.1
CLS_WEIGHT = 1.0
# Gulrajani et al.'s gradient-penalty weight, the usual companion of WGAN-GP.
GP_WEIGHT = 10.0
# Correlations lie in [-1, 1], so raw they can only move softmax probabilities by a factor e^2:
# cross-entropy would stay near log(C) however well the fingerprints match, and its gradient
# would never stop pushing. A learned scale, starting where logits span about ±10 (a confident
# but not saturated softmax), lets the classifier choose its own temperature. The cap keeps the
# scale from drifting upward forever once the training set is separated.
INITIAL_SCALE = 10.0
MAX_SCALE = 100.0
# Model fingerprints start as faint noise: correlation ignores their magnitude, so a small start
# lets Adam's roughly lr-sized steps reshape them within a few hundred steps (with N(0, 1) the
# random start would dominate for thousands).
FINGERPRINT_INIT_STD = 0.01
# Smallest spatial size of the autoencoder's bottleneck, and the most it downsamples by.
MIN_BOTTLENECK = 4
MAX_DOWN_FACTOR = 8


def correlation(a: Tensor, b: Tensor) -> Tensor:
    """Correlation indices between the rows of ``a`` (N, D) and ``b`` (C, D): (N, C).

    Each row (images are vectorized first) is made zero-mean and unit-norm, so the result is
    Pearson's correlation coefficient of every pair, in [-1, 1].
    """
    a, b = a.flatten(1), b.flatten(1)
    a = F.normalize(a - a.mean(dim=1, keepdim=True), dim=1, eps=1e-12)
    b = F.normalize(b - b.mean(dim=1, keepdim=True), dim=1, eps=1e-12)
    return a @ b.t()


def _down(config: AttributorConfig, resolution: int) -> nn.Module:
    """A 3x3 strided convolution from ``resolution`` to half of it (low-passed first)."""
    return EqualConv2d(
        config.channels(resolution), config.channels(resolution // 2), 3, activation="lrelu", down=2
    )


class _Up(nn.Module):
    """2x FIR upsampling then a 3x3 convolution: the decoder's mirror of a strided conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_channels, out_channels, 3, activation="lrelu")
        self.register_buffer("resample_filter", make_filter(DEFAULT_FILTER), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(upsample2d(x, self.resample_filter))


class VisNet(AttributionModel):
    """Autoencoder, per-class model fingerprint images and the reconstruction critic.

    Autoencoder: a plain bottlenecked encoder-decoder with no skip connection from input to
    output. A skip would let R copy I, so the residual would be nothing the image model fails to
    explain, only an add-on learned to please the classifier; with a bottleneck (down to R/8, at
    least 4x4) R reproduces image content and the residual keeps the high-frequency detail where
    GAN fingerprints live, which the classification loss then shapes.
    """

    def __init__(self, config: AttributorConfig) -> None:
        super().__init__()
        self.config = config.validate()
        if config.parsed_variant().kind != "visnet":
            raise GantkError(
                f"VisNet needs variant 'visnet', got {config.variant!r}; other variants are "
                "built by gantk.attribution.networks.Attributor"
            )
        res = config.resolution
        bottleneck = max(MIN_BOTTLENECK, res // MAX_DOWN_FACTOR)
        self.bottleneck_resolution = bottleneck

        # Encoder: a 3x3 conv at full resolution, then one strided conv per halving.
        encoder: list[nn.Module] = [EqualConv2d(3, config.channels(res), 3, activation="lrelu")]
        r = res
        while r > bottleneck:
            encoder.append(_down(config, r))
            r //= 2
        self.encoder = nn.Sequential(*encoder)

        # Decoder: mirror image; the last layer is linear so R can output any pixel value
        # (a tanh would make residuals near ±1 hard to produce, and inputs already lie there).
        decoder: list[nn.Module] = []
        while r < res:
            decoder.append(_Up(config.channels(r), config.channels(r * 2)))
            r *= 2
        decoder.append(EqualConv2d(config.channels(res), 3, 1))
        self.decoder = nn.Sequential(*decoder)

        # One model fingerprint image per source (the paper's F_mod^y), freely trainable.
        self.fingerprints = nn.Parameter(
            torch.randn(config.num_classes, 3, res, res) * FINGERPRINT_INIT_STD
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(INITIAL_SCALE)))

        # D_rec: a small discriminator-style critic, down to 4x4, one score per image. No
        # normalization layers: batch statistics would break the per-sample gradient penalty.
        critic: list[nn.Module] = [EqualConv2d(3, config.channels(res), 3, activation="lrelu")]
        r = res
        while r > 4:
            critic.append(_down(config, r))
            r //= 2
        critic += [
            EqualConv2d(config.channels(4), config.channels(4), 3, activation="lrelu"),
            nn.Flatten(),
            EqualLinear(config.channels(4) * 4 * 4, 1),
            nn.Flatten(0),
        ]
        self.critic = nn.Sequential(*critic)

    # ------------------------------------------------------------------------------------------
    # Fingerprints and logits

    def reconstruct(self, x: Tensor) -> Tensor:
        """R(x), (N, 3, R, R)."""
        return self.decoder(self.encoder(x))

    def fingerprint_images(self, x: Tensor) -> Tensor:
        """Image fingerprints R(x) - x, (N, 3, R, R)."""
        return self.reconstruct(x) - x

    def image_fingerprints(self, x: Tensor) -> Tensor:
        """Image fingerprints flattened to (N, 3·R·R), the shape every attributor returns."""
        return self.fingerprint_images(x).flatten(1)

    def model_fingerprint_images(self) -> Tensor:
        """Model fingerprints, (C, 3, R, R)."""
        return self.fingerprints.detach()

    def model_fingerprints(self) -> Tensor:
        """Model fingerprints flattened to (C, 3·R·R)."""
        return self.fingerprints.detach().flatten(1)

    @property
    def logit_scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=MAX_SCALE)

    def _logits(self, image_fingerprints: Tensor) -> Tensor:
        # The live parameter, not model_fingerprints(): the cross-entropy must reach it.
        return self.logit_scale * correlation(image_fingerprints, self.fingerprints)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, C): scaled correlations with every model fingerprint."""
        return self._logits(self.image_fingerprints(x))

    # ------------------------------------------------------------------------------------------
    # Training

    def _reconstruction_parameters(self) -> list[nn.Parameter]:
        critic = {id(p) for p in self.critic.parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def make_optimizers(
        self, lr: float, betas: tuple[float, float] = (0.0, 0.99)
    ) -> list[torch.optim.Optimizer]:
        """[R + model fingerprints + logit scale, critic], the same Adam for both."""
        return [
            torch.optim.Adam(self._reconstruction_parameters(), lr=lr, betas=betas),
            torch.optim.Adam(self.critic.parameters(), lr=lr, betas=betas),
        ]

    def train_step(
        self,
        x: Tensor,
        y: Tensor,
        optimizers: list[torch.optim.Optimizer],
        dist: Dist | None = None,
    ) -> dict[str, float]:
        """One critic step, then one step of R and the fingerprints on the same batch
        (``dist``: ``x`` is a process's share; the penalty's interpolates are drawn for all)."""
        opt_rec, opt_critic = optimizers

        # Critic: real images should score above their reconstructions. R is held fixed (no
        # graph through it), so this step cannot change anything but the critic.
        with torch.no_grad():
            fake = self.reconstruct(x)
        real_score, fake_score = self.critic(x), self.critic(fake)
        gp = gradient_penalty(self.critic, x, fake, alpha=gp_weights(x, dist))
        # With ProGAN's small drift term, which the authors' code also had.
        critic_loss = wgan_critic_loss(real_score, fake_score) + GP_WEIGHT * gp
        opt_critic.zero_grad(set_to_none=True)
        critic_loss.backward()
        opt_critic.step()

        # R and fingerprints. The critic's weights are frozen meanwhile so the adversarial
        # term's backward pass neither computes nor leaves gradients on them.
        self.critic.requires_grad_(False)
        try:
            rec = self.reconstruct(x)
            residual = rec - x
            logits = self._logits(residual.flatten(1))
            l1 = residual.abs().mean()
            adv = wgan_generator_loss(self.critic(rec))
            ce = F.cross_entropy(logits, y)
            loss = PIX_WEIGHT * l1 + ADV_WEIGHT * adv + CLS_WEIGHT * ce
            opt_rec.zero_grad(set_to_none=True)
            loss.backward()
            opt_rec.step()
        finally:
            self.critic.requires_grad_(True)

        return {
            "loss": loss.item(),
            "acc": (logits.argmax(1) == y).float().mean().item(),
            "l1": l1.item(),
            "adv": adv.item(),
            "ce": ce.item(),
            "gp": gp.item(),
            "critic": critic_loss.item(),
            "scale": self.logit_scale.item(),
        }


# ----------------------------------------------------------------------------------------------
# Visualization


def _normalized(images: Tensor) -> Tensor:
    """Stretch each image to [0, 1] on its own: fingerprints are faint and differ in contrast,
    so one common scale would show most of them as flat grey. Returns (N, R, R, 3) on the CPU."""
    flat = images.detach().float().cpu().flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    flat = (flat - low) / (high - low).clamp(min=1e-12)
    return flat.reshape(images.shape).permute(0, 2, 3, 1)


def visualize(
    model: VisNet,
    images: Tensor,
    labels: Tensor | None,
    path: str | Path,
    force: bool = False,
    max_examples: int = 8,
) -> Path:
    """Write one PNG in the style of thesis Fig. 4.7 and return its path.

    Rows: the learned model fingerprints (one per source); example images (at most
    ``max_examples``, titled with their true source when ``labels`` is given and the predicted
    one); their image fingerprints; then the image × source correlation matrix with a colour
    bar. ``images`` are in [-1, 1], (N, 3, R, R). Refuses an existing ``path`` unless ``force``.
    """
    # Before any work: a refusal should not cost a forward pass and a figure.
    check_output(path, force)
    # Figure without pyplot: no global backend switch, no figure registry to leak into.
    from matplotlib.figure import Figure

    names = model.config.class_names
    images = images[:max_examples]
    device = model.fingerprints.device
    with torch.no_grad():
        fps = model.fingerprint_images(images.to(device))
        corr = correlation(fps, model.fingerprints).cpu()
    predicted = corr.argmax(dim=1).tolist()
    truth = labels[: len(images)].tolist() if labels is not None else None

    n, c = len(images), len(names)
    cols = max(n, c)
    matrix_height = 1.0 + 0.35 * n
    fig = Figure(figsize=(1.6 * cols + 1.0, 3 * 1.8 + matrix_height + 0.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3 * 1.8, matrix_height + 0.6])
    axes = top.subplots(3, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for j, picture in enumerate(_normalized(model.model_fingerprint_images())):
        axes[0, j].imshow(picture.numpy(), interpolation="nearest")
        axes[0, j].set_title(f"F_mod: {names[j]}", fontsize=8)
    shown = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    for i, (picture, fingerprint) in enumerate(zip(shown, _normalized(fps), strict=True)):
        title = f"pred {names[predicted[i]]}"
        if truth is not None:
            title = f"{names[truth[i]]} → {title}"
        axes[1, i].imshow(picture.numpy(), interpolation="nearest")
        axes[1, i].set_title(title, fontsize=7)
        axes[2, i].imshow(fingerprint.numpy(), interpolation="nearest")
        axes[2, i].set_title("F_im", fontsize=7)

    ax = bottom.subplots()
    # Symmetric range: the sign of a correlation matters as much as its size.
    mesh = ax.imshow(corr.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(c), names, fontsize=7, rotation=30, ha="right")
    rows = [f"{i}" if truth is None else f"{i}: {names[truth[i]]}" for i in range(n)]
    ax.set_yticks(range(n), rows, fontsize=7)
    ax.set_xlabel("model fingerprint")
    ax.set_ylabel("image")
    ax.set_title("corr(F_im, F_mod)", fontsize=9)
    bottom.colorbar(mesh, ax=ax)
    if n * c <= 120:  # small enough to print every value legibly
        for i in range(n):
            for j in range(c):
                value = corr[i, j].item()
                color = "white" if abs(value) > 0.6 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)

    with atomic_file(path, force) as tmp:
        # The temporary name ends in .partial, so the format must be named.
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
