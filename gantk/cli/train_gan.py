"""``gantk train gan``: the StyleGAN2 trainer and the methods built on it (IMLE-GAN, scalable
fingerprints), new runs and ``--resume``.

The options are declared in :mod:`gantk.cli.train_gan_options`; each one's name is the
:class:`gantk.gan.config.TrainConfig` or :class:`gantk.gan.networks.NetworkConfig` field it
sets, so :func:`settings` maps them by name and the run (:mod:`gantk.gan.run`) reads them from
the config.
"""

from __future__ import annotations

from pathlib import Path

import typer

from gantk.cli.common import (
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    QuietOpt,
    SeedOpt,
    handle_errors,
    process_device,
)
from gantk.cli.train_gan_options import (
    AdaKimgOpt,
    AdaTargetOpt,
    AmpOpt,
    AttnKernelOpt,
    AugOpt,
    AugPOpt,
    BatchGpuOpt,
    BatchSizeOpt,
    ChannelBaseOpt,
    ChannelMaxOpt,
    ChannelsLastOpt,
    CondOpt,
    ContrastiveWarmupEpochsOpt,
    DataOpt,
    DAttnOpt,
    EmaKimgOpt,
    FingerprintBitsOpt,
    GAttnOpt,
    ImleFeaturesOpt,
    ImleInterpOpt,
    ImleOpt,
    ImlePoolOpt,
    ImleStalenessOpt,
    ImleWeightOpt,
    ImmunizeOpt,
    InitDiscriminatorOpt,
    InitOpt,
    KimgOpt,
    LossOpt,
    LrOpt,
    MappingLayersOpt,
    MetricsCountOpt,
    MetricsFeaturesOpt,
    MetricsKimgOpt,
    MetricsOpt,
    MinorityOpt,
    MirrorOpt,
    ModulateResOpt,
    OutOpt,
    PlWeightOpt,
    PrecisionOpt,
    PresetOpt,
    R1GammaOpt,
    ResolutionOpt,
    ResumeOpt,
    SampleKimgOpt,
    SnapshotKimgOpt,
    StyleMixingOpt,
    TickKimgOpt,
    WDimOpt,
    WorkersOpt,
    ZDimOpt,
)


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _amp(precision: str, amp: str | None, device: str) -> str:
    """The GAN trainer's ``amp`` (none, bf16, fp16) from --precision, or from the older --amp
    when a script still gives it."""
    from gantk.errors import GantkError
    from gantk.nn.precision import resolve_precision

    if amp is not None:
        if precision != "fp32":
            raise GantkError("give --precision only (--amp is its old spelling)")
        if amp not in ("none", "bf16", "fp16"):
            raise GantkError(f"--amp {amp!r} is not none, bf16 or fp16")
        precision = amp
    resolved = resolve_precision(precision, device)
    return "none" if resolved == "fp32" else resolved


