"""The steganography encoder and decoder of artificial fingerprints (Yu et al., ICCV 2021).

Encoder: the n-bit fingerprint goes through a linear layer to a 3x16x16 map, is upsampled to the
image size and concatenated with the image; a U-Net (32, 32, 64, 128, 256 channels, stride-2
downsampling, skip connections) outputs the whole fingerprinted image through a sigmoid.
Decoder: seven 3x3 convolutions (32, 32, 64, 64, 64, 128, 128 channels; five with stride 2), then
linear layers to 512 and to n logits; bit = logit > 0.

With ``luma`` (gantk's, for the v2 bundled model) the encoder's residual is reduced to its
luminance, the same change in R, G and B, so the fingerprint can never show as a colour cast.

Both work at one resolution R (a power of two, at least 32). :func:`embed_any_size` and
:func:`decode_any_size` lift that restriction the way modern watermarkers do: embed at R and
upsample the residual to the image's own size; resize any image to R before decoding.

Images are (B, 3, H, W) in [-1, 1]; fingerprints are (B, n) float tensors of 0/1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.io.images import LUMA_WEIGHTS

KIND = "stego"
LUMA = torch.tensor(LUMA_WEIGHTS)


DESIGNS = ("native", "paper")


@dataclass(frozen=True)
class StegoConfig:
    bits: int = 100
    resolution: int = 64
    luma: bool = False
    # What the pair was trained for: "paper" (images resized to the resolution) or "native"
    # (tiles at the image's own resolution, gantk.fingerprint.native); and, for "native", the
    # PSNR of the residual at strength 1 (models trained before these existed: paper, 36 dB).
    design: str = "paper"
    budget_db: float = 36.0

    def validate(self) -> StegoConfig:
        if not 1 <= self.bits <= 4096:
            raise GantkError(f"--bits must be in 1..4096, got {self.bits}")
        r = self.resolution
        if r < 32 or r & (r - 1):
            raise GantkError(f"the stego resolution must be a power of two >= 32, got {r}")
        if self.design not in DESIGNS:
            raise GantkError(f"--design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if not 10 <= self.budget_db <= 80:
            raise GantkError(f"the PSNR budget must be in 10..80 dB, got {self.budget_db}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(inplace=True))


class StegoEncoder(nn.Module):
    def __init__(self, config: StegoConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.secret = nn.Linear(config.bits, 3 * 16 * 16)
        self.down = nn.ModuleList(
            [
                _conv(6, 32),
                _conv(32, 32, 2),
                _conv(32, 64, 2),
                _conv(64, 128, 2),
                _conv(128, 256, 2),
            ]
        )
        # Each up step: upsample x2, conv to the skip's width, concat the skip, conv.
        widths = [(256, 128), (128, 64), (64, 32), (32, 32)]
        self.up_convs = nn.ModuleList([_conv(cin, cout) for cin, cout in widths])
        self.merge_convs = nn.ModuleList([_conv(2 * cout, cout) for _, cout in widths[:-1]])
        # The last merge also sees the 6-channel input, as in the authors' U-Net.
        self.merge_convs.append(_conv(32 + 32 + 6, 32))
        self.to_image = nn.Conv2d(32, 3, 1)

    def forward(self, images: Tensor, fingerprints: Tensor) -> Tensor:
        r = self.config.resolution
        if images.shape[-2:] != (r, r):
            raise ValueError(f"encoder expects {r}x{r} images, got {tuple(images.shape[-2:])}")
        return (images + self.residual(images, fingerprints)).clamp(-1, 1)

    def residual(self, images: Tensor, fingerprints: Tensor) -> Tensor:
        """The change the encoder makes, before clipping to the valid range: (B, 1, H, W) of
        luminance with ``luma`` (the same change in R, G and B), else (B, 3, H, W).

        H and W may be any multiples of the resolution R: the fingerprint's map is then
        repeated with period R (the native-resolution design, gantk.fingerprint.native), and
        the U-Net, fully convolutional, sees the whole image at once, so no tile seams."""
        r = self.config.resolution
        height, width = images.shape[-2:]
        if height % r or width % r:
            raise ValueError(
                f"encoder expects sides that are multiples of {r}, got {height}x{width}"
            )
        secret = F.relu(self.secret(fingerprints)).view(-1, 3, 16, 16)
        secret = F.interpolate(secret, size=(r, r), mode="nearest")
        secret = secret.repeat(1, 1, height // r, width // r)
        x01 = (images + 1) / 2
        inputs = torch.cat([secret.to(x01.dtype), x01], dim=1)
        skips = []
        h = inputs
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = skips.pop()
        for up, merge in zip(self.up_convs, self.merge_convs, strict=True):
            h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
            skip = skips.pop()
            extra = [inputs] if not skips else []
            h = merge(torch.cat([skip, h, *extra], dim=1))
        change = torch.sigmoid(self.to_image(h)) * 2 - 1 - images
        if self.config.luma:
            # Keep only the residual's luminance (BT.601 weights), added to R, G and B alike:
            # no chroma at all, so no colour cast, and JPEG's chroma subsampling cannot touch it.
            weights = LUMA.to(device=change.device, dtype=change.dtype).view(1, 3, 1, 1)
            change = (change * weights).sum(dim=1, keepdim=True)
        return change


class StegoDecoder(nn.Module):
    def __init__(self, config: StegoConfig) -> None:
        super().__init__()
        self.config = config.validate()
        spec = [(3, 32, 1), (32, 32, 2), (32, 64, 2), (64, 64, 2), (64, 64, 2), (64, 128, 2)]
        spec.append((128, 128, 1))
        self.convs = nn.Sequential(*[_conv(cin, cout, s) for cin, cout, s in spec])
        side = config.resolution // 32
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 512), nn.ReLU(inplace=True)
        )
        self.logits = nn.Linear(512, config.bits)

    def forward(self, images: Tensor) -> Tensor:
        r = self.config.resolution
        if images.shape[-2:] != (r, r):
            raise ValueError(f"decoder expects {r}x{r} images, got {tuple(images.shape[-2:])}")
        return self.logits(self.head(self.convs(images)))


def resize_to(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize, antialiased when shrinking (so fine detail is averaged, not aliased)."""
    if images.shape[-2:] == size:
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(
        images, size=size, mode="bilinear", align_corners=False, antialias=shrinking
    )


