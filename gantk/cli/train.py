"""``gantk train``: one subcommand per trainable model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gantk.cli import attribution, texture, train_gan, train_texture_classifiers
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
    process_device,
    set_threads,
)

app = typer.Typer(
    help="Train models: GANs, fingerprint encoders, attributors, Texture Mixers.",
    no_args_is_help=True,
)


app.command("gan")(train_gan.train_gan)


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
    margin_weight: Annotated[
        float,
        typer.Option(
            "--margin-weight",
            help="native: weight of each canvas's weakest bits' shortfall from a margin (what "
            "--strength auto raises the strength for); 0: off. Weight 1 on the bundled model "
            "made auto's held-out PSNR worse (docs/models.md).",
        ),
    ] = 0.0,
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
        margin_weight=margin_weight,
        seed=seed,
        device=process_device(device),
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
