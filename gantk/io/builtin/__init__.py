"""Built-in datasets: offline, deterministic, addressable as ``builtin:NAME`` wherever a dataset
is accepted.

A spec may carry options as a query string: ``builtin:shapes?minority=triangle:0.02&n=500``.
``n``, ``resolution`` and ``seed`` work for every dataset; others are listed per dataset. The
same spec, seed and resolution always give the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from gantk.errors import GantkError


@dataclass(frozen=True)
class BuiltinInfo:
    name: str
    summary: str
    default_count: int
    max_count: int
    default_resolution: int
    labels: str
    attributes: str
    source: str
    builder: str  # "module:function", imported only when the dataset is built
    options: dict[str, str] = field(default_factory=dict)

    def build(self) -> Callable:
        import importlib

        module, func = self.builder.split(":")
        return getattr(importlib.import_module(f"gantk.io.builtin.{module}"), func)


MAX_GENERATED = 1_000_000
MAX_SEED = 2**62  # as --seed (gantk.cli.common.SeedOpt)

BUILTINS: dict[str, BuiltinInfo] = {
    info.name: info
    for info in [
        BuiltinInfo(
            "digits",
            "handwritten digits 0-9 (sklearn), upsampled",
            1797,
            1797,
            32,
            "digit 0-9",
            "-",
            "sklearn.datasets.load_digits (8x8 originals)",
            "digits:build_digits",
        ),
        BuiltinInfo(
            "stacked-digits",
            "three digits in the R, G, B channels: 1000 modes",
            10000,
            MAX_GENERATED,
            32,
            "mode id 0-999 (100*R + 10*G + B)",
            "-",
            "Stacked-MNIST protocol on sklearn digits",
            "digits:build_stacked_digits",
        ),
        BuiltinInfo(
            "faces",
            "face crops of the LFW subset (skimage), upsampled",
            100,
            100,
            32,
            "-",
            "-",
            "skimage.data.lfw_subset (25x25 grayscale)",
            "crops:build_faces",
        ),
        BuiltinInfo(
            "textures",
            "random crops of texture-like images",
            2000,
            MAX_GENERATED,
            64,
            "source: brick, grass, gravel, moon, hubble, ihc",
            "-",
            "skimage.data (512-1000 px)",
            "crops:build_textures",
            {"sources": "comma-separated sources to crop from (default: all)"},
        ),
        BuiltinInfo(
            "photos",
            "random crops of natural photos",
            2000,
            MAX_GENERATED,
            64,
            "source: astronaut, coffee, chelsea, rocket, china, flower",
            "-",
            "skimage.data and sklearn sample images",
            "crops:build_photos",
            {"sources": "comma-separated sources to crop from (default: all)"},
        ),
        BuiltinInfo(
            "shapes",
            "procedural scenes of coloured shapes",
            2000,
            MAX_GENERATED,
            64,
            "shape: circle, square, triangle",
            "circle square triangle red green blue yellow large multiple",
            "generated",
            "shapes:build_shapes",
            {"minority": "ATTR[:FRACTION] makes one attribute rare (default 0.02)"},
        ),
    ]
}


def parse_spec(spec: str) -> tuple[BuiltinInfo, dict[str, str]]:
    """Split ``builtin:NAME?k=v&…`` into the dataset's info and its options."""
    body = spec.removeprefix("builtin:")
    name, _, query = body.partition("?")
    if name not in BUILTINS:
        raise GantkError(
            f"unknown dataset builtin:{name}; valid ones are "
            + ", ".join(f"builtin:{n}" for n in BUILTINS)
        )
    info = BUILTINS[name]
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    allowed = {"n", "resolution", "seed", *info.options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise GantkError(
            f"builtin:{name} has no option {unknown[0]!r}; it takes " + ", ".join(sorted(allowed))
        )
    return info, options


def _as_int(options: dict[str, str], key: str, spec: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options.pop(key))
    except ValueError:
        raise GantkError(f"{spec}: option {key} must be an integer") from None


def load_builtin(
    spec: str, count: int | None = None, resolution: int | None = None, seed: int | None = None
):
    """Build the dataset named by ``spec``; explicit arguments override the spec's options."""
    from gantk.io.images import check_resolution
    from gantk.io.limits import check_memory

    info, options = parse_spec(spec)
    count = count if count is not None else _as_int(options, "n", spec)
    resolution = resolution if resolution is not None else _as_int(options, "resolution", spec)
    written = _as_int(options, "seed", spec)
    if written is not None and not 0 <= written <= MAX_SEED:
        # The range --seed takes: a negative seed is a typo, not another dataset (checked even
        # where --seed overrides it, so it never passes silently).
        raise GantkError(f"{spec}: option seed must be in 0..{MAX_SEED}, got {written}")
    seed = seed if seed is not None else written
    options = {k: v for k, v in options.items() if k not in ("n", "resolution", "seed")}
    count = info.default_count if count is None else count
    if not 1 <= count <= info.max_count:
        raise GantkError(
            f"builtin:{info.name} has at most {info.max_count} images; ask for "
            f"1 to {info.max_count} (got {count})"
        )
    resolution = check_resolution(
        info.default_resolution if resolution is None else resolution, low=8, high=1024
    )
    # Built-ins are made in memory at once: refuse what cannot fit before drawing any of it.
    check_memory(
        f"builtin:{info.name} with {count} images of {resolution}x{resolution}",
        count * resolution * resolution * 3,
        "ask for fewer images (n=) or a smaller resolution",
    )
    return info.build()(count, resolution, seed or 0, **options)
