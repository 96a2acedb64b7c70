"""``gantk project``: find the latents that make a generator reproduce given images."""

from __future__ import annotations

import json
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
    QuietOpt,
    SeedOpt,
    handle_errors,
)
from gantk.cli.evaluate_common import LpipsWeightsOpt


@handle_errors
def project(
    images: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="IMAGES",
            help="Images to project: a folder, an .h5 pack or builtin:NAME.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path, typer.Option("--model", "-m", help="The (unconditional) generator checkpoint.")
    ],
    out: Annotated[Path, WRITES, typer.Option("--out", "-o", help="The folder to write.")],
    wplus: Annotated[
        bool,
        typer.Option(
            "--wplus", help="One w per layer (W+: closer fits, further from the generator's W)."
        ),
    ] = False,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = 1000,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate.")] = 0.1,
    count: Annotated[
        int | None, typer.Option("-n", "--count", min=1, help="Project only the first N images.")
    ] = None,
    noise_weight: Annotated[
        float,
        typer.Option(
            "--noise-weight",
            min=0.0,
            help="Weight of the noise inputs' regulariser; 0 keeps the generator's own noise "
            "fixed instead of optimising it.",
        ),
    ] = 1e5,
    lpips_net: Annotated[
        str, typer.Option("--lpips-net", help="LPIPS trunk: vgg (StyleGAN2's) or alex.")
    ] = "vgg",
    lpips_weights: LpipsWeightsOpt = None,
    gif: Annotated[
        bool, typer.Option("--gif", help="Also write each optimisation as NAME-progress.gif.")
    ] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Project images into a generator: the w (or W+ with --wplus) and noise inputs that make it
    reproduce each image, as StyleGAN2's projector finds them (LPIPS on VGG-16 plus a
    regulariser on the noise inputs, Adam with a ramped learning rate and decaying latent noise).

    Writes to --out: NAME.png (the reconstruction), latents.npz (every image's styles and noise
    maps: `gantk generate MODEL --latents OUT/latents.npz --out DIR` renders them again),
    projection.json (the final LPIPS of each) and, with --gif, NAME-progress.gif.
    Example: gantk project faces/ --model ffhq.safetensors --out projected/ --steps 500
    """
    from gantk.cli.common import resolve_device
    from gantk.gan.generate import load_generator
    from gantk.gan.projector import project as project_one
    from gantk.gan.projector import render_projection, save_latents, w_statistics
    from gantk.io.atomic import atomic_dir, check_output
    from gantk.io.datasets import open_dataset
    from gantk.io.images import save_gif, save_image
    from gantk.metrics.lpips_metric import load_lpips

    output = Output(quiet, as_json)
    check_output(out, force, [images, model])
    dev = resolve_device(device)
    G = load_generator(model, dev)
    stats = w_statistics(G)
    lpips_model = load_lpips(lpips_net, lpips_weights, dev)
    dataset = open_dataset(images, resolution=G.config.resolution, allow_upscale=True,
                           count=count)  # fmt: skip
    names = [Path(n).stem for n in (dataset.filenames or [f"{i:06d}" for i in range(len(dataset))])]
    results = []
    with atomic_dir(out, force) as tmp, output.progress(len(dataset), "projecting") as advance:
        for i, name in enumerate(names):
            image = dataset[i][0]
            result = project_one(G, image, lpips_model, steps, lr, wplus, noise_weight,
                                 seed + i, max(1, steps // 50) if gif else None, stats)  # fmt: skip
            save_image(render_projection(G, result.ws, result.noise), tmp / f"{name}.png")
            if gif:
                save_gif(result.frames, tmp / f"{name}-progress.gif", fps=10)
            results.append(result)
            advance(1)
        with open(tmp / "latents.npz", "wb") as f:
            save_latents(f, names, results)
        summary = {
            "model": str(model),
            "out": str(out),
            "space": "w+" if wplus else "w",
            "steps": steps,
            "lpips": f"lpips-{lpips_net}",
            "images": {n: round(r.distance, 6) for n, r in zip(names, results, strict=True)},
        }
        (tmp / "projection.json").write_text(json.dumps(summary, indent=2))
    mean = sum(r.distance for r in results) / len(results)
    output.say(f"projected {len(results)} images into {model} (mean LPIPS {mean:.4f}); {out}")
    output.result(summary)
