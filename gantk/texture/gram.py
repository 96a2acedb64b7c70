"""Gram-matrix texture statistics on VGG-19 relu1_1 ... relu5_1 (Gatys et al.; Johnson et al.'s
normalisation), for the Texture Mixer's losses and its CGD/CCD metrics.

The standard network is torchvision's ImageNet VGG-19 (``vgg19-dcbb9e9d.pth``, looked up as in
gantk/io/weights.py). Without that file the fallback is the same architecture with fixed random
He-initialised weights (seed 0): Gram matrices of random convolutional features already capture
much of a texture's appearance (Ustyuzhaninov et al., "What does it take to generate natural
textures?", ICLR 2017), so training still has a meaningful style signal. The name of the network
used travels with every checkpoint and metric (``random-vgg19``) so the two are never confused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.io.weights import find_weights, locate

STANDARD = "vgg19"
RANDOM = "random-vgg19"
GRAM_NETS = (STANDARD, RANDOM, "auto")
RELU_LAYERS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19.features
RANDOM_SEED = 0

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class GramNet(nn.Module):
    """VGG-19 up to relu5_1, frozen; ``forward`` returns the five relu*_1 activations of
    images in [-1, 1]."""

    def __init__(self, features: nn.Sequential, name: str, path: str | None) -> None:
        super().__init__()
        self.features = features[: RELU_LAYERS[-1] + 1]
        self.name = name
        self.path = path
        self.register_buffer("mean", _MEAN.clone(), persistent=False)
        self.register_buffer("std", _STD.clone(), persistent=False)
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the activations we keep must not be overwritten
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> list[Tensor]:
        x = ((images.float() + 1) / 2 - self.mean) / self.std
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in RELU_LAYERS:
                out.append(x)
        return out


def load_gram_net(
    choice: str = "auto", weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> GramNet:
    """``vgg19`` needs the ImageNet weight file (error saying where to put it when missing),
    ``random-vgg19`` never reads one, ``auto`` takes the file when it is there."""
    from torchvision.models.vgg import cfgs as vgg_cfgs
    from torchvision.models.vgg import make_layers as vgg_make_layers

    if choice not in GRAM_NETS:
        raise GantkError(f"--gram-net {choice!r} is not one of {', '.join(GRAM_NETS)}")
    if choice == RANDOM and weights is not None:
        raise GantkError("--gram-weights is a VGG-19 file, but --gram-net random-vgg19 uses none")
    if choice == "auto":
        choice = STANDARD if (weights is not None or locate("vgg19") is not None) else RANDOM
    # Only the convolutional part: the 102M-parameter classifier would cost seconds to build.
    features = vgg_make_layers(vgg_cfgs["E"])
    path = None
    if choice == STANDARD:
        path = find_weights("vgg19", weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            prefix = "features."
            feature_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            features.load_state_dict(feature_state)
        except Exception as exc:  # unreadable file or another architecture's state dict
            raise GantkError(
                f"{path} is not torchvision's VGG-19 weight file ({type(exc).__name__}); "
                "use vgg19-dcbb9e9d.pth"
            ) from None
    else:
        generator = torch.Generator().manual_seed(RANDOM_SEED)
        for module in features:
            if isinstance(module, nn.Conv2d):
                # He-normal keeps activations at unit scale through 16 layers, so the random
                # network's Gram matrices have the same order of magnitude as the trained one's.
                fan_in = module.in_channels * 9
                with torch.no_grad():
                    module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                    module.bias.zero_()
    return GramNet(features, choice, str(path) if path else None).to(device)


def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C), normalised by C*H*W (Johnson et al.) so it does not depend
    on the image size: a crop and a whole canvas of one texture compare directly."""
    b, c, h, w = features.shape
    # In float32 even under bf16 autocast: a sum over H*W products, where bf16's 8-bit mantissa
    # would round away the small differences the Gram losses are made of.
    with torch.autocast(features.device.type, enabled=False):
        flat = features.reshape(b, c, h * w)
        if flat.dtype in (torch.bfloat16, torch.float16):
            flat = flat.float()
        return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_matrices(net: GramNet, images: Tensor) -> list[Tensor]:
    return [gram_matrix(f) for f in net(images)]


def gram_distance(grams_a: list[Tensor], grams_b: list[Tensor]) -> Tensor:
    """Per-sample squared Frobenius distance summed over the five layers, shape (B,)."""
    return sum(((a - b) ** 2).sum(dim=(1, 2)) for a, b in zip(grams_a, grams_b, strict=True))


def gram_vector(grams: list[Tensor]) -> Tensor:
    """All layers' Gram matrices as one flat vector per sample (for the CCD cosine)."""
    return torch.cat([g.flatten(1) for g in grams], dim=1)