@handle_errors
def train_gan(
    ctx: typer.Context,
    data: DataOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    init: InitOpt = None,
    init_discriminator: InitDiscriminatorOpt = None,
    resolution: ResolutionOpt = None,
    kimg: KimgOpt = 50.0,
    batch_size: BatchSizeOpt = 32,
    loss: LossOpt = "ns",
    contrastive_warmup_epochs: ContrastiveWarmupEpochsOpt = 20.0,
    preset: PresetOpt = "auto",
    g_attn: GAttnOpt = None,
    d_attn: DAttnOpt = None,
    attn_kernel: AttnKernelOpt = 7,
    lr: LrOpt = 0.002,
    r1_gamma: R1GammaOpt = None,
    pl_weight: PlWeightOpt = 2.0,
    style_mixing: StyleMixingOpt = 0.9,
    ema_kimg: EmaKimgOpt = 10.0,
    mirror: MirrorOpt = False,
    aug: AugOpt = "none",
    aug_p: AugPOpt = 0.0,
    ada_target: AdaTargetOpt = 0.6,
    ada_kimg: AdaKimgOpt = 500.0,
    metrics: MetricsOpt = "",
    metrics_kimg: MetricsKimgOpt = None,
    metrics_count: MetricsCountOpt = 5000,
    metrics_features: MetricsFeaturesOpt = "inception",
    cond: CondOpt = False,
    batch_gpu: BatchGpuOpt = None,
    z_dim: ZDimOpt = 512,
    w_dim: WDimOpt = 512,
    mapping_layers: MappingLayersOpt = 8,
    channel_base: ChannelBaseOpt = 16384,
    channel_max: ChannelMaxOpt = 512,
    snapshot_kimg: SnapshotKimgOpt = 10.0,
    sample_kimg: SampleKimgOpt = 5.0,
    tick_kimg: TickKimgOpt = 1.0,
    precision: PrecisionOpt = "fp32",
    amp: AmpOpt = None,
    channels_last: ChannelsLastOpt = False,
    workers: WorkersOpt = 0,
    fingerprint_bits: FingerprintBitsOpt = 0,
    modulate_res: ModulateResOpt = "all",
    immunize: ImmunizeOpt = "",
    imle: ImleOpt = False,
    imle_features: ImleFeaturesOpt = "auto",
    imle_weight: ImleWeightOpt = 2.5,
    imle_interp: ImleInterpOpt = False,
    imle_pool: ImlePoolOpt = None,
    imle_staleness: ImleStalenessOpt = 10.0,
    minority: MinorityOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a StyleGAN2 (config E) GAN, optionally with the dual contrastive loss and attention.

    With --fingerprint-bits (scalable fingerprints, Yu et al. 2022) z replaces the input
    constant, a fingerprint modulates the convolutions and a decoder learns to read it back;
    latest.safetensors then holds both, for `gantk fingerprint-embed` and `fingerprint-decode`.

    Writes to --out: latest.safetensors (the EMA generator, for `gantk generate`),
    snapshot-*.safetensors, latest-state.safetensors (for --resume), samples-*.png grids,
    log.jsonl and train-config.json. Ctrl-C saves a checkpoint and exits 0.
    With --imle (Inclusive GAN, Yu et al. 2020) each real image, or each image of the
    --minority subgroup, is also reconstructed from its matched latent, for coverage.
    Multi-GPU: torchrun --nproc-per-node N -m gantk train gan DATA ...
    """
    # The trainers of the methods built on the GAN trainer register themselves on import
    # (gantk.gan.trainer.register), so that trainer_class finds them.
    import gantk.fingerprint.scalable.train
    import gantk.gan.imle  # noqa: F401
    from gantk.errors import GantkError
    from gantk.gan.run import resume_training, start_training

    output = Output(quiet or _rank() > 0, as_json and _rank() == 0)
    dev = process_device(device)
    if resume is not None:
        if data is not None or out is not None:
            raise GantkError(
                "--resume takes the data and the folder from the run; drop DATA and --out"
            )
        overrides = _explicit_options(ctx)
        overrides["device"] = dev
        if "precision" in overrides or "amp" in overrides:  # else the run keeps its own
            overrides["amp"] = _amp(overrides.pop("precision", "fp32"), overrides.get("amp"), dev)
        with output.progress(1000, "training") as advance:
            result = resume_training(
                resume, overrides, log=output.say, progress=_progress(advance, kimg)
            )
    else:
        if data is None or out is None:
            raise GantkError("give DATA and --out for a new run, or --resume RUN_FOLDER")
        config = new_config(ctx, dev)
        with output.progress(1000, "training") as advance:
            result = start_training(
                config, force=force, log=output.say, progress=_progress(advance, kimg)
            )
    word = "stopped" if result["interrupted"] else "finished"
    output.say(f"{word} at {result['kimg']} kimg; generator: {result['checkpoint']}")
    output.result(result)


# CLI option -> TrainConfig field, for the options that live in the network config.
_NETWORK_OPTIONS = (
    "resolution",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "channel_base",
    "channel_max",
    "g_attn",
    "d_attn",
    "attn_kernel",
    "fingerprint_bits",
    "modulate_res",
)
_NOT_SETTINGS = ("data", "out", "resume", "force", "as_json", "quiet", "device")


def settings(name: str, value):
    """An option as the config holds it: (field name, value); ``network.`` names a
    NetworkConfig field."""
    if name == "minority":
        name = "imle_minority"
    if name == "immunize":  # stored as a list
        from gantk.perturb import parse_names

        value = parse_names(value) if value else []
    if name == "metrics":
        from gantk.gan.train_metrics import parse_metrics

        value = parse_metrics(value)
    return f"network.{name}" if name in _NETWORK_OPTIONS else name, value


def _explicit_options(ctx: typer.Context) -> dict:
    """The options typed on the command line (defaults do not override a resumed run)."""
    from typer._click.core import ParameterSource

    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name in _NOT_SETTINGS or source != ParameterSource.COMMANDLINE:
            continue
        key, value = settings(name, value)
        given[key] = value
    return given


def new_config(ctx: typer.Context, dev: str):
    """The TrainConfig of a new run from every option (typed or default)."""
    import dataclasses

    from gantk.errors import GantkError
    from gantk.gan.config import TrainConfig
    from gantk.gan.networks import NetworkConfig
    from gantk.io.images import check_resolution

    params = dict(ctx.params)
    data, init, resolution = params["data"], params["init"], params["resolution"]
    if init is not None:
        typed = [k[len("network.") :] for k in _explicit_options(ctx)
                 if k.startswith("network.") and k != "network.resolution"]  # fmt: skip
        network = _initial_network(init, resolution, typed)
    elif params["init_discriminator"] is not None:
        raise GantkError("--init-discriminator goes with --init (the generator to start from)")
    else:
        if resolution is None:
            resolution = _dataset_resolution(data)
        check_resolution(resolution, 4, 1024)
        fields = {f.name for f in dataclasses.fields(NetworkConfig)}
        sizes = {k: params[k] for k in _NETWORK_OPTIONS if k in fields and k != "resolution"}
        network = NetworkConfig(resolution=resolution, **sizes)
    if init is not None:
        check_resolution(network.resolution, 4, 1024)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    chosen = dict(settings(name, value) for name, value in params.items())
    chosen = {k: v for k, v in chosen.items() if k in fields}
    chosen.update(data=data, out=str(params["out"]), network=network, device=dev,
                  amp=_amp(params["precision"], params["amp"], dev),
                  init=str(init) if init is not None else None,
                  init_discriminator=str(params["init_discriminator"])
                  if params["init_discriminator"] else None)  # fmt: skip
    return TrainConfig(**chosen)


def _initial_network(init: Path, resolution: int | None, typed: list[str]):
    """The network of the checkpoint a run starts from; it decides the sizes."""
    from gantk.errors import GantkError
    from gantk.gan.generate import load_generator

    if typed:
        flags = ", ".join("--" + name.replace("_", "-") for name in typed)
        raise GantkError(f"--init takes the network from {init}; drop {flags}")
    network = load_generator(init).config
    if resolution is not None and resolution != network.resolution:
        raise GantkError(
            f"{init} makes {network.resolution}x{network.resolution} images, not "
            f"{resolution}x{resolution}; drop --resolution (the data is resized to the model's) "
            "or start from another model"
        )
    if network.fingerprint_bits:
        raise GantkError(f"{init} is a fingerprinted generator; --init takes plain generators")
    if network.c_dim:
        raise GantkError(
            f"{init} is class-conditional; gantk trains unconditional GANs (its training takes "
            "no labels), so it cannot continue this one"
        )
    return network


def _progress(advance, kimg: float):
    """Map kimg to a 0-1000 progress bar showing kimg and the latest losses."""
    done = {"value": 0}
    shown: dict[str, float] = {}

    def update(at_kimg: float, stats: dict) -> None:
        target = min(1000, round(1000 * at_kimg / max(kimg, 1e-9)))
        # Metric values arrive on their own calls; the line keeps the latest of each.
        shown.update({k: v for k, v in stats.items() if k.startswith(("loss_", "fid", "kid"))})
        text = " ".join(f"{k}={v:.3f}" for k, v in shown.items())
        advance(target - done["value"], f"{at_kimg:.1f} kimg {text}")
        done["value"] = target

    return update


def _dataset_resolution(data: str) -> int:
    from gantk.errors import GantkError
    from gantk.io.datasets import is_folder_spec, open_dataset

    if is_folder_spec(data):
        raise GantkError("training on a folder needs --resolution (a power of two, e.g. 64)")
    return int(open_dataset(data, count=1).resolution or 0)
