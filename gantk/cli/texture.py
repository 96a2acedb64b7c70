"""``gantk texture-mix`` and ``gantk train texture``: the Texture Mixer (thesis ch. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    resolve_device,
    set_threads,
)
from gantk.cli.texture_options import (
    CoverOpt,
    DeblockOpt,
    GramNetOpt,
    GramWeightsOpt,
    MixOpt,
    MixPrecisionOpt,
)


def _mode(palette: bool, dissolve: bool, brush: Path | None, fill: Path | None) -> str:
    from gantk.errors import GantkError

    chosen = [
        name
        for name, on in (
            ("--palette", palette),
            ("--dissolve", dissolve),
            ("--brush", brush is not None),
            ("--fill", fill is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise GantkError(f"{' and '.join(chosen)} exclude each other; pick one mode")
    return chosen[0].removeprefix("--") if chosen else "strip"


def _read_mask(path: Path):
    """A mask image as (H, W) float in [0, 1] (white = 1); any mode is converted to grey."""
    import numpy as np

    from gantk.errors import GantkError
    from gantk.io.images import UnreadableImage, is_image_file, load_rgb

    if not path.is_file() or not is_image_file(path):
        what = "does not exist" if not path.exists() else "is not an image file"
        raise GantkError(f"mask {path} {what}; give a black-and-white image (white = 1)")
    try:
        return load_rgb(path).astype(np.float32).mean(axis=2) / 255.0
    except UnreadableImage:
        raise GantkError(f"mask {path} cannot be decoded; re-save it as PNG") from None


def _read_image(spec: str, role: str):
    """One whole image (file or builtin:NAME) as a 1 x 3 x H x W tensor in [-1, 1]."""
    import torch

    from gantk.errors import GantkError
    from gantk.texture.data import load_texture_sources

    if Path(spec).is_dir() or spec.split("?")[0] in ("builtin:textures", "builtin:photos"):
        raise GantkError(f"{role} {spec} names several images; give one file or builtin:NAME")
    image = load_texture_sources(spec)[0].image
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


MIN_SIDE = 16  # four latent cells: the generator's reflect padding needs at least two
# Memory the mixer holds per output pixel: latents, float32 RGB and blending buffers.
BYTES_PER_PIXEL = 64


def _check_canvas(
    mode: str, length: int, height: int, size: int | None, frames: int, resolution: int
) -> None:
    """Refuse an output too large to make, before anything is allocated: more pixels than gantk
    reads back in one image, or more memory than the machine has."""
    from gantk.errors import GantkError
    from gantk.io.images import MAX_PIXELS
    from gantk.io.limits import check_memory

    width, tall, count = {
        "strip": (length, height, 1),
        "palette": (size or 1024, size or 1024, 1),
        "dissolve": (size or 2 * resolution, size or 2 * resolution, frames),
    }.get(mode, (0, 0, 0))
    if width * tall > MAX_PIXELS:
        raise GantkError(
            f"a {mode} of {width}x{tall} pixels is {width * tall / 1e6:.0f} M pixels, more than "
            f"the {MAX_PIXELS / 1e6:.0f} M in one image gantk reads back; make it smaller"
        )
    check_memory(f"a {mode} of {count} x {width}x{tall} pixels",
                 width * tall * count * BYTES_PER_PIXEL, "make it smaller")  # fmt: skip


@handle_errors
def texture_mix(
    textures: Annotated[
        list[str],
        READS,
        typer.Argument(
            metavar="TEXTURE...",
            help="Texture images or builtin:NAME (brick, grass, gravel, moon, hubble, ihc, or a "
            "photo: astronaut, coffee, ...). Strip, dissolve and fill: 2; palette: 4 (top-left, "
            "top-right, bottom-left, bottom-right); brush: BACKGROUND BRUSH_TEXTURE.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        WRITES,
        typer.Option(
            "--out", "-o", help="Output image (.png/.jpg; .gif for --dissolve).", show_default=False
        ),
    ],
    model: Annotated[
        str,
        READS,
        typer.Option(
            "--model",
            "-m",
            help="Texture Mixer (.safetensors from `gantk train texture`) or "
            "builtin:texture-mixer (bundled, trained on builtin:textures).",
        ),
    ] = "builtin:texture-mixer",
    length: Annotated[
        int, typer.Option("--length", help="Strip: length in pixels (left to right).")
    ] = 1024,
    height: Annotated[
        int | None,
        typer.Option("--height", help="Strip: height in pixels (default: the model's size)."),
    ] = None,
    palette: Annotated[
        bool, typer.Option("--palette", help="4-corner palette of --size x --size pixels.")
    ] = False,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Palette side (default 1024) or dissolve frame side (default 2x the model's "
            "size), in pixels.",
        ),
    ] = None,
    dissolve: Annotated[
        bool,
        typer.Option("--dissolve", help="Animated cross-dissolve from the first to the second."),
    ] = False,
    frames: Annotated[int, typer.Option("--frames", help="Dissolve: number of frames.")] = 48,
    fps: Annotated[float, typer.Option("--fps", help="Dissolve: frames per second.")] = 24.0,
    brush: Annotated[
        Path | None,
        typer.Option(
            "--brush",
            help="Paint the second texture over the first (a whole background image) where "
            "this mask (same size as the background) is white.",
        ),
    ] = None,
    sigma: Annotated[
        float, typer.Option("--sigma", help="Brush: Gaussian softness of the edge, in pixels.")
    ] = 8.0,
    fill: Annotated[
        Path | None,
        typer.Option(
            "--fill",
            help="Fill the white region of this mask in --image with an interpolation from the "
            "first texture (left) to the second (right).",
        ),
    ] = None,
    image: Annotated[
        str | None, READS, typer.Option("--image", help="Fill: the photo with the hole.")
    ] = None,
    blend: Annotated[
        str,
        typer.Option(
            "--blend",
            help="How placed textures (strip, palette) and fills are put back: graphcut (a "
            "least-visible seam), poisson (gradient-domain blending; shifts colours smoothly to "
            "match), graphcut+poisson, or none (strip/palette: the network's own "
            "reconstruction; fill: a hard paste).",
        ),
    ] = "graphcut+poisson",
    no_shuffle: Annotated[
        bool,
        typer.Option("--no-shuffle", help="Tile latents without random shuffling (repeats)."),
    ] = False,
    scale: Annotated[
        float,
        typer.Option(
            "--scale",
            help="Read each texture as a centre square of SCALE x the model's size, resized to "
            "the model's size (its training crops were downscaled 1-4x); 0 takes the whole "
            "image's centre square.",
        ),
    ] = 2.0,
    cover: CoverOpt = "patches",
    mix: MixOpt = "select",
    deblock: DeblockOpt = True,
    adapt_steps: Annotated[
        int,
        typer.Option(
            "--adapt",
            help="Fine-tune a copy of the model on crops of these textures for this many steps "
            "before mixing (reconstruction and interpolation losses, no critics): the placed "
            "textures come back closer, but the mix between them gets smoother (measured at "
            "50 steps on held-out pairs: sharpness of the middle 0.79 -> 0.37; docs/models.md); "
            "about 1 s a step for the bundled model on one CPU core shared with other jobs. "
            "0 (the default): mix with the model as it is.",
        ),
    ] = 0,
    precision: MixPrecisionOpt = "auto",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Mix textures with a Texture Mixer: strips, palettes, dissolves, brushes, fills.

    Textures are encoded to a latent space where tiling, shuffling and weighted blending make
    seamless transitions of any size; placed textures are then put back (--blend).
    Each texture is read as a centre square of --scale x the model's size resized to the
    model's size (upscaled, and said, when smaller). Examples:

      gantk texture-mix builtin:brick builtin:gravel --out strip.png --length 1024

      gantk texture-mix a.jpg b.jpg c.jpg d.jpg --palette --size 1024 --out palette.png

      gantk texture-mix a.jpg b.jpg --dissolve --frames 48 --out dissolve.gif

      gantk texture-mix background.jpg brush.jpg --brush mask.png --out painted.png

      gantk texture-mix left.jpg right.jpg --fill hole.png --image photo.jpg --out filled.png
    """
    import time

    import numpy as np

    from gantk.errors import GantkError
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import save_gif, save_image
    from gantk.texture.data import load_texture
    from gantk.texture.mixing import (
        Mixer,
        palette_placements,
        restore_placed,
        strip_placements,
        to_uint8,
    )
    from gantk.texture.postprocess import parse_blend
    from gantk.texture.train import load_texture_mixer

    output = Output(quiet, as_json)
    mode = _mode(palette, dissolve, brush, fill)
    if scale < 0:
        raise GantkError(f"--scale must be 0 (whole image) or positive, got {scale}")
    if fps <= 0:
        raise GantkError(f"--fps must be positive, got {fps}")
    for name, value in (("--height", height), ("--size", size), ("--length", length)):
        if value is not None and value < MIN_SIDE:
            raise GantkError(f"{name} must be at least {MIN_SIDE} px, got {value}")
    if sigma < 0:
        raise GantkError(f"--sigma must be 0 (a hard edge) or positive pixels, got {sigma:g}")
    if frames < 1:
        raise GantkError(f"--frames must be at least 1, got {frames}")
    parse_blend(blend)
    needed = {"strip": 2, "dissolve": 2, "fill": 2, "brush": 2, "palette": 4}[mode]
    if mode == "palette" and len(textures) != 4:
        raise GantkError(f"--palette takes exactly 4 textures (the corners), got {len(textures)}")
    if len(textures) < needed:
        raise GantkError(
            f"{mode} needs {needed} textures, got {len(textures)}; give "
            f"{needed - len(textures)} more"
        )
    if len(textures) > needed:
        hint = "; for 4 corners use --palette" if mode == "strip" else ""
        raise GantkError(f"{mode} takes {needed} textures, got {len(textures)}{hint}")
    suffix = out.suffix.lower()
    if mode == "dissolve" and suffix != ".gif":
        raise GantkError("--dissolve writes an animated GIF; give --out NAME.gif")
    if mode != "dissolve" and suffix not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif"):
        raise GantkError(f"--out {out}: use an image extension such as .png or .jpg")
    if mode == "fill" and image is None:
        raise GantkError("--fill needs --image, the photo with the hole")
    if image is not None and mode != "fill":
        raise GantkError("--image is the photo for --fill; leave it out in this mode")
    inputs = [t for t in textures if not t.startswith("builtin:")] + [
        str(p) for p in (brush, fill) if p is not None
    ]
    if image is not None and not image.startswith("builtin:"):
        inputs.append(image)
    check_output(out, force, inputs)

    if not 0 <= adapt_steps <= 100_000:
        raise GantkError(f"--adapt must be in 0..100000 steps, got {adapt_steps}")
    set_threads(threads)
    dev = resolve_device(device)
    mixer_model = load_texture_mixer(model, dev)
    resolution = mixer_model.config.resolution
    _check_canvas(mode, length, height or resolution, size, frames, resolution)
    first = 1 if mode == "brush" else 0  # the brush background is read whole, not as a texture
    loaded = []
    for spec in textures[first:]:
        tensor, note = load_texture(spec, resolution, scale)
        if note:
            output.warn(note)
        loaded.append(tensor)

    adapt_seconds = 0.0
    if adapt_steps:
        from gantk.texture.adapt import adapt, at_model_scale
        from gantk.texture.gram import load_gram_net

        began = time.perf_counter()
        whole = [at_model_scale(spec, resolution, scale).to(dev) for spec in textures[first:]]
        # The features the model was trained with; the ImageNet VGG-19 when its file is here.
        trained = getattr(mixer_model, "gram_net", "auto")
        gram = load_gram_net("random-vgg19" if trained == "random-vgg19" else "auto", None, dev)
        with output.progress(adapt_steps, "adapting") as advance:
            mixer_model = adapt(
                mixer_model, whole, adapt_steps, gram, seed, precision, advance, mix=mix
            )
        adapt_seconds = time.perf_counter() - began
    mixer = Mixer(mixer_model, shuffle=not no_shuffle, cover=cover, mix=mix, precision=precision,
                  deblock=deblock)  # fmt: skip

    started = time.perf_counter()
    result: np.ndarray | list[np.ndarray]
    if mode == "strip":
        height = height or resolution
        canvas = mixer.strip(loaded, length, seed, height)
        placed = strip_placements(length, resolution)
        result = restore_placed(canvas, loaded, placed, blend)
    elif mode == "palette":
        size = size or 1024
        canvas = mixer.palette(loaded, size, seed)
        result = restore_placed(canvas, loaded, palette_placements(size, resolution), blend)
    elif mode == "dissolve":
        side = size or 2 * resolution
        result = [to_uint8(f) for f in mixer.dissolve(loaded, frames, (side, side), seed)]
    elif mode == "brush":
        assert brush is not None
        background = _read_image(textures[0], "the brush background")
        if min(background.shape[2:]) < resolution:
            raise GantkError(
                f"the brush background {textures[0]} is {background.shape[3]}x"
                f"{background.shape[2]} px, smaller than the model's {resolution} px; give a "
                "larger image"
            )
        mask = _read_mask(brush)
        import torch

        painted = mixer.brush(background, loaded[0], torch.from_numpy(mask), sigma, seed)
        result = to_uint8(painted).astype(np.float32) / 255.0
    else:
        assert fill is not None and image is not None
        photo = _read_image(image, "--image")
        hole = _read_mask(fill) > 0.5
        base = to_uint8(photo).astype(np.float32) / 255.0
        result = mixer.fill(loaded, base, hole, blend, seed)
    seconds = time.perf_counter() - started

    with atomic_file(out, force) as tmp:
        if isinstance(result, list):
            save_gif(result, tmp, fps)
            shape = result[0].shape
        else:
            pixels = np.clip(np.round(result * 255), 0, 255).astype(np.uint8)
            save_image(pixels, tmp, named_as=out)
            shape = pixels.shape
    adapted = f" after {adapt_steps} adaptation steps ({adapt_seconds:.1f} s)" * bool(adapt_steps)
    output.say(f"{mode}: wrote {out} ({shape[1]}x{shape[0]} px) in {seconds:.2f} s{adapted}")
    output.result(
        {
            "mode": mode,
            "out": str(out),
            "width": int(shape[1]),
            "height": int(shape[0]),
            "frames": len(result) if isinstance(result, list) else 1,
            "seconds": round(seconds, 4),
            "adapt_steps": adapt_steps,
            "adapt_seconds": round(adapt_seconds, 4),
            "deblock": deblock,
            "model": model,
        }
    )


