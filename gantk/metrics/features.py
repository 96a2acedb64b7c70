"""Feature networks for distribution metrics, loaded offline.

- ``inception``: the FID InceptionV3 with the standard weights
  (pt_inception-2015-12-05-6726825d.pth), 2048-d pool3 features; images are resized to 299x299
  bilinearly inside the network, exactly as the pytorch-fid command line does. FID and KID use it.
  fid_inception.py computes pytorch-fid's features (to float32 rounding) in half the time.
- ``vgg16``: torchvision's VGG16 with ImageNet weights (vgg16-397923af.pth), 4096-d activations
  of the second fully connected layer (after ReLU) on 224x224 inputs: the feature space of
  improved precision and recall (Kynkäänniemi et al. 2019).
- ``random-inception`` / ``random-vgg16``: the same architectures with seeded random weights,
  for smoke tests and machines without the weight files. Metrics computed with them carry the
  name in brackets (``fid[random-inception]``) so they are never mistaken for standard numbers.

Every network takes uint8 images (B, 3, H, W) and returns float32 features (B, D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.io.weights import find_weights

# PRD (Sajjadi et al. 2018) clusters Inception pool features, as the authors' code does.
STANDARD_FOR = {"fid": "inception", "kid": "inception", "pr": "vgg16", "prd": "inception"}
RANDOM_SEED = 0  # random-* networks are the same on every machine


@dataclass
class FeatureNet:
    name: str
    dim: int
    module: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]
    weights: str | None  # the file the weights came from, None when random

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images.to(self.device))
        return self.module(x).float().flatten(1)

    def to(self, device: str | torch.device) -> FeatureNet:
        self.module.to(device)
        return self


def metric_name(metric: str, features: str) -> str:
    """'fid' with the standard network, 'fid[random-inception]' with any other."""
    return metric if STANDARD_FOR.get(metric) == features else f"{metric}[{features}]"


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise GantkError(
            f"{path} is not a readable weight file ({type(exc).__name__}); "
            "re-copy it from its source"
        ) from None


def _variance_preserving_init(net: nn.Module) -> None:
    """He-normal convs: PyTorch's default init shrinks activations through Inception's ~100
    layers to ~1e-8, which would make random-feature distances numerically meaningless."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")


def fid_inception_architecture() -> nn.Module:
    """pytorch-fid's bare FID InceptionV3 (the network whose state dict the FID weight file
    holds) with seeded random weights: the reference the fast network is checked against, and
    the source of ``random-inception``'s weights. pytorch-fid builds it only by downloading the
    weights; this builds the same architecture through its own classes without a network."""
    import pytorch_fid.inception as pfi

    torch.manual_seed(RANDOM_SEED)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    # The FID network's blocks differ from torchvision's (pytorch-fid, fid_inception_v3).
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    _variance_preserving_init(net)
    return net


def _fid_inception(state: dict | None) -> nn.Module:
    """The FID network's pool3 features (gantk.metrics.fid_inception: pytorch-fid's numbers in
    half the time); ``state`` None gives the seeded random weights."""
    from gantk.metrics.fid_inception import FIDInception

    if state is None:
        state = fid_inception_architecture().state_dict()
    return FIDInception(state)


def _vgg16_fc2(state: dict | None) -> nn.Module:
    import torchvision

    torch.manual_seed(RANDOM_SEED)
    net = torchvision.models.vgg16(weights=None)
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise GantkError(
                f"the VGG16 weight file does not fit torchvision's VGG16 "
                f"({str(exc).splitlines()[0]}); use vgg16-397923af.pth"
            ) from None
    net.classifier = net.classifier[:5]  # up to the ReLU after the second FC layer (fc2)
    # Channels-last: oneDNN's fastest CPU layout (1.4x on the 2-core VM, same features to 1e-6).
    return net.to(memory_format=torch.channels_last).eval()


_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _prepare_inception(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0  # the network resizes to 299 and maps to [-1, 1] itself


def _prepare_vgg(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    x = (x - _IMAGENET_MEAN.to(x.device)) / _IMAGENET_STD.to(x.device)
    return x.contiguous(memory_format=torch.channels_last)


FEATURE_NETS = ("inception", "vgg16", "random-inception", "random-vgg16")


def load_feature_net(
    name: str, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> FeatureNet:
    """Build feature network ``name``; standard ones read their weight file (see weights.py)."""
    if name not in FEATURE_NETS:
        raise GantkError(f"--features {name!r} is not one of {', '.join(FEATURE_NETS)}")
    base = name.removeprefix("random-")
    path = None
    state = None
    if not name.startswith("random-"):
        path = find_weights("inception-fid" if base == "inception" else "vgg16", weights)
        state = _load_state(path)
    if base == "inception":
        net = FeatureNet(
            name, 2048, _fid_inception(state), _prepare_inception, str(path) if path else None
        )
    else:
        net = FeatureNet(name, 4096, _vgg16_fc2(state), _prepare_vgg, str(path) if path else None)
    net.module.requires_grad_(False)
    return net.to(device)


INCEPTION_CLASSES = 1008  # the 2015-12-05 Inception's softmax: ImageNet's 1000 and 8 unused


class _Logits(nn.Module):
    """pool3 features -> the classifier's logits without its bias."""

    def __init__(self, trunk: nn.Module, weight: torch.Tensor) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("weight", weight.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x) @ self.weight.T


def load_inception_logits(
    name: str = "inception", weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> FeatureNet:
    """The FID InceptionV3 up to its 1008 class logits, for Inception scores: pool3 features
    times the softmax layer's weights, *without* its bias, as the original Inception Score code
    (Salimans et al. 2016, which reads the same 2015-12-05 network's ``softmax/logits/MatMul``)
    and torch-fidelity's ``logits_unbiased`` compute them. ``random-inception`` is the seeded
    random network of :func:`load_feature_net` with its random classifier."""
    if name not in ("inception", "random-inception"):
        raise GantkError(f"Inception logits come from inception or random-inception, not {name!r}")
    path = None
    if name == "inception":
        path = find_weights("inception-fid", weights)
        state = _load_state(path)
    else:
        if weights is not None:
            raise GantkError("random-inception reads no weight file; drop the Inception weights")
        with torch.random.fork_rng(devices=[]):  # seeding must not move the caller's stream
            state = fid_inception_architecture().state_dict()
    fc = state.get("fc.weight")
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (INCEPTION_CLASSES, 2048):
        raise GantkError(
            f"{path or name} has no {INCEPTION_CLASSES}-class classifier (fc.weight), which "
            "Inception scores need; use pt_inception-2015-12-05-6726825d.pth"
        )
    module = _Logits(_fid_inception(state), fc)
    net = FeatureNet(
        name, INCEPTION_CLASSES, module, _prepare_inception, str(path) if path else None
    )
    net.module.requires_grad_(False)
    return net.to(device)
