"""Finding standard pretrained weights without a network.

gantk never downloads. Weight files are looked up, in order, at an explicit path, in
``$GANTK_WEIGHTS_DIR``, and in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where
torchvision and pytorch-fid put them). A missing file gives an error naming the file and where
it normally comes from, so it can be fetched on another machine and copied over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gantk.errors import GantkError


@dataclass(frozen=True)
class WeightFile:
    key: str
    filename: str
    url: str
    used_by: str


STANDARD_WEIGHTS: dict[str, WeightFile] = {
    w.key: w
    for w in [
        WeightFile(
            "inception-fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            "FID, KID, precision/recall",
        ),
        WeightFile(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "LPIPS (alex backbone)",
        ),
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "LPIPS (vgg backbone), Gram-matrix texture losses",
        ),
        WeightFile(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "Texture Mixer style losses",
        ),
    ]
}


def search_dirs() -> list[Path]:
    """Folders searched for weight files, in order."""
    dirs = []
    if os.environ.get("GANTK_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["GANTK_WEIGHTS_DIR"]).expanduser())
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    dirs.append(Path(torch_home).expanduser() / "hub" / "checkpoints")
    return dirs


def locate(key: str) -> Path | None:
    weight = STANDARD_WEIGHTS[key]
    for folder in search_dirs():
        candidate = folder / weight.filename
        if candidate.is_file():
            return candidate
    return None


def find_weights(key: str, explicit: str | Path | None = None) -> Path:
    """Path of the weight file ``key``; raises GantkError saying where to put it if missing."""
    weight = STANDARD_WEIGHTS[key]
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise GantkError(
                f"weight file {path} does not exist; give the path of {weight.filename}"
            )
        return path
    found = locate(key)
    if found is None:
        where = " or ".join(str(d) for d in search_dirs())
        raise GantkError(
            f"{weight.filename} ({weight.used_by}) is not in {where}; this machine "
            f"cannot download it: fetch {weight.url} elsewhere and copy it there, "
            "or pass its path explicitly"
        )
    return found


def weights_report() -> list[dict[str, str | None]]:
    return [
        {
            "key": w.key,
            "file": w.filename,
            "used_by": w.used_by,
            "found": str(p) if (p := locate(w.key)) else None,
        }
        for w in STANDARD_WEIGHTS.values()
    ]
