"""``gantk train``: one subcommand per trainable model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli import attribution, texture, train_texture_classifiers
from gantk.cli.common import (
    READS,
    WRITES,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    Output,
    PrecisionOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    handle_errors,
    set_threads,
)

app = typer.Typer(
    help="Train models: GANs, fingerprint encoders, attributors, Texture Mixers.",
    no_args_is_help=True,
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


def _device(device: str) -> str:
    """Under torchrun each process takes the GPU of its LOCAL_RANK."""
    from gantk.cli.common import process_device

    return process_device(device)


@app.command("gan")
@handle_errors
def train_gan(
    ctx: typer.Context,
    data: Annotated[
        str | None,
        READS,
        typer.Argument(
            metavar="DATA",
            help="Folder, .h5 pack or builtin:NAME (not needed with --resume).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        WRITES,
        typer.Option("--out", "-o", help="Run folder: checkpoints, samples, log.jsonl."),
    ] = None,
    resume: Annotated[
        Path | None,
        WRITES,
        typer.Option("--resume", help="Continue the run in this folder exactly where it stopped."),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Start G (and its EMA) from this generator checkpoint, e.g. an NVIDIA model "
            "from `gantk convert` (transfer learning); the network settings come from it.",
        ),
    ] = None,
    init_discriminator: Annotated[
        Path | None,
        typer.Option(
            "--init-discriminator",
            help="With --init: start D from this discriminator (`gantk convert "
            "--discriminator`); without it D starts from random weights.",
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution", "-r", help="Image size (power of two, 4-1024); default: the dataset's."
        ),
    ] = None,
    kimg: Annotated[
        float, typer.Option("--kimg", help="Train until this many thousand real images were shown.")
    ] = 50.0,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", "-b", min=2, help="Global batch (split across processes)."),
    ] = 32,
    loss: Annotated[
        str,
        typer.Option(
            "--loss",
            help="ns, saturating, wgan-gp, hinge or contrastive "
            "(dual contrastive, thesis Eq. 2.1-2.3).",
        ),
    ] = "ns",
    contrastive_warmup_epochs: Annotated[
        float,
        typer.Option(
            "--contrastive-warmup",
            min=0,
            help="Epochs (passes over DATA) of non-saturating loss before the contrastive loss "
            "takes over; the thesis warms up for about 20. Short runs: keep it near 5% of "
            "--kimg, as 20 epochs were of the thesis' runs.",
        ),
    ] = 20.0,
    preset: Annotated[
        str,
        typer.Option(
            "--config",
            help="Named settings: auto (StyleGAN2-ADA's default: R1 gamma 0.0002*res^2/batch, "
            "EMA ramp-up 0.05) or paper (StyleGAN2 config E as published: R1 gamma 10, no EMA "
            "ramp-up, so only runs of tens of kimg). Explicit options override it; recorded in "
            "train-config.json.",
        ),
    ] = "auto",
    g_attn: Annotated[
        str | None,
        typer.Option(
            "--g-attn", help="Attention in G: san@RES or sagan@RES replaces the conv at RES."
        ),
    ] = None,
    d_attn: Annotated[
        str | None,
        typer.Option(
            "--d-attn",
            help="Attention in D: reference@RES (Siamese, real reference image) or self@RES.",
        ),
    ] = None,
    attn_kernel: Annotated[int, typer.Option("--attn-kernel", help="SAN patch size (odd).")] = 7,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate of G and D.")] = 0.002,
    r1_gamma: Annotated[
        float | None,
        typer.Option(
            "--r1-gamma",
            help="R1 weight; default: --config's (auto's heuristic or 10). Short runs on small "
            "images: 10 with --config auto trained best (docs/results.md).",
        ),
    ] = None,
    pl_weight: Annotated[
        float, typer.Option("--pl-weight", help="Path length regularization weight (0: off).")
    ] = 2.0,
    style_mixing: Annotated[
        float, typer.Option("--style-mixing", help="Probability of style mixing.")
    ] = 0.9,
    ema_kimg: Annotated[
        float, typer.Option("--ema-kimg", help="Half-life of the generator EMA in kimg.")
    ] = 10.0,
    mirror: Annotated[
        bool, typer.Option("--mirror", help="Random left-right flips of real images.")
    ] = False,
    aug: Annotated[
        str,
        typer.Option(
            "--aug",
            help="Augment every image D sees (reals and fakes): none, ada (StyleGAN2-ADA's "
            "adaptive pipeline: flips, rotations, scaling, translation, colour, each with "
            "probability p tuned so D's sign on reals averages --ada-target) or diffaug "
            "(DiffAugment: colour, translation, cutout). For small datasets, where D overfits.",
        ),
    ] = "none",
    aug_p: Annotated[
        float, typer.Option("--aug-p", help="With --aug ada: p at the start (0-1).")
    ] = 0.0,
    ada_target: Annotated[
        float,
        typer.Option("--ada-target", help="With --aug ada: the E[sign(D(real))] p is tuned to."),
    ] = 0.6,
    ada_kimg: Annotated[
        float,
        typer.Option(
            "--ada-kimg",
            help="With --aug ada: p can move by 1 in this many kimg (StyleGAN2-ADA: 500; "
            "short runs need less).",
        ),
    ] = 500.0,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Measure the EMA generator while training: fid, kid or fid,kid, against the "
            "training data (its features cached in the run folder). Logged to log.jsonl and "
            "shown in the progress line; best.safetensors keeps the generator with the best "
            "first metric. Needs the Inception weights (downloaded on first use).",
        ),
    ] = "",
    metrics_kimg: Annotated[
        float | None,
        typer.Option("--metrics-kimg", help="Measure every this many kimg (default: snapshots)."),
    ] = None,
    metrics_count: Annotated[
        int,
        typer.Option(
            "--metrics-count", min=2, help="Generated (and at most as many real) images each time."
        ),
    ] = 5000,
    metrics_features: Annotated[
        str,
        typer.Option(
            "--metrics-features",
            help="Feature network: inception (the standard FID/KID) or random-inception (no "
            "download; values named fid[random-inception], comparable only with themselves).",
        ),
    ] = "inception",
    cond: Annotated[
        bool,
        typer.Option(
            "--cond",
            help="Class-conditional: G and D take the dataset's labels (a folder of class "
            "subfolders, a pack made with --labels, or a labeled built-in such as "
            "builtin:digits); the checkpoint keeps the class names for `gantk generate --class "
            "NAME`.",
        ),
    ] = False,
    batch_gpu: Annotated[
        int | None,
        typer.Option(
            "--batch-gpu",
            min=1,
            help="Images per forward/backward pass on each device; gradients accumulate over "
            "the --batch-size, so a device that cannot hold the batch trains the same recipe "
            "(the contrastive loss still compares the whole batch's logits; minibatch-std "
            "works within each slice, as in StyleGAN2-ADA). Default: the whole batch.",
        ),
    ] = None,
    z_dim: Annotated[int, typer.Option("--z-dim", help="Latent size.")] = 512,
    w_dim: Annotated[int, typer.Option("--w-dim", help="Style size.")] = 512,
    mapping_layers: Annotated[
        int, typer.Option("--mapping-layers", help="FC layers in the mapping network.")
    ] = 8,
    channel_base: Annotated[
        int, typer.Option("--channel-base", help="Channels at resolution r: min(base/r, max).")
    ] = 16384,
    channel_max: Annotated[int, typer.Option("--channel-max", help="Channel cap.")] = 512,
    snapshot_kimg: Annotated[
        float, typer.Option("--snapshot-kimg", help="Checkpoint every this many kimg.")
    ] = 10.0,
    sample_kimg: Annotated[
        float, typer.Option("--sample-kimg", help="Sample grid every this many kimg.")
    ] = 5.0,
    tick_kimg: Annotated[
        float, typer.Option("--tick-kimg", help="Log line every this many kimg.")
    ] = 1.0,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32 (default), bf16 or fp16 (CUDA) autocast, or auto (bf16 where the CPU or "
            "GPU has it). The GAN stays float32 by default: on an AVX512-BF16 CPU bf16 saved "
            "13-31 % of the step but its FID at equal steps came out higher "
            "(docs/performance.md).",
        ),
    ] = "fp32",
    amp: Annotated[
        str | None,
        typer.Option("--amp", hidden=True, help="Old spelling of --precision: none, bf16, fp16."),
    ] = None,
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="channels_last memory format on CUDA.")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data loading processes.")] = 0,
    fingerprint_bits: Annotated[
        int,
        typer.Option(
            "--fingerprint-bits",
            min=0,
            help="Scalable fingerprints: train a generator modulated by BITS-bit fingerprints "
            "and their decoder (then `gantk fingerprint-embed RUN/latest.safetensors --users …`).",
        ),
    ] = 0,
    modulate_res: Annotated[
        str,
        typer.Option(
            "--modulate-res", help="Resolutions the fingerprint modulates: all, 4-32 or 8,16."
        ),
    ] = "all",
    immunize: Annotated[
        str,
        typer.Option(
            "--immunize",
            help="With --fingerprint-bits: perturb generated images before the decoder (comma "
            "list of noise, blur, jpeg, crop, resize, brightness, combined; or all).",
        ),
    ] = "",
    imle: Annotated[
        bool,
        typer.Option(
            "--imle",
            help="Inclusive GAN: add IMLE reconstruction of every real image (or of --minority) "
            "from its nearest latent in a pool, for data coverage.",
        ),
    ] = False,
    imle_features: Annotated[
        str,
        typer.Option(
            "--imle-features",
            help="IMLE distance space: auto (lpips if its weights are here, else d), pixel, d "
            "(discriminator features), inception or lpips.",
        ),
    ] = "auto",
    imle_weight: Annotated[
        float, typer.Option("--imle-weight", help="Reconstruction weight (authors: 2.5).")
    ] = 2.5,
    imle_interp: Annotated[
        bool,
        typer.Option("--imle-interp", help="Add the interpolation loss (0.4 x the weight)."),
    ] = False,
    imle_pool: Annotated[
        int | None,
        typer.Option("--imle-pool", help="Latent pool size (default: 10 x the images matched)."),
    ] = None,
    imle_staleness: Annotated[
        float,
        typer.Option(
            "--imle-staleness", help="Epochs before re-matching; doubles after each refresh."
        ),
    ] = 10.0,
    minority: Annotated[
        str | None,
        typer.Option(
            "--minority",
            help="With --imle: reconstruct only a subgroup: CSV:ATTR[,ATTR…] (images with any "
            "of them) or builtin (a built-in's minority= attribute).",
        ),
    ] = None,
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
    from gantk.errors import GantkError
    from gantk.gan.networks import NetworkConfig
    from gantk.gan.train import TrainConfig, resume_training, start_training
    from gantk.gan.train_metrics import parse_metrics
    from gantk.io.images import check_resolution
    from gantk.perturb import parse_names

    output = Output(quiet or _rank() > 0, as_json and _rank() == 0)
    dev = _device(device)
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
        if init is not None:
            typed = [k[len("network.") :] for k in _explicit_options(ctx)
                     if k.startswith("network.") and k != "network.resolution"]  # fmt: skip
            network = _initial_network(init, resolution, typed)
            resolution = network.resolution
        elif init_discriminator is not None:
            raise GantkError("--init-discriminator goes with --init (the generator to start from)")
        if resolution is None:
            resolution = _dataset_resolution(data)
        check_resolution(resolution, 4, 1024)
        network = (
            network
            if init is not None
            else NetworkConfig(
                resolution=resolution,
                z_dim=z_dim,
                w_dim=w_dim,
                mapping_layers=mapping_layers,
                channel_base=channel_base,
                channel_max=channel_max,
                g_attn=g_attn,
                d_attn=d_attn,
                attn_kernel=attn_kernel,
                fingerprint_bits=fingerprint_bits,
                modulate_res=modulate_res,
            )
        )
        config = TrainConfig(
            data=data,
            out=str(out),
            network=network,
            kimg=kimg,
            batch_size=batch_size,
            loss=loss,
            contrastive_warmup_epochs=contrastive_warmup_epochs,
            preset=preset,
            lr=lr,
            r1_gamma=r1_gamma,
            pl_weight=pl_weight,
            style_mixing=style_mixing,
            ema_kimg=ema_kimg,
            mirror=mirror,
            aug=aug,
            aug_p=aug_p,
            ada_target=ada_target,
            ada_kimg=ada_kimg,
            metrics=parse_metrics(metrics),
            metrics_kimg=metrics_kimg,
            metrics_count=metrics_count,
            metrics_features=metrics_features,
            batch_gpu=batch_gpu,
            cond=cond,
            snapshot_kimg=snapshot_kimg,
            sample_kimg=sample_kimg,
            tick_kimg=tick_kimg,
            seed=seed,
            amp=_amp(precision, amp, dev),
            channels_last=channels_last,
            workers=workers,
            device=dev,
            immunize=parse_names(immunize) if immunize else [],
            imle=imle,
            imle_features=imle_features,
            imle_weight=imle_weight,
            imle_interp=imle_interp,
            imle_pool=imle_pool,
            imle_staleness=imle_staleness,
            imle_minority=minority,
            init=str(init) if init is not None else None,
            init_discriminator=str(init_discriminator) if init_discriminator else None,
        )
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


def _explicit_options(ctx: typer.Context) -> dict:
    """The options typed on the command line (defaults do not override a resumed run)."""
    from typer._click.core import ParameterSource

    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name in _NOT_SETTINGS or source != ParameterSource.COMMANDLINE:
            continue
        if name == "minority":
            name = "imle_minority"
        if name == "immunize":  # stored as a list
            from gantk.perturb import parse_names

            value = parse_names(value) if value else []
        if name == "metrics":
            from gantk.gan.train_metrics import parse_metrics

            value = parse_metrics(value)
        given[f"network.{name}" if name in _NETWORK_OPTIONS else name] = value
    return given


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


@app.command("report")
@handle_errors
def train_report(
    run: Annotated[Path, typer.Argument(help="The folder of a `gantk train gan` run.")],
    out: Annotated[Path, WRITES, typer.Option("--out", "-o", help="The PNG to write.")],
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One picture of a GAN run: losses, the metrics measured while training (--metrics), ADA's
    p (--aug ada) and up to four sample grids from first to last.

    Reads RUN/log.jsonl and RUN/samples-*.png; works on a run still training.
    Example: gantk train report runs/faces --out faces-report.png
    """
    from gantk.gan.report import write_report

    output = Output(quiet, as_json)
    summary = write_report(run, out, force)
    output.say(
        f"wrote {out}: {summary['ticks']} ticks to {summary['last_kimg']} kimg, "
        f"{summary['measures']} measures of {', '.join(summary['metrics']) or 'no metric'}, "
        f"{len(summary['grids'])} sample grids"
    )
    output.result(summary)


