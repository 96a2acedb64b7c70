"""NVIDIA StyleGAN2-ADA models as gantk networks.

A stylegan2-ada-pytorch snapshot (read as data by :mod:`gantk.io.nvidia_pickle`, never run)
maps onto gantk's StyleGAN2 one tensor for one tensor: gantk's generator is the reference "skip"
architecture and its discriminator the "resnet" one, with the same layers, gains, resampling
filters (kept from the file) and output clamp. :func:`convert` checks that the snapshot uses
only what gantk computes, renames the tensors, and records where they came from; anything else
is a one-line error naming it.

Latents: NVIDIA's generate.py draws seed s as ``np.random.RandomState(s).randn(z_dim)``. A
converted checkpoint says so in its metadata (``gantk.latents = numpy-randomstate``), and
``gantk generate --seeds`` then draws the same latents, so "seed 42 of ffhq.pkl" is the same
image in both tools.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gantk.errors import GantkError
from gantk.gan.networks import (
    D_ARCHS,
    G_ARCHS,
    GENERATOR_KIND,
    Discriminator,
    Generator,
    NetworkConfig,
)
from gantk.gan.sampling import LATENTS_KEY, NUMPY_LATENTS
from gantk.io.checkpoint import file_sha256
from gantk.io.config_schema import build_matching
from gantk.io.nvidia_pickle import PersistentRecord, module_tensors, read_network_pickle

DEFAULT_FILTER = [1, 3, 3, 1]


@dataclass
class Converted:
    config: NetworkConfig
    G: Generator
    D: Discriminator | None
    source: dict[str, Any]  # what the checkpoint records about the file it came from


def _kwargs(record: PersistentRecord) -> dict[str, Any]:
    kwargs = record.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        raise GantkError(f"the {record.class_name} in the pickle has no construction arguments")
    return kwargs


def _refuse(what: str) -> GantkError:
    return GantkError(f"the NVIDIA model uses {what}, which gantk does not compute")


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise _refuse(what)


_REQUIRED = object()
_KIND_NAMES = {int: "a whole number", float: "a number", str: "text", dict: "a mapping",
               list: "a list"}  # fmt: skip


def _arg(args: dict[str, Any], key: str, kind: type, default: Any = _REQUIRED,
         where: str = "G") -> Any:  # fmt: skip
    """``args[key]`` if it is a ``kind`` (None passes where the default is None), else
    GantkError naming it: a pickle's construction arguments are data anyone could have written,
    and a string where a number belongs must not reach int() or a layer's constructor."""
    from gantk.io.files import describe

    if key not in args:
        if default is _REQUIRED:
            raise GantkError(
                f"the NVIDIA model's {where} arguments have no {key}: the pickle is damaged; "
                "convert an intact snapshot"
            )
        return default
    value = args[key]
    if value is None and default is None:
        return None
    numeric = kind in (int, float)
    accepted = (int, float) if kind is float else kind
    if (isinstance(value, bool) and numeric) or not isinstance(value, accepted):
        raise GantkError(
            f"the NVIDIA model's {where} argument {key} is {describe(value)}, not "
            f"{_KIND_NAMES[kind]}: the pickle is damaged; convert an intact snapshot"
        )
    return value


