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
from gantk.gan.generate import LATENTS_KEY, NUMPY_LATENTS
from gantk.gan.networks import (
    D_ARCHS,
    G_ARCHS,
    GENERATOR_KIND,
    Discriminator,
    Generator,
    NetworkConfig,
)
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


def network_config(g_kwargs: dict[str, Any], d_kwargs: dict[str, Any] | None) -> NetworkConfig:
    """gantk's config for an NVIDIA generator (and discriminator), or GantkError naming what
    does not carry over."""
    mapping = dict(g_kwargs.get("mapping_kwargs") or {})
    synthesis = dict(g_kwargs.get("synthesis_kwargs") or {})
    c_dim = int(g_kwargs.get("c_dim", 0))
    _check(mapping.get("embed_features") in (None, g_kwargs.get("w_dim")), "embedding features")
    _check(int(g_kwargs.get("img_channels", 3)) == 3, f"{g_kwargs.get('img_channels')} channels")
    g_arch = synthesis.get("architecture", "skip")
    _check(g_arch in G_ARCHS, f"the {g_arch!r} generator architecture")
    _check(synthesis.get("resample_filter", DEFAULT_FILTER) == DEFAULT_FILTER,
           "another resampling filter")  # fmt: skip
    _check(mapping.get("lr_multiplier", 0.01) == 0.01, "another mapping learning-rate multiplier")
    _check(mapping.get("layer_features") in (None, g_kwargs.get("w_dim")), "mapping features")
    for key in ("use_noise", "activation"):
        _check(key not in synthesis, f"synthesis option {key!r}")
    base = int(synthesis.get("channel_base", 32768))
    top = int(synthesis.get("channel_max", 512))
    clamp = synthesis.get("conv_clamp")
    group, d_layers, d_arch = 4, 8, "resnet"
    if d_kwargs is not None:
        _check(int(d_kwargs.get("c_dim", 0)) == c_dim, "different classes in G and D")
        _check(d_kwargs.get("cmap_dim") is None, "a cmap width of its own")
        d_mapping = dict(d_kwargs.get("mapping_kwargs") or {})
        d_layers = int(d_mapping.get("num_layers", 8))
        for key in ("embed_features", "layer_features"):
            _check(d_mapping.get(key) is None, f"discriminator mapping {key}")
        _check(d_mapping.get("lr_multiplier", 0.01) == 0.01, "another D mapping multiplier")
        d_arch = d_kwargs.get("architecture", "resnet")
        _check(d_arch in D_ARCHS, f"the {d_arch!r} discriminator architecture")
        _check((int(d_kwargs.get("channel_base", 32768)), int(d_kwargs.get("channel_max", 512)))
               == (base, top), "different channel widths in G and D")  # fmt: skip
        _check(d_kwargs.get("conv_clamp") == clamp, "different output clamps in G and D")
        epilogue = dict(d_kwargs.get("epilogue_kwargs") or {})
        _check(int(epilogue.get("mbstd_num_channels", 1)) == 1, "several minibatch-std channels")
        group = int(epilogue.get("mbstd_group_size", 4) or 1)
    config = NetworkConfig(
        resolution=int(g_kwargs["img_resolution"]),
        z_dim=int(g_kwargs["z_dim"]),
        w_dim=int(g_kwargs["w_dim"]),
        mapping_layers=int(mapping.get("num_layers", 8)),
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