def embed_any_size(
    encoder: StegoEncoder, images: Tensor, fingerprints: Tensor, strength: float = 1.0
) -> Tensor:
    """Fingerprint images of any size: encode at the model's resolution, upsample the residual
    (encoded minus input, both at that resolution) to the image size and add it, scaled by
    ``strength`` (below 1: less visible, less robust)."""
    r = encoder.config.resolution
    small = resize_to(images, (r, r))
    residual = (encoder(small, fingerprints) - small) * strength
    return (images + resize_to(residual, tuple(images.shape[-2:]))).clamp(-1, 1)


def grow_decoder_head(weight: Tensor, old_side: int, new_side: int) -> Tensor:
    """The decoder's first linear layer, trained on a ``old_side``² feature grid, for a
    ``new_side``² grid: each old position's weights spread over the block of new positions it
    covers, divided by the block's size, so the layer sees the block's mean as it saw the old
    position. Lets a model trained at one resolution start a run at a larger one (the encoder
    is fully convolutional and carries over as it is)."""
    if new_side % old_side:
        raise GantkError(f"cannot grow a {old_side}x{old_side} decoder grid to {new_side}")
    factor = new_side // old_side
    grid = weight.view(weight.shape[0], -1, old_side, old_side)
    grid = grid.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    return (grid / factor**2).reshape(weight.shape[0], -1)


def decode_any_size(decoder: StegoDecoder, images: Tensor) -> Tensor:
    """Bit logits for images of any size (resized to the model's resolution)."""
    r = decoder.config.resolution
    return decoder(resize_to(images, (r, r)))


def decode_bits(decoder: StegoDecoder, images: list[Tensor], batch: int = 64) -> np.ndarray:
    """Decoded 0/1 bits, (count, bits) uint8, of images (each (1, 3, H, W)) of any sizes.

    Each image is resized on its own, so a set may mix sizes; the decoder then runs on batches
    at its own resolution.
    """
    device = next(decoder.parameters()).device
    r = decoder.config.resolution
    rows = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = [resize_to(image, (r, r)) for image in images[start : start + batch]]
            logits = decoder(torch.cat(chunk).to(device))
            rows.append((logits > 0).cpu().numpy().astype(np.uint8))
    return np.concatenate(rows) if rows else np.zeros((0, decoder.config.bits), np.uint8)
