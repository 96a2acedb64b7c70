"""LPIPS (Zhang et al. 2018): learned perceptual distance between two images.

The ``lpips`` wheel ships only the learned linear heads (``lpips/weights/v0.1/{alex,vgg}.pth``);
the AlexNet/VGG16 trunks are torchvision's ImageNet weights, which lpips would download. gantk
never downloads, so the model is built with a random trunk and the torchvision file is then
loaded from disk, found by :func:`gantk.io.weights.find_weights` (an explicit path,
``$GANTK_WEIGHTS_DIR`` or ``$TORCH_HOME/hub/checkpoints``). With the standard file this is
exactly the standard LPIPS.

AlexNet's stride-4 first layer and two max-pools leave no spatial extent below 31 px, so images
smaller than :data:`MIN_SIZE` are upsampled (bilinear) to it before the network; results at
such sizes are therefore not comparable with numbers other tools would refuse to compute.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError
from gantk.io.weights import STANDARD_WEIGHTS, find_weights

# LPIPS network name -> key of the torchvision trunk file in gantk.io.weights.
TRUNK_WEIGHTS = {"alex": "alexnet", "vgg": "vgg16"}
NET_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
MIN_SIZE = 32

Advance = Callable[[int], None] | None


def _trunk_key_map(trunk: nn.Module) -> dict[str, str]:
    """lpips trunk state-dict key -> torchvision ``features.N.*`` key.

    lpips splits torchvision's ``features`` Sequential into ``slice1..sliceK`` but registers
    every layer under its original index (``slice2.3`` is ``features[3]``), so the mapping is
    just the slice prefix dropped.
    """
    mapping = {}
    for name in trunk.state_dict():
        slice_name, index, rest = name.split(".", 2)
        if not slice_name.startswith("slice"):
            raise RuntimeError(f"unexpected lpips trunk tensor {name}")
        mapping[name] = f"features.{index}.{rest}"
    return mapping


def _read_state_dict(path: Path, filename: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, not a torch file, or a pickle of arbitrary objects
        raise GantkError(
            f"cannot read {path} as a torch state dict ({type(exc).__name__}); "
            f"replace it with torchvision's {filename}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GantkError(
            f"{path} is not a state dict of tensors; replace it with torchvision's {filename}"
        )
    return state


def load_lpips(
    net: str = "alex", weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """The standard LPIPS model (v0.1) with trunk ``net`` ("alex" or "vgg"), frozen, in eval mode.

    ``weights`` is the torchvision trunk file (``alexnet-owt-7be5be79.pth`` or
    ``vgg16-397923af.pth``); without it the file is looked up in ``$GANTK_WEIGHTS_DIR`` and the
    torch hub cache. A missing file, or one that does not fit the architecture, raises
    GantkError.
    """
    name = NET_ALIASES.get(net.lower())
    if name is None:
        raise GantkError(f"LPIPS network {net!r} is not supported; use 'alex' or 'vgg'")
    key = TRUNK_WEIGHTS[name]
    filename = STANDARD_WEIGHTS[key].filename
    path = find_weights(key, weights)  # before building: a missing file should fail fast
    state = _read_state_dict(path, filename)

    import lpips

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated ``pretrained=`` argument; the warning is about
        # lpips' code, not something the user can act on.
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=name, pretrained=True, pnet_rand=True, verbose=False)

    mapping = _trunk_key_map(model.net)
    expected = model.net.state_dict()
    problems = []
    for ours, theirs in mapping.items():
        if theirs not in state:
            problems.append(f"{theirs} missing")
        elif state[theirs].shape != expected[ours].shape:
            problems.append(
                f"{theirs} is {tuple(state[theirs].shape)}, expected {tuple(expected[ours].shape)}"
            )
    if problems:
        raise GantkError(
            f"{path} does not fit torchvision's {key} ({len(problems)} of {len(mapping)} trunk "
            f"tensors wrong, e.g. {problems[0]}); give the file {filename} "
            f"from {STANDARD_WEIGHTS[key].url}"
        )
    # strict=True: every trunk tensor must be replaced, none left at its random init.
    model.net.load_state_dict(
        {ours: state[theirs].float() for ours, theirs in mapping.items()}, strict=True
    )
    model.gantk_name = f"lpips-{name}"
    return model.to(device).eval().requires_grad_(False)


def network_name(model: nn.Module) -> str:
    """'lpips-alex' / 'lpips-vgg', the name results carry."""
    return getattr(model, "gantk_name", f"lpips-{getattr(model, 'pnet_type', 'unknown')}")


def _ensure_min_size(x: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    if min(height, width) >= MIN_SIZE:
        return x
    scale = MIN_SIZE / min(height, width)
    size = (round(height * scale), round(width * scale))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def lpips_distance(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS between ``a[i]`` and ``b[i]``: float (B, 3, H, W) in [-1, 1] -> (B,).

    Differentiable with respect to both inputs (IvOM optimises through it). Images smaller than
    :data:`MIN_SIZE` are upsampled first (see the module docstring).
    """
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"need two (B, 3, H, W) batches of one shape, got {a.shape}, {b.shape}")
    return model(_ensure_min_size(a), _ensure_min_size(b)).reshape(a.shape[0])


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (.., 3, H, W) -> float32 in [-1, 1]; u maps to the centre of the float interval
    that :func:`gantk.io.images.to_uint8` rounds to u."""
    return images.float() / 127.5 - 1.0


def resize_to(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a float (B, C, H, W) batch, antialiased when shrinking."""
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _pair_files(dataset_a: Any, dataset_b: Any) -> list[tuple[str, int, int]]:
    """(name, index in a, index in b) sorted by name, or GantkError saying what differs."""
    names_a, names_b = dataset_a.filenames, dataset_b.filenames
    for dataset, names in ((dataset_a, names_a), (dataset_b, names_b)):
        if names is None:
            raise GantkError(
                f"{dataset.name} has no file names to pair images by; use a folder, or a pack "
                "written from one"
            )
    if len(names_a) != len(names_b):
        raise GantkError(
            f"paired LPIPS needs the same images in both sets: {dataset_a.name} has "
            f"{len(names_a)} and {dataset_b.name} has {len(names_b)}"
        )
    if len(names_a) == 0:
        raise GantkError(f"{dataset_a.name} holds no images")
    index_a = {n: i for i, n in enumerate(names_a)}
    index_b = {n: i for i, n in enumerate(names_b)}
    if index_a.keys() != index_b.keys():
        # Reconstructions are often saved as .png next to .jpg originals: accept names that agree
        # once the extension is dropped, provided that leaves them unambiguous.
        stems_a = {str(Path(n).with_suffix("")): i for n, i in index_a.items()}
        stems_b = {str(Path(n).with_suffix("")): i for n, i in index_b.items()}
        unique = len(stems_a) == len(index_a) and len(stems_b) == len(index_b)
        if unique and stems_a.keys() == stems_b.keys():
            by_name = {names_a[i]: (i, stems_b[s]) for s, i in stems_a.items()}
            return [(n, *by_name[n]) for n in sorted(by_name)]
        only_a = sorted(index_a.keys() - index_b.keys())
        only_b = sorted(index_b.keys() - index_a.keys())
        raise GantkError(
            f"paired LPIPS pairs images by file name, and {len(only_a)} names differ: "
            f"e.g. {only_a[0]!r} is only in {dataset_a.name} and {only_b[0]!r} only in "
            f"{dataset_b.name}; give two sets with the same file names"
        )
    return [(n, index_a[n], index_b[n]) for n in sorted(index_a)]