@app.command("digit-classifier")
@handle_errors
def train_digit_classifier_command(
    out: Annotated[
        Path | None,
        WRITES,
        typer.Option(
            "--out",
            "-o",
            help="Where to save it (default: the cache used by `gantk evaluate modes`).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the digit classifier behind `gantk evaluate modes` on builtin:digits (seconds on
    a CPU) and report its held-out accuracy."""
    from gantk.metrics.modes import DEFAULT_EPOCHS, default_classifier_path, digit_classifier

    output = Output(quiet, as_json)
    path = out or default_classifier_path()
    with output.progress(DEFAULT_EPOCHS, "training") as advance:
        _, info = digit_classifier("cpu", path, retrain=True, advance=advance)
    output.say(f"test accuracy {info['test_accuracy']:.4f}; saved to {path}")
    output.result({**info, "path": str(path)})


@app.command("stego")
@handle_errors
def train_stego_command(
    data: Annotated[
        str | None,
        READS,
        typer.Argument(
            metavar="DATASET",
            help="Images to learn on: folder, .h5 pack or builtin:NAME (omit with --resume).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        WRITES,
        typer.Option("--out", "-o", help="Run folder (new, or the one to resume)."),
    ] = None,
    bits: Annotated[int, typer.Option("--bits", help="Fingerprint length in bits.")] = 100,
    resolution: Annotated[
        int, typer.Option("--resolution", "-r", help="Working resolution (power of two, >= 32).")
    ] = 64,
    steps: Annotated[int, typer.Option("--steps", help="Training steps (batches).")] = 20000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-4,
    l2_weight: Annotated[
        float, typer.Option("--l2-weight", help="Final weight of the image MSE loss.")
    ] = 10.0,
    robust: Annotated[
        str,
        typer.Option(
            "--robust",
            help="Perturbations between encoder and decoder once bits decode (comma list of "
            "noise, blur, jpeg, crop, resize, brightness, combined; or all). Default: none.",
        ),
    ] = "",
    l2_delay: Annotated[
        int,
        typer.Option(
            "--l2-delay", help="Steps after bit accuracy first passes 0.9 before the ramp."
        ),
    ] = 1000,
    l2_ramp: Annotated[
        int, typer.Option("--l2-ramp", help="Steps over which the image loss ramps up.")
    ] = 3000,
    luma: Annotated[
        bool,
        typer.Option(
            "--luma",
            help="The encoder changes luminance only (R, G and B alike): no colour casts, and "
            "JPEG's chroma subsampling leaves the fingerprint alone.",
        ),
    ] = False,
    chroma_weight: Annotated[
        float,
        typer.Option(
            "--chroma-weight",
            help="Extra image-loss weight on the residual's chroma (Cb, Cr), against colour "
            "casts. 0: the authors' plain MSE.",
        ),
    ] = 0.0,
    target_acc: Annotated[
        float,
        typer.Option(
            "--target-acc",
            help="After the ramp, tune the image-loss weight so the running bit accuracy on "
            "(perturbed) training batches stays at this value. 0: off (fixed --l2-weight).",
        ),
    ] = 0.0,
    design: Annotated[
        str,
        typer.Option(
            "--design",
            help="native: canvases of tiles at the images' own resolution, the residual "
            "JND-shaped and held at a fixed PSNR (--budget), the tiles' logits averaged "
            "(fingerprint-embed's default); paper: the authors' design, images at --resolution "
            "with the image-loss schedule (--l2-*, --robust).",
        ),
    ] = "native",
    canvas: Annotated[
        int, typer.Option("--canvas", help="native: canvas side in tiles (data: canvas x R px).")
    ] = 2,
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            help="native: PSNR (dB) of the residual at strength 1 to start from; with "
            "--target-acc it then rises while the pooled bit accuracy beats the target.",
        ),
    ] = 30.0,
    visibility_weight: Annotated[
        float,
        typer.Option(
            "--visibility-weight", help="native: weight of the change's excess over the JND."
        ),
    ] = 1.0,
    ssim_weight: Annotated[
        float,
        typer.Option(
            "--ssim-weight",
            help="native: weight of 1 - SSIM of the luminance (moves the change from smooth "
            "areas into textured ones).",
        ),
    ] = 1.0,
    snapshot_every: Annotated[
        int, typer.Option("--snapshot-every", help="Save model and state every N steps.")
    ] = 500,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Start from a trained stego model (e.g. builtin:stego-100's file) instead of "
            "from scratch: full image loss and robustness from the first step. Its resolution "
            "may be smaller than --resolution (progressive training).",
        ),
    ] = None,
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a fingerprint encoder/decoder pair (artificial fingerprints, Yu et al. 2021).

    --design native (default): each image is a canvas of --canvas x --canvas tiles of
    --resolution px; the residual is JND-attenuated, band-passed and held at --budget dB PSNR;
    the decoder reads every tile after a random shift and one perturbation (JPEG, half-size
    round trip, noise, blur, brightness) and its mean logits are scored. With --target-acc the
    budget rises while the pooled bit accuracy beats the target.

    --design paper: the authors' schedule. The image loss (MSE on the [0, 1] scale) is off until
    the bit accuracy first passes 0.9, then ramps up to --l2-weight; --robust adds
    perturbations from then on. Writes OUT/stego.safetensors (for fingerprint-embed and
    fingerprint-decode), OUT/state.safetensors (exact resume) and OUT/log.jsonl.
    """

    from contextlib import nullcontext

    from gantk.errors import GantkError
    from gantk.fingerprint.stego_runs import start_or_resume
    from gantk.fingerprint.train_stego import STATE_FILE, StegoTrainConfig
    from gantk.io.atomic import check_run_folder, new_run
    from gantk.perturb import parse_names

    if out is None:
        raise GantkError("give --out, the run folder")
    if resume and data is not None:
        raise GantkError("--resume continues the run in --out; leave out DATASET")
    if not resume and data is None:
        raise GantkError("give DATASET to train on (or --resume with --out)")
    set_threads(threads)
    config = StegoTrainConfig(
        data=data or "",
        bits=bits,
        resolution=resolution,
        batch_size=batch_size,
        steps=steps,
        lr=lr,
        l2_weight=l2_weight,
        l2_delay=l2_delay,
        l2_ramp=l2_ramp,
        robust=parse_names(robust) if robust else [],
        chroma_weight=chroma_weight,
        luma=luma,
        target_acc=target_acc,
        precision=precision,
        design=design,
        canvas=canvas,
        budget_db=budget,
        visibility_weight=visibility_weight,
        ssim_weight=ssim_weight,
        seed=seed,
        device=_device(device),
        snapshot_every=snapshot_every,
    )
    output = Output(quiet, as_json)
    # Never in the data; other files in the folder may stay (the training scripts put a
    # start.json there first): the trainer refuses a folder that already holds a stego run.
    check_run_folder(out, [data] if data and not data.startswith("builtin:") else [],
                     force=True)  # fmt: skip
    trainer = _resume_stego(config, out) if resume else start_or_resume(config, out, False, init)
    done = {"step": trainer.step}
    with (
        output.progress(trainer.config.steps, "training") as advance,
        # A new run that fails before its first state (a full disk) leaves nothing behind.
        new_run(out, lambda: (out / STATE_FILE).is_file()) if not resume else nullcontext(),
    ):
        if trainer.step:
            advance(trainer.step)

        def on_log(entry: dict) -> None:
            advance(
                entry["step"] - done["step"],
                f"step {entry['step']} bit acc {entry['bit_acc']:.3f} PSNR {entry['psnr']:.1f} dB",
            )
            done["step"] = entry["step"]

        final = trainer.run(on_log)
    accuracy, quality = final.get("bit_acc", float("nan")), final.get("psnr", float("nan"))
    output.say(
        f"bit accuracy {accuracy:.4f}, PSNR {quality:.2f} dB (training batches); "
        f"saved {out}/stego.safetensors"
    )
    output.result({"out": str(out), **final})


def _resume_stego(config, out: Path):
    """The stego trainer of the run in ``out``: its state file is checked first (a config of
    the right fields, types and ranges; every part the trainer loads present and of its
    shape), so a damaged or edited file is one error line, not a traceback."""
    from gantk.fingerprint.stego_runs import start_or_resume
    from gantk.fingerprint.train_stego import STATE_FILE, StegoTrainConfig
    from gantk.io.checkpoint import load_checked_state, load_training_state
    from gantk.io.config_schema import checked_config

    state_file = out / STATE_FILE
    if state_file.is_file():
        _, saved = load_training_state(state_file, "stego-training-state")
        # Checked as the run will use it: the length of the run and the device are this call's.
        changed = {**saved, "steps": config.steps, "device": config.device}
        checked_config(StegoTrainConfig, changed, state_file, "stego training", strict=True)
    return load_checked_state(lambda _: start_or_resume(config, out, True), None, state_file)


app.command("attributor", help=attribution.train_attributor.__doc__)(attribution.train_attributor)
app.command("texture", help=texture.train_texture.__doc__)(texture.train_texture)
app.command("texture-classifiers")(train_texture_classifiers.command)
