"""Models shipped inside the package (``gantk/models/*.safetensors``), addressed as
``builtin:NAME`` wherever a model file is accepted."""

from __future__ import annotations

from pathlib import Path

from gantk.errors import GantkError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED = {
    "builtin:stego-100": "stego-100.safetensors",
    "builtin:texture-mixer": "texture-mixer.safetensors",
    "builtin:texture-classifiers": "texture-classifiers.safetensors",  # CSS/CRS of the above
}


def resolve_model_path(spec: str, what: str, how_to_make: str) -> Path:
    """The file behind ``spec``: a bundled model or a path. ``what`` names the kind of model
    and ``how_to_make`` the command that trains one, for the error messages."""
    if spec.startswith("builtin:"):
        if spec not in BUNDLED:
            raise GantkError(f"unknown built-in model {spec}; available: {', '.join(BUNDLED)}")
        path = MODELS_DIR / BUNDLED[spec]
        if not path.is_file():
            raise GantkError(
                f"{spec} is missing from this installation ({path}); run `make models` or "
                f"give a {what} made by {how_to_make}"
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GantkError(f"{what} {path} does not exist; train one with {how_to_make}")
    return path
