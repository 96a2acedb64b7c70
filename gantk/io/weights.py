"""Standard pretrained weights: found on disk, or fetched once on first use.

Weight files are looked up, in order, at an explicit path, in ``$GANTK_WEIGHTS_DIR``, and in
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where torchvision and pytorch-fid put
them). A file found nowhere is downloaded into the hub cache, as torchvision and pytorch-fid do:
a progress bar on stderr, the SHA-256 checked against the hash prefix in the file's name (the
torch hub convention), written under a temporary name and renamed only once complete and
verified, and one line saying where it went. ``$GANTK_WEIGHTS_URL`` names a mirror (the file
name is appended); ``GANTK_OFFLINE=1`` never downloads and names the file and its URL instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
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


OFFLINE_ENV = "GANTK_OFFLINE"
MIRROR_ENV = "GANTK_WEIGHTS_URL"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")
CHUNK = 1 << 20


def expected_hash_prefix(weight: WeightFile) -> str:
    """The SHA-256 prefix a file's name carries (``alexnet-owt-7be5be79.pth``)."""
    found = _HASH_IN_NAME.search(weight.filename)
    if found is None:  # every standard file has one; a new entry without one is a gantk bug
        raise ValueError(f"{weight.filename} carries no hash in its name")
    return found.group(1)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def source_url(weight: WeightFile) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{weight.filename}" if mirror else weight.url


def hub_dir() -> Path:
    """Where downloads go: torch's hub cache, shared with torchvision and pytorch-fid."""
    return search_dirs()[-1]


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
    if found is not None:
        return found
    if offline():
        where = " or ".join(str(d) for d in search_dirs())
        raise GantkError(
            f"{weight.filename} ({weight.used_by}) is not in {where} and {OFFLINE_ENV} is set: "
            f"fetch {source_url(weight)} and copy it there, or pass its path explicitly"
        )
    return download(weight)


Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 if unknown)


def _progress_bar(name: str) -> tuple[Progress, Callable[[], None]]:
    """A progress bar on stderr (only on a terminal), as (update, close)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    console = Console(stderr=True)
    bar = Progress(f"downloading {name}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=console, transient=True, disable=not console.is_terminal)  # fmt: skip
    task = bar.add_task(name, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    return update, bar.stop


def download(weight: WeightFile, progress: Progress | None = None) -> Path:
    """Fetch ``weight`` into the hub cache; the file appears only complete and verified."""
    import http.client
    import urllib.error
    import urllib.request

    url, folder = source_url(weight), hub_dir()
    target = folder / weight.filename
    prefix = expected_hash_prefix(weight)
    advice = f"fetch {url} elsewhere and copy it to {folder}, or pass its path explicitly"
    close: Callable[[], None] = lambda: None  # noqa: E731
    if progress is None:
        progress, close = _progress_bar(weight.filename)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{weight.filename}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise GantkError(f"cannot write into {folder} ({exc.strerror}); {advice}") from exc
    tmp = Path(name)
    try:
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, total)
        if total and done != total:
            raise GantkError(
                f"the download of {weight.filename} from {url} stopped after {done} of {total} "
                f"bytes; run the command again, or {advice}"
            )
        if not digest.hexdigest().startswith(prefix):
            raise GantkError(
                f"{weight.filename} from {url} has SHA-256 {digest.hexdigest()[:16]}..., not "
                f"{prefix}... as its name says: a damaged or different file; nothing was kept. "
                f"Try again or another mirror ({MIRROR_ENV}), or {advice}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise GantkError(
            f"could not download {weight.filename} from {url} ({reason}); {advice}"
        ) from None
    finally:
        close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    print(f"downloaded {weight.filename} ({done / 2**20:.1f} MiB) to {target}", file=sys.stderr)
    return target


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
