"""The attribution classifier of Yu et al. (ICCV'19, thesis §4.3.1) and what all attributors share.

Network: at each resolution from the input down to 8×8, two 3×3 convolutions (16 channels at
128×128, doubling as the resolution halves, 512 at most) and a 2× downsampling; at 4×4 a 3×3
convolution to 512 channels, a fully connected layer to 512 features and the classification
layer. The 512 features are the *image fingerprint*; the classification layer's weight row of a
class is that source's *model fingerprint*. Equalized learning rate (the authors built on the
ProGAN discriminator) so Adam at lr 1e-3 trains every layer at the same pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.attribution.variants import Variant, band_limit, parse_variant
from gantk.errors import GantkError
from gantk.io.images import check_resolution
from gantk.nn.distributed import Dist
from gantk.nn.layers import EqualConv2d, EqualLinear

KIND = "attributor"
FEATURES = 512


@dataclass
class AttributorConfig:
    resolution: int
    class_names: list[str] = field(default_factory=list)
    variant: str = "full"
    # Channels at resolution r are channel_base / r (capped): 2048 gives the paper's 16 at 128.
    channel_base: int = 2048
    channel_max: int = 512

    def validate(self) -> AttributorConfig:
        check_resolution(self.resolution, low=8)
        if len(self.class_names) < 2:
            raise GantkError(
                f"attribution needs at least two classes (sources), got {len(self.class_names)}: "
                "give one subfolder per source, e.g. real/ and ganA/"
            )
        if self.channel_base < 1 or self.channel_max < 1:
            raise GantkError("--channel-base and --channel-max must be positive")
        self.parsed_variant()
        return self

    def parsed_variant(self) -> Variant:
        return parse_variant(self.variant, self.resolution)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def channels(self, resolution: int) -> int:
        return max(1, min(self.channel_max, self.channel_base // resolution))


class AttributionModel(nn.Module):
    """What the trainer, ``gantk attribute`` and the evaluation need from an attributor.

    Inputs are float images in [-1, 1], (N, 3, R, R). ``train_step`` owns the loss (the
    classifier has one, visNet three and a critic), so one training loop serves all variants.
    """

    config: AttributorConfig

    def image_fingerprints(self, x: Tensor) -> Tensor:
        """Per-image fingerprint features, (N, D)."""
        raise TypeError(f"{type(self).__name__} must define image_fingerprints()")

    def model_fingerprints(self) -> Tensor:
        """One fingerprint per class, (C, D)."""
        raise TypeError(f"{type(self).__name__} must define model_fingerprints()")

    def make_optimizers(
        self, lr: float, betas: tuple[float, float] = (0.0, 0.99)
    ) -> list[torch.optim.Optimizer]:
        """Adam over every parameter; the default betas are the authors' (ProGAN's beta1 0)."""
        return [torch.optim.Adam(self.parameters(), lr=lr, betas=betas)]

    def train_step(
        self,
        x: Tensor,
        y: Tensor,
        optimizers: list[torch.optim.Optimizer],
        dist: Dist | None = None,
    ) -> dict[str, float]:
        """One step on the batch (``dist``: a process's share of it, for models that draw
        random numbers per sample; gradients are averaged by the optimizers' hooks)."""
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[0].step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}


class Attributor(AttributionModel):
    """The attribution classifier with an optional component-analysis variant."""

    def __init__(self, config: AttributorConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.variant = config.parsed_variant()
        if self.variant.kind == "visnet":
            raise GantkError("visnet is built by gantk.attribution.visnet, not Attributor")
        res = self.variant.input_resolution or config.resolution
        # postpool@N: convolutions stop at N, then a global average pool; else down to 4x4.
        stop = self.variant.size if self.variant.kind == "postpool" else 4
        layers: list[nn.Module] = []
        channels = 3
        while res > stop:
            width = config.channels(res)
            layers += [
                EqualConv2d(channels, width, 3, activation="lrelu"),
                EqualConv2d(width, width, 3, activation="lrelu"),
                nn.AvgPool2d(2),
            ]
            channels, res = width, res // 2
        last = config.channels(4) if self.variant.kind != "postpool" else config.channels(res)
        layers.append(EqualConv2d(channels, last, 3, activation="lrelu"))
        self.convs = nn.Sequential(*layers)
        self.pooled = self.variant.kind == "postpool"
        flat = last if self.pooled else last * 4 * 4
        self.fc = EqualLinear(flat, FEATURES, activation="lrelu")
        self.classify = EqualLinear(FEATURES, config.num_classes)

    def image_fingerprints(self, x: Tensor) -> Tensor:
        h = self.convs(band_limit(x, self.variant))
        h = h.mean(dim=(2, 3)) if self.pooled else h.flatten(1)
        return self.fc(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.image_fingerprints(x))

    def model_fingerprints(self) -> Tensor:
        return (self.classify.weight * self.classify.weight_gain).detach()