def network_config(g_kwargs: dict[str, Any], d_kwargs: dict[str, Any] | None) -> NetworkConfig:
    """gantk's config for an NVIDIA generator (and discriminator), or GantkError naming what
    does not carry over or is not of its type."""
    mapping = _arg(g_kwargs, "mapping_kwargs", dict, {})
    synthesis = _arg(g_kwargs, "synthesis_kwargs", dict, {})
    c_dim = _arg(g_kwargs, "c_dim", int, 0)
    w_dim = _arg(g_kwargs, "w_dim", int)
    _check(_arg(mapping, "embed_features", int, None, "G mapping") in (None, w_dim),
           "embedding features")  # fmt: skip
    channels = _arg(g_kwargs, "img_channels", int, 3)
    _check(channels == 3, f"{channels} channels")
    g_arch = _arg(synthesis, "architecture", str, "skip", "G synthesis")
    _check(g_arch in G_ARCHS, f"the {g_arch!r} generator architecture")
    _check(_arg(synthesis, "resample_filter", list, DEFAULT_FILTER, "G synthesis")
           == DEFAULT_FILTER, "another resampling filter")  # fmt: skip
    _check(_arg(mapping, "lr_multiplier", float, 0.01, "G mapping") == 0.01,
           "another mapping learning-rate multiplier")  # fmt: skip
    _check(_arg(mapping, "layer_features", int, None, "G mapping") in (None, w_dim),
           "mapping features")  # fmt: skip
    for key in ("use_noise", "activation"):
        _check(key not in synthesis, f"synthesis option {key!r}")
    base = _arg(synthesis, "channel_base", int, 32768, "G synthesis")
    top = _arg(synthesis, "channel_max", int, 512, "G synthesis")
    clamp = _arg(synthesis, "conv_clamp", float, None, "G synthesis")
    group, d_layers, d_arch = 4, 8, "resnet"
    if d_kwargs is not None:
        _check(_arg(d_kwargs, "c_dim", int, 0, "D") == c_dim, "different classes in G and D")
        _check(d_kwargs.get("cmap_dim") is None, "a cmap width of its own")
        d_mapping = _arg(d_kwargs, "mapping_kwargs", dict, {}, "D")
        d_layers = _arg(d_mapping, "num_layers", int, 8, "D mapping")
        for key in ("embed_features", "layer_features"):
            _check(d_mapping.get(key) is None, f"discriminator mapping {key}")
        _check(_arg(d_mapping, "lr_multiplier", float, 0.01, "D mapping") == 0.01,
               "another D mapping multiplier")  # fmt: skip
        d_arch = _arg(d_kwargs, "architecture", str, "resnet", "D")
        _check(d_arch in D_ARCHS, f"the {d_arch!r} discriminator architecture")
        _check((_arg(d_kwargs, "channel_base", int, 32768, "D"),
                _arg(d_kwargs, "channel_max", int, 512, "D")) == (base, top),
               "different channel widths in G and D")  # fmt: skip
        _check(_arg(d_kwargs, "conv_clamp", float, None, "D") == clamp,
               "different output clamps in G and D")  # fmt: skip
        epilogue = _arg(d_kwargs, "epilogue_kwargs", dict, {}, "D")
        _check(_arg(epilogue, "mbstd_num_channels", int, 1, "D epilogue") == 1,
               "several minibatch-std channels")  # fmt: skip
        # Missing: NVIDIA's default 4; None: one group of the whole batch.
        group = _arg(epilogue, "mbstd_group_size", int, None, "D epilogue") or 1
        group = group if "mbstd_group_size" in epilogue else 4
    config = NetworkConfig(
        resolution=_arg(g_kwargs, "img_resolution", int),
        z_dim=_arg(g_kwargs, "z_dim", int),
        w_dim=w_dim,
        mapping_layers=_arg(mapping, "num_layers", int, 8, "G mapping"),
        channel_base=base,
        channel_max=top,
        mbstd_group=group,
        conv_clamp=None if clamp is None else float(clamp),
        c_dim=c_dim,
        d_mapping_layers=d_layers,
        g_arch=g_arch,
        d_arch=d_arch,
    )
    try:
        return config.validate()
    except GantkError as exc:
        raise GantkError(f"the NVIDIA model does not fit gantk's networks: {exc}") from None


def generator_names(tensors: dict[str, torch.Tensor], config: NetworkConfig) -> dict:
    """NVIDIA's generator tensor names -> gantk's (synthesis.b8.conv0 -> blocks.1.conv0)."""
    index = {res: i for i, res in enumerate(config.resolutions())}
    renamed = {}
    for name, value in tensors.items():
        if m := re.fullmatch(r"synthesis\.b(\d+)\.(.+)", name):
            name = f"blocks.{index.get(int(m.group(1)), -1)}.{m.group(2)}"
        elif m := re.fullmatch(r"mapping\.fc(\d+)\.(.+)", name):
            name = f"mapping.net.{m.group(1)}.{m.group(2)}"
        renamed[name] = value
    return renamed