@torch.no_grad()
def paired_lpips(
    model: nn.Module,
    dataset_a: Any,
    dataset_b: Any,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    advance: Advance = None,
) -> dict:
    """LPIPS between images of the same file name in two datasets (e.g. originals and their
    reconstructions or fingerprinted copies).

    Returns ``{"network", "mean", "std", "count", "per_image": [{"file", "lpips"}], "resized"}``
    (std with ddof=0), sorted by file name; ``resized`` is true when some image of ``dataset_b``
    had another size and was resized (bilinear) to its partner's, and ``upsampled_to`` appears
    when images were below :data:`MIN_SIZE`. ``advance(n)`` is called after each batch of n
    pairs.
    """
    pairs = _pair_files(dataset_a, dataset_b)
    model = model.to(device)
    values: list[float] = []
    resized = small = False
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images_a, images_b = [], []
        for _, ia, ib in chunk:
            img_a = to_unit_range(dataset_a[ia][0])
            img_b = to_unit_range(dataset_b[ib][0])
            if img_b.shape != img_a.shape:
                img_b = resize_to(img_b[None], img_a.shape[-2:])[0]
                resized = True
            small = small or min(img_a.shape[-2:]) < MIN_SIZE
            images_a.append(img_a)
            images_b.append(img_b)
        # Folders read at native size may mix sizes: one network call per size in the batch.
        out = torch.empty(len(chunk))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, img in enumerate(images_a):
            by_shape.setdefault(tuple(img.shape), []).append(k)
        for members in by_shape.values():
            a = torch.stack([images_a[k] for k in members]).to(device)
            b = torch.stack([images_b[k] for k in members]).to(device)
            out[members] = lpips_distance(model, a, b).float().cpu()
        values.extend(out.tolist())
        if advance is not None:
            advance(len(chunk))
    arr = np.asarray(values, dtype=np.float64)
    result: dict = {
        "network": network_name(model),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "count": len(values),
        "resized": resized,
        "per_image": [
            {"file": name, "lpips": value}
            for (name, _, _), value in zip(pairs, values, strict=True)
        ],
    }
    if small:
        result["upsampled_to"] = MIN_SIZE
    return result
