"""Configs read from files are untrusted: check them before a network is built from them.

A checkpoint's ``gantk.config`` and a run's ``train-config.json`` are JSON that anyone can edit.
Built unchecked, a string where a number belongs crashes deep inside torch, ``z_dim: -5`` raises
from a layer constructor, and ``resolution: 1048576`` allocates noise buffers until the machine
runs out of memory. Two checks stand in between:

- :func:`parse_config` builds a config dataclass field by field from its type hints (ints are
  ints, floats finite, ``X | None``, lists of strings, nested dataclasses); unknown keys are
  ignored (files from newer versions), missing ones take the field's default or are an error.
- :func:`build_matching` builds the network first on the ``meta`` device (shapes only, no
  memory) and compares its tensors with the file's, so a config that disagrees with the weights
  it came with is refused before any real allocation; weights that are NaN or infinite (a
  diverged run) are refused too, instead of making blank images and NaN scores.

Ranges belong to each config's own ``validate()``, which the callers run after parsing.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from gantk.errors import GantkError
from gantk.io.files import describe as _describe

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks for; raises ValueError naming the field otherwise."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_value(value, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where} is {_describe(value)}, not a {hint}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} is {_describe(value)}, not a list")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return origin(_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return parse_config(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} is {_describe(value)}, not true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} is {_describe(value)}, not a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} is {_describe(value)}, not a number")
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, not a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} is {_describe(value)}, not a string")
        return value
    raise TypeError(f"config field type {hint} has no check")  # a gantk bug, not bad input


def parse_config(cls: type[C], data: Any, where: str = "config", strict: bool = False) -> C:
    """The dataclass ``cls`` from JSON-like ``data``, every field checked against its type;
    with ``strict``, a key that is no field is refused too (where the reader would pass it on).

    Raises ValueError with a message naming the field (``where.field``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} is {_describe(data)}, not an object of settings")
    if strict:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]} is not a setting gantk knows")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{where}.{field.name}"
        if field.name in data:
            values[field.name] = _check_value(data[field.name], hints[field.name], name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueError(f"{name} is missing")
    return cls(**values)


def section(config: Any, name: str) -> Any:
    """``config[name]`` of a checkpoint's config, or a value :func:`parse_config` refuses with
    a message naming it."""
    if not isinstance(config, Mapping):
        return config
    return config.get(name, _Missing(name))


class _Missing:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"missing (no {self.name!r} section)"


def checked_config(cls: type[C], data: Any, path: str | Path, what: str, strict: bool = False) -> C:
    """:func:`parse_config` and the config's ``validate()``, as one GantkError for the user."""
    try:
        config = parse_config(cls, data, "config", strict)
        validate = getattr(config, "validate", None)
        if validate is not None:
            validate()
    except (ValueError, GantkError) as exc:
        raise GantkError(
            f"{path} has an unusable {what} config ({exc}); use a checkpoint gantk wrote"
        ) from None
    return config


def tensors_under(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix...``, without the prefix: one network of a checkpoint that
    stores several (``G.``/``F.``, ``encoder.``/``decoder.``), as float32."""
    return {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def build_matching(
    build: Callable[[], M], tensors: Mapping[str, torch.Tensor], path: str | Path, what: str
) -> M:
    """``build()`` the network, but only once a shapes-only copy matches ``tensors`` exactly
    (same names, same shapes); then load them into it."""
    try:
        with torch.device("meta"):
            skeleton = build()
    except GantkError as exc:
        raise GantkError(f"{path} has an unusable {what} config ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found) - set(defaultable(expected)))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or reshaped:
        example = (reshaped or missing or unexpected)[0]
        raise GantkError(
            f"{path} does not match its own {what} config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} reshaped tensors, e.g. {example}); "
            "use a checkpoint gantk wrote"
        )
    broken = next((k for k, v in tensors.items() if v.is_floating_point()
                   and not bool(torch.isfinite(v).all())), None)  # fmt: skip
    if broken is not None:
        # A network of NaN weights makes NaN (blank) images and scores without a word.
        raise GantkError(
            f"{path} holds NaN or infinite weights (e.g. {broken}): its training diverged or the "
            "file is damaged; use an earlier checkpoint"
        )
    module = build()
    module.load_state_dict(with_defaults(module, tensors))
    return module


def defaultable(names: Iterable[str]) -> list[str]:
    """Buffers a checkpoint may lack: resampling filters, saved only since gantk keeps those of
    imported StyleGAN2 models; files from before hold the standard [1, 3, 3, 1] one."""
    return [n for n in names if n.endswith("resample_filter")]


def with_defaults(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict:
    """``tensors`` completed with ``module``'s own values for the defaultable buffers it lacks."""
    own = module.state_dict()
    return {**{k: own[k] for k in defaultable(own) if k not in tensors}, **tensors}