def discriminator_names(tensors: dict[str, torch.Tensor], config: NetworkConfig) -> dict:
    """NVIDIA's discriminator names -> gantk's (b32.conv0 -> blocks.0.conv0, b4.fc -> fc)."""
    index = {res: i for i, res in enumerate(reversed(config.resolutions()[1:]))}
    renamed = {}
    for name, value in tensors.items():
        unused = r"b\d+\.(fromrgb|conv0|conv)\.resample_filter"  # layers that do not resample
        if config.d_arch != "skip":  # only the skip D downsamples the image itself
            unused += r"|b\d+\.resample_filter"
        if re.fullmatch(unused, name):
            continue
        if m := re.fullmatch(r"b4\.fromrgb\.(weight|bias)", name):
            name = f"fromrgb4.{m.group(1)}"
        elif m := re.fullmatch(r"mapping\.fc(\d+)\.(.+)", name):
            name = f"mapping.net.{m.group(1)}.{m.group(2)}"
        elif m := re.fullmatch(r"b4\.(conv|fc|out)\.(.+)", name):
            name = f"{m.group(1)}.{m.group(2)}"
        elif m := re.fullmatch(rf"b{config.resolution}\.fromrgb\.(weight|bias)", name):
            name = f"fromrgb.{m.group(1)}"
        elif m := re.fullmatch(r"b(\d+)\.(.+)", name):
            name = f"blocks.{index.get(int(m.group(1)), -1)}.{m.group(2)}"
        renamed[name] = value
    return renamed


def convert(path: str | Path, discriminator: bool = True) -> Converted:
    """Read ``path`` (never running it) and rebuild its G_ema (and D) as gantk networks."""
    path = Path(path)
    data = read_network_pickle(path)
    g_record = data.get("G_ema") or data.get("G")
    if not isinstance(g_record, PersistentRecord):
        raise GantkError(f"{path} holds no generator (G_ema or G)")
    d_record = data.get("D") if discriminator else None
    if discriminator and not isinstance(d_record, PersistentRecord):
        raise GantkError(f"{path} holds no discriminator (D); convert the generator alone")
    g_kwargs = _kwargs(g_record)
    d_kwargs = _kwargs(d_record) if d_record is not None else None
    source = {
        "file": path.name,
        "sha256": file_sha256(path),
        "format": "stylegan2-ada-pytorch",
        "G_kwargs": g_kwargs,
        "D_kwargs": d_kwargs,
        "training_set_kwargs": data.get("training_set_kwargs"),
    }
    d_tensors = module_tensors(d_record) if d_record is not None else None
    try:
        return convert_networks(g_kwargs, module_tensors(g_record), d_kwargs, d_tensors,
                                _plain(source), path)  # fmt: skip
    except GantkError as exc:
        message = str(exc)
        raise GantkError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None


def convert_networks(
    g_kwargs: dict[str, Any],
    g_tensors: dict[str, torch.Tensor],
    d_kwargs: dict[str, Any] | None,
    d_tensors: dict[str, torch.Tensor] | None,
    source: dict[str, Any],
    where: str | Path = "the model",
) -> Converted:
    """gantk networks from NVIDIA's construction arguments and tensors (by NVIDIA's names)."""
    config = network_config(g_kwargs, d_kwargs)
    G = build_matching(lambda: Generator(config), generator_names(g_tensors, config), where,
                       "generator (as gantk reads it)")  # fmt: skip
    D = None
    if d_tensors is not None:
        D = build_matching(lambda: Discriminator(config), discriminator_names(d_tensors, config),
                           where, "discriminator (as gantk reads it)")  # fmt: skip
    return Converted(config, G.eval(), None if D is None else D.eval(), source)


DISCRIMINATOR_KIND = "gan-discriminator"


def save_converted(converted: Converted, out: Path, d_out: Path | None, force: bool) -> None:
    """The generator as an ordinary gantk generator checkpoint (every command takes it), drawing
    NVIDIA's latents for a seed; the discriminator, if asked for, as its own checkpoint."""
    from gantk.io.checkpoint import save_checkpoint

    config = {"network": converted.config.to_dict(), "source": converted.source}
    meta = {LATENTS_KEY: NUMPY_LATENTS, "gantk.source_sha256": converted.source["sha256"]}
    save_checkpoint(out, converted.G.state_dict(), GENERATOR_KIND, config, meta, force=force)
    if d_out is not None and converted.D is not None:
        save_checkpoint(d_out, converted.D.state_dict(), DISCRIMINATOR_KIND, config, meta,
                        force=force)  # fmt: skip


def load_discriminator(path: str | Path, device: str = "cpu") -> Discriminator:
    """A discriminator checkpoint written by :func:`save_converted`."""
    from gantk.io.checkpoint import load_checkpoint
    from gantk.io.config_schema import checked_config, section

    ckpt = load_checkpoint(path, DISCRIMINATOR_KIND, device)
    config = checked_config(NetworkConfig, section(ckpt.config, "network"), path, "discriminator")
    D = build_matching(lambda: Discriminator(config), ckpt.tensors, path, "discriminator")
    return D.to(device).eval().requires_grad_(False)


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars from the pickle become numbers)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )
