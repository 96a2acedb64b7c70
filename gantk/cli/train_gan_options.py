"""The options of ``gantk train gan``, grouped by what they set.

Each option's name is the :class:`gantk.gan.config.TrainConfig` (or, for the network's,
:class:`gantk.gan.networks.NetworkConfig`) field it sets, so ``--r1-gamma`` is ``r1_gamma``
there; :func:`gantk.cli.train_gan.settings` does the few conversions (lists, --precision).
The command lists them in the order of its ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli.common import READS, WRITES

# --- What to train on, where, and from what -------------------------------------------------------

DataOpt = Annotated[
    str | None,
    READS,
    typer.Argument(
        metavar="DATA",
        help="Folder, .h5 pack or builtin:NAME (not needed with --resume).",
        show_default=False,
    ),
]

OutOpt = Annotated[
    Path | None,
    WRITES,
    typer.Option("--out", "-o", help="Run folder: checkpoints, samples, log.jsonl."),
]

ResumeOpt = Annotated[
    Path | None,
    WRITES,
    typer.Option("--resume", help="Continue the run in this folder exactly where it stopped."),
]

InitOpt = Annotated[
    Path | None,
    typer.Option(
        "--init",
        help="Start G (and its EMA) from this generator checkpoint, e.g. an NVIDIA model "
        "from `gantk convert` (transfer learning); the network settings come from it.",
    ),
]

InitDiscriminatorOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-discriminator",
        help="With --init: start D from this discriminator (`gantk convert "
        "--discriminator`); without it D starts from random weights.",
    ),
]

ResolutionOpt = Annotated[
    int | None,
    typer.Option(
        "--resolution", "-r", help="Image size (power of two, 4-1024); default: the dataset's."
    ),
]


# --- How long, how often --------------------------------------------------------------------------

KimgOpt = Annotated[
    float, typer.Option("--kimg", help="Train until this many thousand real images were shown.")
]

BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", "-b", min=2, help="Global batch (split across processes)."),
]

SnapshotKimgOpt = Annotated[
    float, typer.Option("--snapshot-kimg", help="Checkpoint every this many kimg.")
]

SampleKimgOpt = Annotated[
    float, typer.Option("--sample-kimg", help="Sample grid every this many kimg.")
]

TickKimgOpt = Annotated[float, typer.Option("--tick-kimg", help="Log line every this many kimg.")]


# --- Loss and regularization ----------------------------------------------------------------------

LossOpt = Annotated[
    str,
    typer.Option(
        "--loss",
        help="ns, saturating, wgan-gp, hinge or contrastive "
        "(dual contrastive, thesis Eq. 2.1-2.3).",
    ),
]

ContrastiveWarmupEpochsOpt = Annotated[
    float,
    typer.Option(
        "--contrastive-warmup",
        min=0,
        help="Epochs (passes over DATA) of non-saturating loss before the contrastive loss "
        "takes over; the thesis warms up for about 20. Short runs: keep it near 5% of "
        "--kimg, as 20 epochs were of the thesis' runs.",
    ),
]

PresetOpt = Annotated[
    str,
    typer.Option(
        "--config",
        help="Named settings: auto (StyleGAN2-ADA's default: R1 gamma 0.0002*res^2/batch, "
        "EMA ramp-up 0.05) or paper (StyleGAN2 config E as published: R1 gamma 10, no EMA "
        "ramp-up, so only runs of tens of kimg). Explicit options override it; recorded in "
        "train-config.json.",
    ),
]

LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate of G and D.")]

R1GammaOpt = Annotated[
    float | None,
    typer.Option(
        "--r1-gamma",
        help="R1 weight; default: --config's (auto's heuristic or 10). Short runs on small "
        "images: 10 with --config auto trained best (docs/results.md).",
    ),
]

PlWeightOpt = Annotated[
    float, typer.Option("--pl-weight", help="Path length regularization weight (0: off).")
]

StyleMixingOpt = Annotated[
    float, typer.Option("--style-mixing", help="Probability of style mixing.")
]

EmaKimgOpt = Annotated[
    float, typer.Option("--ema-kimg", help="Half-life of the generator EMA in kimg.")
]


# --- Attention ------------------------------------------------------------------------------------

GAttnOpt = Annotated[
    str | None,
    typer.Option("--g-attn", help="Attention in G: san@RES or sagan@RES replaces the conv at RES."),
]

DAttnOpt = Annotated[
    str | None,
    typer.Option(
        "--d-attn",
        help="Attention in D: reference@RES (Siamese, real reference image) or self@RES.",
    ),
]

AttnKernelOpt = Annotated[int, typer.Option("--attn-kernel", help="SAN patch size (odd).")]


# --- Data and augmentation ------------------------------------------------------------------------

MirrorOpt = Annotated[
    bool, typer.Option("--mirror", help="Random left-right flips of real images.")
]

AugOpt = Annotated[
    str,
    typer.Option(
        "--aug",
        help="Augment every image D sees (reals and fakes): none, ada (StyleGAN2-ADA's "
        "adaptive pipeline: flips, rotations, scaling, translation, colour, each with "
        "probability p tuned so D's sign on reals averages --ada-target) or diffaug "
        "(DiffAugment: colour, translation, cutout). For small datasets, where D overfits.",
    ),
]

AugPOpt = Annotated[float, typer.Option("--aug-p", help="With --aug ada: p at the start (0-1).")]

AdaTargetOpt = Annotated[
    float,
    typer.Option("--ada-target", help="With --aug ada: the E[sign(D(real))] p is tuned to."),
]

AdaKimgOpt = Annotated[
    float,
    typer.Option(
        "--ada-kimg",
        help="With --aug ada: p can move by 1 in this many kimg (StyleGAN2-ADA: 500; "
        "short runs need less).",
    ),
]

CondOpt = Annotated[
    bool,
    typer.Option(
        "--cond",
        help="Class-conditional: G and D take the dataset's labels (a folder of class "
        "subfolders, a pack made with --labels, or a labeled built-in such as "
        "builtin:digits); the checkpoint keeps the class names for `gantk generate --class "
        "NAME`.",
    ),
]


# --- Metrics while training -----------------------------------------------------------------------

MetricsOpt = Annotated[
    str,
    typer.Option(
        "--metrics",
        help="Measure the EMA generator while training: fid, kid or fid,kid, against the "
        "training data (its features cached in the run folder). Logged to log.jsonl and "
        "shown in the progress line; best.safetensors keeps the generator with the best "
        "first metric. Needs the Inception weights (downloaded on first use).",
    ),
]

MetricsKimgOpt = Annotated[
    float | None,
    typer.Option("--metrics-kimg", help="Measure every this many kimg (default: snapshots)."),
]

MetricsCountOpt = Annotated[
    int,
    typer.Option(
        "--metrics-count", min=2, help="Generated (and at most as many real) images each time."
    ),
]

MetricsFeaturesOpt = Annotated[
    str,
    typer.Option(
        "--metrics-features",
        help="Feature network: inception (the standard FID/KID) or random-inception (no "
        "download; values named fid[random-inception], comparable only with themselves).",
    ),
]


# --- The network ----------------------------------------------------------------------------------

ZDimOpt = Annotated[int, typer.Option("--z-dim", help="Latent size.")]

WDimOpt = Annotated[int, typer.Option("--w-dim", help="Style size.")]

MappingLayersOpt = Annotated[
    int, typer.Option("--mapping-layers", help="FC layers in the mapping network.")
]

ChannelBaseOpt = Annotated[
    int, typer.Option("--channel-base", help="Channels at resolution r: min(base/r, max).")
]

ChannelMaxOpt = Annotated[int, typer.Option("--channel-max", help="Channel cap.")]


# --- Hardware -------------------------------------------------------------------------------------

BatchGpuOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-gpu",
        min=1,
        help="Images per forward/backward pass on each device; gradients accumulate over "
        "the --batch-size, so a device that cannot hold the batch trains the same recipe "
        "(the contrastive loss still compares the whole batch's logits; minibatch-std "
        "works within each slice, as in StyleGAN2-ADA). Default: the whole batch.",
    ),
]

PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32 (default), bf16 or fp16 (CUDA) autocast, or auto (bf16 where the CPU or "
        "GPU has it). The GAN stays float32 by default: on an AVX512-BF16 CPU bf16 saved "
        "13-31 % of the step but its FID at equal steps came out higher "
        "(docs/performance.md).",
    ),
]

AmpOpt = Annotated[
    str | None,
    typer.Option("--amp", hidden=True, help="Old spelling of --precision: none, bf16, fp16."),
]

ChannelsLastOpt = Annotated[
    bool, typer.Option("--channels-last", help="channels_last memory format on CUDA.")
]

WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Data loading processes.")]


# --- Scalable fingerprints (gantk.fingerprint.scalable) -------------------------------------------

FingerprintBitsOpt = Annotated[
    int,
    typer.Option(
        "--fingerprint-bits",
        min=0,
        help="Scalable fingerprints: train a generator modulated by BITS-bit fingerprints "
        "and their decoder (then `gantk fingerprint-embed RUN/latest.safetensors --users …`).",
    ),
]

ModulateResOpt = Annotated[
    str,
    typer.Option(
        "--modulate-res", help="Resolutions the fingerprint modulates: all, 4-32 or 8,16."
    ),
]

ImmunizeOpt = Annotated[
    str,
    typer.Option(
        "--immunize",
        help="With --fingerprint-bits: perturb generated images before the decoder (comma "
        "list of noise, blur, jpeg, crop, resize, brightness, combined; or all).",
    ),
]


# --- IMLE-GAN (gantk.gan.imle) --------------------------------------------------------------------

ImleOpt = Annotated[
    bool,
    typer.Option(
        "--imle",
        help="Inclusive GAN: add IMLE reconstruction of every real image (or of --minority) "
        "from its nearest latent in a pool, for data coverage.",
    ),
]

ImleFeaturesOpt = Annotated[
    str,
    typer.Option(
        "--imle-features",
        help="IMLE distance space: auto (lpips if its weights are here, else d), pixel, d "
        "(discriminator features), inception or lpips.",
    ),
]

ImleWeightOpt = Annotated[
    float, typer.Option("--imle-weight", help="Reconstruction weight (authors: 2.5).")
]

ImleInterpOpt = Annotated[
    bool,
    typer.Option("--imle-interp", help="Add the interpolation loss (0.4 x the weight)."),
]

ImlePoolOpt = Annotated[
    int | None,
    typer.Option("--imle-pool", help="Latent pool size (default: 10 x the images matched)."),
]

ImleStalenessOpt = Annotated[
    float,
    typer.Option("--imle-staleness", help="Epochs before re-matching; doubles after each refresh."),
]

MinorityOpt = Annotated[
    str | None,
    typer.Option(
        "--minority",
        help="With --imle: reconstruct only a subgroup: CSV:ATTR[,ATTR…] (images with any "
        "of them) or builtin (a built-in's minority= attribute).",
    ),
]
