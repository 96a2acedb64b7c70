"""``gantk evaluate texture``: Texture Mixer interpolation metrics (thesis Table 3.1)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from gantk.cli.evaluate_common import (
    LpipsWeightsOpt,
    is_path,
)
from gantk.cli.texture_options import CoverOpt, DeblockOpt, GramNetOpt, GramWeightsOpt, MixOpt

if TYPE_CHECKING:  # torch stays out of `gantk --help`
    from gantk.metrics.features import FeatureNet
    from gantk.texture.classifiers import TextureClassifiers

TEXTURE_METHODS = ("ours", "alpha")
CIS_NETS = ("auto", "inception", "random-inception", "none")
DEFAULT_CLASSIFIERS = "builtin:texture-classifiers"
SAMPLE_STRIPS = 4  # pairs shown by --samples


@handle_errors
def texture_command(
    model: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="MODEL",
            help="Texture Mixer model (.safetensors of `gantk train texture`) or "
            "builtin:texture-mixer.",
            show_default=False,
        ),
    ],
    textures: Annotated[
        str,
        READS,
        typer.Argument(
            metavar="TEST_TEXTURES",
            help="Test textures: a folder, one image, builtin:textures (?sources=a,b picks "
            "some) or builtin:NAME.",
            show_default=False,
        ),
    ],
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma list: ours (the model's latent interpolation), alpha (pixel "
            "alpha-blending baseline).",
        ),
    ] = "ours,alpha",
    pairs: Annotated[
        int, typer.Option("--pairs", min=1, help="Texture pairs, i.e. strips per method.")
    ] = 50,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Rows of the test images used: auto (test for builtin: sets, whose top 75% "
            "trains the bundled model; all for files), train, test or all.",
        ),
    ] = "auto",
    gram_net: GramNetOpt = "auto",
    gram_weights: GramWeightsOpt = None,
    lpips_net: Annotated[
        str,
        typer.Option(
            "--lpips-net",
            help="LPIPS of SPD: alex, vgg, random-alex, random-vgg, or auto (alex when its "
            "weight file is found).",
        ),
    ] = "auto",
    lpips_weights: LpipsWeightsOpt = None,
    classifiers: Annotated[
        str,
        READS,
        typer.Option(
            "--classifiers",
            help="Seam and repetition classifiers of CSS and CRS (a file of `gantk train "
            "texture-classifiers`), builtin:texture-classifiers (64 px; skipped with a warning "
            "for models of another size), or none.",
        ),
    ] = DEFAULT_CLASSIFIERS,
    cis_net: Annotated[
        str,
        typer.Option(
            "--cis-net",
            help="Network of CIS: inception (the FID InceptionV3's logits, "
            "pt_inception-2015-12-05-6726825d.pth), random-inception, none, or auto "
            "(inception when its weight file is found).",
        ),
    ] = "auto",
    inception_weights: Annotated[
        Path | None,
        typer.Option("--inception-weights", help="Path of pt_inception-2015-12-05-6726825d.pth."),
    ] = None,
    samples: Annotated[
        Path | None,
        WRITES,
        typer.Option(
            "--samples",
            help=f"Write a PNG of the first {SAMPLE_STRIPS} pairs' strips, one row per pair "
            "and method.",
        ),
    ] = None,
    cover: CoverOpt = "patches",
    mix: MixOpt = "select",
    deblock: DeblockOpt = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Texture interpolation metrics (Texture Mixer, thesis Table 3.1): for --pairs pairs of
    test textures, an R x 8R strip per method (R = the model's resolution), scored by SPD
    (LPIPS of the ends vs the textures), CGD and CCD (Gram-matrix centrality and direction of
    the central crop), CSS and CRS (probability of a seam in the central R x R crop, of a
    repetition in the central R x 2R crop, by classifiers trained on real textures), CIS
    (Inception score of the central crops, named with its network), CSWD (SWD x1e3 of central
    crops vs real crops, printed beside its noise floor: real crops vs other real crops; raise
    --pairs until the floor is well below the methods' values) and seconds per strip.

    Example: gantk evaluate texture builtin:texture-mixer builtin:textures --pairs 50
    """
    import itertools

    import torch

    from gantk.cli.common import resolve_device
    from gantk.errors import GantkError
    from gantk.io.atomic import atomic_file, check_output
    from gantk.io.images import make_grid, save_image
    from gantk.io.weights import locate
    from gantk.metrics.lpips_metric import TRUNK_WEIGHTS, network_name
    from gantk.texture import metrics as tm
    from gantk.texture.data import SPLITS, load_texture_sources
    from gantk.texture.gram import load_gram_net
    from gantk.texture.mixing import Mixer, to_uint8
    from gantk.texture.train import load_texture_mixer

    chosen = list(dict.fromkeys(m.strip() for m in methods.split(",") if m.strip()))
    unknown = [m for m in chosen if m not in TEXTURE_METHODS] or ([] if chosen else [methods])
    if unknown:
        raise GantkError(
            f"--methods {unknown[0]!r} is not one of {', '.join(TEXTURE_METHODS)}; "
            "give a comma list of them"
        )
    if split not in ("auto", *SPLITS):
        raise GantkError(f"--split {split!r} is not one of auto, {', '.join(SPLITS)}")
    if split == "auto":
        split = "test" if textures.startswith("builtin:") else "all"
    if cis_net not in CIS_NETS:
        raise GantkError(f"--cis-net {cis_net!r} is not one of {', '.join(CIS_NETS)}")
    if inception_weights is not None and cis_net in ("random-inception", "none"):
        raise GantkError(f"--inception-weights is the Inception file, but --cis-net {cis_net} "
                         "uses none; drop one of them")  # fmt: skip
    if samples is not None:
        check_output(samples, force, [s for s in (model, textures) if is_path(s)])
    out = Output(quiet, as_json)
    dev = resolve_device(device)
    mixer_model = load_texture_mixer(model, dev)
    size = mixer_model.config.resolution
    sources = load_texture_sources(textures, split)
    pair_list, real = tm.sample_pairs(sources, size, pairs, seed, split)
    critics, critics_info, critics_note = _classifiers(classifiers, size, dev)  # fails early
    pair_list = [(left.to(dev), right.to(dev)) for left, right in pair_list]
    lpips_model = tm.load_texture_lpips(lpips_net, lpips_weights, dev)
    gram = load_gram_net(gram_net, gram_weights, dev)
    lpips_name = network_name(lpips_model)
    inception = _cis_network(cis_net, inception_weights, dev)
    checks = [(gram_net, gram.name, "cgd"), (lpips_net, lpips_name, "spd")]
    if inception is not None:
        checks.append((cis_net, inception.name, "cis"))
    for asked, used, what in checks:
        if asked == "auto" and used.startswith("random-"):
            out.warn(
                f"standard weights not found, so {what}{'/ccd' if what == 'cgd' else ''} use "
                f"{used} (reported as {what}[{used}]): not comparable with published numbers"
            )
    if critics_note:
        out.warn(critics_note)

    mixer = Mixer(mixer_model, shuffle=True, cover=cover, mix=mix, deblock=deblock)
    # One latent cell covers this many pixels: the period at which grid lines would show.
    cell_period = size // mixer_model.config.latent_size
    seeds = itertools.count(seed)  # every strip its own shuffle, the same on every run

    def ours(left: torch.Tensor, right: torch.Tensor, length: int) -> torch.Tensor:
        return mixer.strip([left, right], length, seed=next(seeds))

    runners = {"ours": ours, "alpha": tm.alpha_blend_strip}
    keep = min(SAMPLE_STRIPS, pairs) if samples is not None else 0
    shown: dict[str, list] = {name: [] for name in chosen}
    results: dict[str, dict] = {}
    with out.progress(pairs * len(chosen), "strips") as advance:
        for name in chosen:

            def seen(index: int, strip: torch.Tensor, name: str = name) -> None:
                if index < keep:
                    shown[name].append(to_uint8(strip))
                advance(1)

            result = tm.evaluate_interpolation(
                runners[name], pair_list, real, gram, lpips_model, on_strip=seen, swd_seed=seed,
                grid_period=cell_period, classifiers=critics, inception=inception,
            )  # fmt: skip
            results[name] = result["metrics"]
    floor = tm.cswd_floor(sources, real, seed)
    length = tm.LENGTH_FACTOR * size
    names = tm.metric_names(gram.name, lpips_name, inception.name if inception else None)
    reported = [key for key in tm.METRICS if names[key] in results[chosen[0]]]

    def cell(values: dict, key: str) -> str:
        name = names[key]
        if name + "_std" in values:
            return f"{values[name]:.4g} ± {values[name + '_std']:.2g}"
        return f"{values[name]:.4g}"

    out.table(
        f"texture interpolation: {pairs} pairs, {size}x{length} strips, {len(sources)} "
        f"textures ({split} split)",
        ["metric", *chosen],
        [[names[key], *[cell(results[m], key) for m in chosen]] for key in reported]
        + [[f"grid@{cell_period}px", *[f"{results[m]['grid']:.3g}" for m in chosen]]]
        + [["grid of real crops", *[f"{results[m]['grid_real']:.3g}" for m in chosen]]]
        + [["cswd of real vs real crops", *[f"{floor:.4g}" for _ in chosen]]],
    )
    if floor > 0.8 * min(results[m][names["cswd"]] for m in chosen):
        out.warn(
            f"cswd is within 25% of its noise floor at {pairs} crops ({floor:.4g}, real crops "
            "against other real crops): the CSWD ranking says little; raise --pairs"
        )
    if samples is not None:
        strips = [shown[name][i] for i in range(keep) for name in chosen]
        with atomic_file(samples, force) as tmp:
            save_image(make_grid(strips, cols=1), tmp, named_as=samples)
        out.say(f"samples: {samples} (rows: pair 1 {', '.join(chosen)}; pair 2 …)")
    lpips_file = None
    if not lpips_name.startswith("random-"):
        key = TRUNK_WEIGHTS[lpips_name.removeprefix("lpips-")]
        lpips_file = str(lpips_weights) if lpips_weights else str(locate(key))
    summary: dict = {
        "metric": "texture-interpolation",
        "model": model,
        "resolution": size,
        "model_gram_net": getattr(mixer_model, "gram_net", None),
        "test_textures": textures,
        "split": split,
        "textures": [s.name for s in sources],
        "pairs": pairs,
        "strip": [size, length],
        "seed": seed,
        "networks": {
            "gram": {"network": gram.name, "weights": gram.path},
            "lpips": {"network": lpips_name, "weights": lpips_file},
            "cis": {"network": inception.name, "weights": inception.weights} if inception else None,
            "classifiers": critics_info,
        },
        "metrics": [names[key] for key in reported] + ["grid", "grid_real"],
        "grid_period_px": cell_period,
        "mixing": {"cover": cover, "mix": mix, "deblock": deblock},
        "cswd_floor": floor,
        "methods": results,
    }
    if samples is not None:
        summary["samples"] = str(samples)
    out.result(summary)