@handle_errors
def train_texture(
    data: Annotated[
        str | None,
        READS,
        typer.Argument(
            metavar="TEXTURES",
            help="Texture photos: folder, image file or builtin:textures (omit with --resume). "
            "The top 75% of every image's rows are used; the rest is kept for evaluation.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        WRITES,
        typer.Option("--out", "-o", help="Run folder (new, or the one to resume)."),
    ] = None,
    resolution: Annotated[
        int, typer.Option("--resolution", "-r", help="Training crop size (power of two).")
    ] = 128,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 100_000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texture pairs per step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 0.0015,
    channels: Annotated[
        int, typer.Option("--channels", help="Generator width (paper: 256).")
    ] = 256,
    latent_channels: Annotated[
        int, typer.Option("--latent-channels", help="Local latent channels (paper: 128).")
    ] = 128,
    global_dim: Annotated[
        int, typer.Option("--global-dim", help="Global code size (paper: 128).")
    ] = 128,
    res_blocks: Annotated[
        int, typer.Option("--res-blocks", help="Residual blocks in the generator.")
    ] = 5,
    d_channels: Annotated[
        int, typer.Option("--d-channels", help="Critic width at full resolution.")
    ] = 64,
    upsample: Annotated[
        str,
        typer.Option(
            "--upsample",
            help="The generator's 2x upsampling: nearest (the paper's) or bilinear (no 4-pixel "
            "block pattern where latents are shuffled, with a narrow generator).",
        ),
    ] = "nearest",
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix",
            help="The interpolation task: blend (the paper's: the two latents averaged, "
            "default for a new run) or select (each latent cell one texture, in the regions "
            "texture-mix --mix select draws, so the generator learns their edges). With "
            "--resume it switches the run's task; left out, the run keeps its own.",
        ),
    ] = None,
    no_shuffle: Annotated[
        bool, typer.Option("--no-shuffle", help="Ablation: no latent shuffling in training.")
    ] = False,
    no_blend: Annotated[
        bool,
        typer.Option("--no-blend", help="Ablation: interpolate a texture only with itself."),
    ] = False,
    no_global: Annotated[
        bool, typer.Option("--no-global", help="Ablation: no global code z^g.")
    ] = False,
    l1_weight: Annotated[float, typer.Option("--l1-weight", help="λ1, pixel L1.")] = 100.0,
    gram_weight: Annotated[
        float, typer.Option("--gram-weight", help="λ2 = λ4, Gram losses.")
    ] = 0.001,
    adv_weight: Annotated[
        float, typer.Option("--adv-weight", help="λ3 = λ5, WGAN-GP losses.")
    ] = 1.0,
    gram_every: Annotated[
        int,
        typer.Option(
            "--gram-every",
            help="Compute the Gram losses every N steps at N times the weight (saves the VGG "
            "passes on a CPU).",
        ),
    ] = 1,
    gram_net: GramNetOpt = "auto",
    gram_weights: GramWeightsOpt = None,
    snapshot_every: Annotated[
        int, typer.Option("--snapshot-every", help="Save model, state and a sample every N.")
    ] = 500,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")
    ] = False,
    init: Annotated[
        str | None,
        READS,
        typer.Option(
            "--init",
            help="Start from a trained model (a latest.safetensors or builtin:texture-mixer) "
            "of the same shape; critics and optimizers start afresh.",
        ),
    ] = None,
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a Texture Mixer: reconstruction and interpolation tasks together.

    Reconstruction: L1, Gram (VGG-19 relu1_1..relu5_1) and WGAN-GP losses. Interpolation:
    latents tiled 3x3, shuffled at scales 1, 2, 4, ... with the corner tiles kept, blended with
    α ~ U(0, 1); a random crop gets α-weighted Gram and WGAN-GP losses. Training crops are
    augmented (histogram matching, flips, rotation, downscaling up to 4x). Writes
    OUT/latest.safetensors (EMA weights, for texture-mix and evaluate texture),
    OUT/state.safetensors (exact resume), OUT/log.jsonl and OUT/samples/.
    """
    from contextlib import nullcontext

    from gantk.errors import GantkError
    from gantk.io.atomic import check_run_folder, new_run
    from gantk.io.checkpoint import load_checked_state
    from gantk.texture.train import STATE_FILE, TextureTrainConfig, start_or_resume

    if out is None:
        raise GantkError("give --out, the run folder")
    if resume and data is not None:
        raise GantkError("--resume continues the run in --out; leave out TEXTURES")
    if not resume and data is None:
        raise GantkError("give TEXTURES to train on (or --resume with --out)")
    set_threads(threads)
    config = TextureTrainConfig(
        data=data or "",
        resolution=resolution,
        latent_channels=latent_channels,
        global_dim=0 if no_global else global_dim,
        channels=channels,
        res_blocks=res_blocks,
        d_channels=d_channels,
        upsample=upsample,
        batch_size=batch_size,
        steps=steps,
        lr=lr,
        l1_weight=l1_weight,
        gram_weight=gram_weight,
        adv_weight=adv_weight,
        gram_every=gram_every,
        shuffle=not no_shuffle,
        blend=not no_blend,
        mix=mix or "blend",
        gram_net=gram_net,
        gram_weights=str(gram_weights) if gram_weights else None,
        precision=precision,
        seed=seed,
        device=process_device(device),  # under torchrun: this process's GPU
        snapshot_every=snapshot_every,
    )
    output = Output(quiet, as_json)
    # Never in the data; other files in the folder may stay (the training scripts put a
    # start.json there first): the trainer refuses a folder that already holds a texture run.
    check_run_folder(out, [data] if data and not data.startswith("builtin:") else [],
                     force=True)  # fmt: skip
    # --resume reads a state file anyone can edit: a part missing or of the wrong shape is one
    # error naming it.
    if resume:
        resumed = lambda _: start_or_resume(config, out, True, init, mix)  # noqa: E731
        trainer = load_checked_state(resumed, None, out / STATE_FILE)
    else:
        trainer = start_or_resume(config, out, False, init)
    output.say(f"Gram losses on {trainer.gram.name} features")
    done = {"step": trainer.step}
    with (
        output.progress(trainer.config.steps, "training") as advance,
        # A new run that fails before its first state (a full disk) leaves nothing behind.
        new_run(out, lambda: (out / STATE_FILE).is_file()) if not resume else nullcontext(),
    ):
        if trainer.step:
            advance(trainer.step)

        def on_log(entry: dict) -> None:
            # A log window without a --gram-every step has no Gram terms.
            gram = f" Gram {entry['gram_rec']:.3f}" if "gram_rec" in entry else ""
            status = f"step {entry['step']} L1 {entry['l1']:.3f}{gram}"
            advance(entry["step"] - done["step"], status)
            done["step"] = entry["step"]

        final = trainer.run(on_log)
    if not final:
        output.say(f"{out} is already at step {trainer.step}; raise --steps to train further")
    else:
        output.say(f"step {trainer.step}: L1 {final['l1']:.4f}; saved {out}/latest.safetensors")
    output.result({"out": str(out), "gram_net": trainer.gram.name, **final})
