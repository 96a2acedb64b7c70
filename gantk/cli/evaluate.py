"""``gantk evaluate``: distribution and perceptual metrics for image sets and generators.

The commands live in one module per metric family (``evaluate_distribution``, ``evaluate_gan``,
``evaluate_perceptual``, ``evaluate_fingerprint``, ``evaluate_texture``; shared options in
``evaluate_common``); this module only builds the Typer app and registers them, in the order
``gantk evaluate --help`` lists them.
"""

import typer

from gantk.cli import (
    evaluate_distribution,
    evaluate_fingerprint,
    evaluate_gan,
    evaluate_perceptual,
    evaluate_texture,
)

app = typer.Typer(
    help="Metrics for generated images: FID, KID, precision/recall, LPIPS, IvOM, SWD, "
    "Stacked-MNIST mode coverage, FDDF and texture interpolation (SPD, CGD, CCD, CSWD).\n\n"
    "An image SET is a folder, an .h5 pack, builtin:NAME, or a generator checkpoint (sampled "
    "on the fly with seeds SEED…SEED+n-1); for FID also a statistics file written by "
    "--save-stats. Standard weights are never downloaded: see `gantk info` for where they are "
    "looked up.",
    no_args_is_help=True,
)

for _name, _doc in evaluate_distribution.DISTRIBUTION_HELP.items():
    app.command(_name, help=_doc)(evaluate_distribution.distribution_command(_name))
app.command("merge-stats")(evaluate_distribution.merge_stats_command)

for _name, _command in (
    ("fddf", evaluate_gan.fddf_command),
    ("modes", evaluate_gan.modes_command),
    ("lpips", evaluate_perceptual.lpips_command),
    ("ivom", evaluate_gan.ivom_command),
    ("swd", evaluate_perceptual.swd_command),
    ("robustness", evaluate_fingerprint.robustness_command),
    ("secrecy", evaluate_fingerprint.secrecy_command),
    ("scalable", evaluate_fingerprint.scalable_command),
    ("texture", evaluate_texture.texture_command),
):
    app.command(_name)(_command)
