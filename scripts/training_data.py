"""Builds the training and held-out images of the bundled models from installed Debian packages.

    python scripts/training_data.py [OUT]        # default data/training; run by training_data.sh

Sources (installed by scripts/training_data.sh): photographic wallpapers (plasma-workspace-
wallpapers, mate-backgrounds, ukui-wallpapers) and game texture packs of photographed materials
(ufoai-textures, openarena-081-textures, nexuiz-textures, read inside their .pk3 zip archives).

Writes under OUT:
- sources/{photos,textures}/{train,heldout}/GROUP__NAME.png: every selected source image, its
  long side capped at 2048 px;
- manifest.csv: one row per written file: file, package, origin (path, and member inside an
  archive), group, kind, split, width, height, bytes, sha256 of the written file;
- heldout-mixed/: held-out photos and textures at their own mixed sizes (64 px to 1536 px, any
  aspect), the set the stego model's held-out figures are measured on, and heldout-768/: the
  held-out photos with their long side at 768 px;
- stego-train-64.h5: multi-scale random crops (64 px) of the training photos and textures (the
  paper's design, whose encoder sees the image shrunk to 64 px);
- stego-train-128.h5: 128 px crops (canvases of 2x2 tiles) for the native-resolution design,
  from the images at their own resolution down to 1/16 of it (photos) or 1/4 (textures), so
  the canvases have the pixel statistics of photos as people keep them, large and small;
- texture-{train,heldout}/: the textures the Texture Mixer trains and is scored on (hard links):
  those at most 4:1 in aspect (strips of trim are not textures) with a short side of at least
  128 px, so a 64 px crop fits in the top 75 % of rows the trainer uses.

The split is by *group*, not by file: a wallpaper shipped at several resolutions is one group,
a texture folder of a game (e.g. nexuiz egyptsoc_wall) is one group, so no held-out image shares
a picture or a texture set with a training image. A group is held out when the first byte of
sha256(group name) is below 38 (about 15 %): deterministic, and stable when packages change.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_PACKAGES = ["plasma-workspace-wallpapers", "mate-backgrounds", "ukui-wallpapers"]
TEXTURE_PACKAGES = ["ufoai-textures", "openarena-081-textures", "nexuiz-textures"]
RASTER = (".jpg", ".jpeg", ".png", ".tga", ".webp")
# Game textures come with companion maps that are not pictures of a material: normals,
# specular/gloss, glow, height/bump, team-colour masks. Their names end like this.
NOT_A_PICTURE = re.compile(
    r"(_(nm|sm|norm|normal|gloss|glow|bump|spec|luma|shirt|pants|reflect|h|local|alpha|mask|"
    r"blend|fx|add|dark|light|lit|ao|height|disp|d2|n|s|g))$",
    re.IGNORECASE,
)
MIN_SIDE = {"photos": 512, "textures": 128}
MAX_SIDE = 2048
HELDOUT_BYTE = 38  # sha256(group)[0] < 38: about 15 % of groups
MIXED_SIDES = [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536]
# (crops, resolution, largest zoom of photos, of textures) of each stego training pack.
STEGO_PACKS = [(30000, 64, 32.0, 8.0), (16000, 128, 16.0, 4.0)]


@dataclass
class Candidate:
    package: str
    origin: str
    group: str
    kind: str
    read: object  # () -> bytes


def package_files(package: str) -> list[str]:
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: package {package} is not installed; run scripts/training_data.sh")
    return result.stdout.split()


def photo_candidates() -> Iterator[Candidate]:
    """One file per wallpaper: the largest rendition (plasma ships several sizes of each)."""
    for package in PHOTO_PACKAGES:
        by_group: dict[str, list[Path]] = {}
        for name in package_files(package):
            path = Path(name)
            if path.suffix.lower() not in RASTER or "screenshot" in path.name.lower():
                continue
            # /usr/share/wallpapers/NAME/contents/images/WxH.ext -> NAME; else the file stem.
            parts = path.parts
            group = parts[parts.index("wallpapers") + 1] if "contents" in parts else path.stem
            by_group.setdefault(f"{package}:{group}", []).append(path)
        for group, paths in sorted(by_group.items()):
            best = max(paths, key=lambda p: p.stat().st_size)
            yield Candidate(package, str(best), group, "photos", best.read_bytes)


def texture_candidates() -> Iterator[Candidate]:
    for package in TEXTURE_PACKAGES:
        for archive in (p for p in package_files(package) if p.endswith(".pk3")):
            with zipfile.ZipFile(archive) as zf:
                members = sorted(zf.namelist())
            for member in members:
                stem, ext = Path(member).stem, Path(member).suffix.lower()
                if ext not in RASTER or NOT_A_PICTURE.search(stem):
                    continue
                folder = Path(member).parent.name

                def read(archive: str = archive, member: str = member) -> bytes:
                    with zipfile.ZipFile(archive) as zf:
                        return zf.read(member)

                yield Candidate(package, f"{archive}!{member}", f"{package}:{folder}",
                                "textures", read)  # fmt: skip


def usable(image: Image.Image, kind: str) -> np.ndarray | None:
    """RGB array of a picture worth training on, or None (too small, mostly transparent,
    nearly flat)."""
    if min(image.size) < MIN_SIDE[kind]:
        return None
    if image.mode in ("RGBA", "LA", "P"):
        rgba = np.asarray(image.convert("RGBA"))
        if (rgba[..., 3] < 250).mean() > 0.01:
            return None
    arr = np.asarray(image.convert("RGB"))
    if arr.std() < 12:
        return None
    return arr


def capped(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return arr
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))


def split_of(group: str) -> str:
    return "heldout" if hashlib.sha256(group.encode()).digest()[0] < HELDOUT_BYTE else "train"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def write_sources(out: Path) -> list[dict]:
    rows = []
    for cand in [*photo_candidates(), *texture_candidates()]:
        try:
            with Image.open(io.BytesIO(cand.read())) as image:
                image.load()
                arr = usable(image, cand.kind)
        except (OSError, SyntaxError, ValueError) as exc:
            print(f"skipped {cand.origin}: {exc}", file=sys.stderr)
            continue
        if arr is None:
            continue
        arr = capped(arr)
        split = split_of(cand.group)
        # The origin's hash keeps names unique where two files differ only in their extension.
        tag = hashlib.sha256(cand.origin.encode()).hexdigest()[:6]
        stem = Path(cand.origin.split("!")[-1]).stem
        name = safe_name(f"{cand.group}__{stem}") + f"_{tag}.png"
        path = out / "sources" / cand.kind / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, optimize=False, compress_level=3)
        data = path.read_bytes()
        rows.append({"file": str(path.relative_to(out)), "package": cand.package,
                     "origin": cand.origin, "group": cand.group, "kind": cand.kind,
                     "split": split, "width": arr.shape[1], "height": arr.shape[0],
                     "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
    return rows


def write_heldout_768(out: Path, rows: list[dict]) -> None:
    """Every held-out photo with its long side at 768 px (aspect kept): the photo set of the
    stego model's photo targets (a phone photo shared online, a web page's picture)."""
    folder = out / "heldout-768"
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row["split"] != "heldout" or row["kind"] != "photos":
            continue
        image = Image.open(out / row["file"]).convert("RGB")
        scale = 768 / max(image.size)
        size = (round(image.size[0] * scale), round(image.size[1] * scale))
        image.resize(size, Image.Resampling.LANCZOS).save(folder / Path(row["file"]).name)


def write_mixed_heldout(out: Path, rows: list[dict]) -> None:
    """Held-out photos and textures at their own sizes: each source once, resized so its long
    side is one of MIXED_SIDES (cycling), aspect kept."""
    folder = out / "heldout-mixed"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    held = [r for r in rows if r["split"] == "heldout"]
    photos = [r for r in held if r["kind"] == "photos"]
    textures = [r for r in held if r["kind"] == "textures"]
    # All held-out photos and as many textures, at least 20, so neither kind dominates.
    count = max(len(photos), 20)
    picked = photos + list(rng.permutation(np.array(textures, dtype=object))[:count])
    # Photos are large, so they take the sizes from the top down; textures cycle through all.
    sides = [MIXED_SIDES[-1 - i % len(MIXED_SIDES)] for i in range(len(photos))]
    sides += [MIXED_SIDES[i % len(MIXED_SIDES)] for i in range(len(picked) - len(photos))]
    for i, (row, side) in enumerate(zip(picked, sides, strict=True)):
        arr = np.asarray(Image.open(out / row["file"]).convert("RGB"))
        h, w = arr.shape[:2]
        scale = min(1.0, side / max(h, w))
        size = (max(64, round(w * scale)), max(64, round(h * scale)))
        small = Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS)
        small.save(folder / f"{i:03d}_{row['kind']}_{Path(row['file']).stem[:60]}.png")


def write_stego_pack(
    out: Path, rows: list[dict], count: int, resolution: int, photo_zoom: float, texture_zoom: float
) -> None:
    """Multi-scale random crops: 60 % from photos, 40 % from textures, balanced over files."""
    from gantk.io.builtin.crops import random_crops
    from gantk.io.dataset_base import ArrayDataset
    from gantk.io.packs import write_pack

    def loaders(kind: str) -> dict:
        chosen = [r for r in rows if r["split"] == "train" and r["kind"] == kind]
        return {r["file"]: (lambda p=out / r["file"]: np.asarray(Image.open(p).convert("RGB")))
                for r in chosen}  # fmt: skip

    n_photos = int(count * 0.6)
    parts = [
        random_crops(loaders("photos"), n_photos, resolution, 1, photo_zoom, "photos"),
        random_crops(loaders("textures"), count - n_photos, resolution, 2, texture_zoom, "t"),
    ]
    images = np.concatenate([p.images for p in parts])
    order = np.random.default_rng(3).permutation(len(images))
    name = f"stego-train-{resolution}"
    write_pack(ArrayDataset(images[order], name), out / f"{name}.h5", with_labels=False,
               force=True)  # fmt: skip


TEXTURE_MIN_SIDE = 128
TEXTURE_MAX_ASPECT = 4.0


def write_texture_sets(out: Path, rows: list[dict]) -> None:
    for split in ("train", "heldout"):
        folder = out / f"texture-{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            w, h = int(row["width"]), int(row["height"])
            if row["kind"] != "textures" or row["split"] != split:
                continue
            if min(w, h) < TEXTURE_MIN_SIDE or max(w, h) > TEXTURE_MAX_ASPECT * min(w, h):
                continue
            link = folder / Path(row["file"]).name
            if not link.exists():
                link.hardlink_to(out / row["file"])


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/training")
    out.mkdir(parents=True, exist_ok=True)
    rows = write_sources(out)
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_mixed_heldout(out, rows)
    write_heldout_768(out, rows)
    for pack in STEGO_PACKS:
        write_stego_pack(out, rows, *pack)
    write_texture_sets(out, rows)
    for kind in ("photos", "textures"):
        for split in ("train", "heldout"):
            n = sum(1 for r in rows if r["kind"] == kind and r["split"] == split)
            groups = len({r["group"] for r in rows if r["kind"] == kind and r["split"] == split})
            print(f"{kind:8s} {split:8s} {n:5d} images in {groups:4d} groups")


if __name__ == "__main__":
    main()