def _cis_network(choice: str, weights: Path | None, device: str) -> "FeatureNet | None":
    """The Inception logits network of CIS, or None for --cis-net none; ``auto`` takes the
    standard file when it is found and never downloads it."""
    from gantk.io.weights import locate
    from gantk.metrics.features import load_inception_logits

    if choice == "none":
        return None
    if choice == "auto":
        found = weights is not None or locate("inception-fid") is not None
        choice = "inception" if found else "random-inception"
    return load_inception_logits(choice, weights, device)


def _classifiers(
    spec: str, size: int, device: str
) -> "tuple[TextureClassifiers | None, dict | None, str | None]":
    """(classifiers, what the summary says of them, a warning or None) for --classifiers; the
    bundled ones are skipped with a warning for a model of another resolution, a file given is
    an error then."""
    from gantk.errors import GantkError
    from gantk.texture.classifiers import describe, load_texture_classifiers

    if spec == "none":
        return None, None, None
    model, metadata = load_texture_classifiers(spec, device)
    trained_for = model.config.resolution
    if trained_for != size:
        advice = f"`gantk train texture-classifiers TEXTURES --resolution {size} --out FILE`"
        if spec != DEFAULT_CLASSIFIERS:
            raise GantkError(
                f"--classifiers {spec} are for {trained_for} px textures, the model makes "
                f"{size} px ones; train classifiers for it with {advice}"
            )
        note = (
            f"{spec} are for {trained_for} px textures, the model makes {size} px ones: no "
            f"CSS/CRS (train classifiers with {advice} and pass --classifiers FILE)"
        )
        return None, None, note
    return model, {"file": spec, "resolution": trained_for, **describe(metadata)}, None
