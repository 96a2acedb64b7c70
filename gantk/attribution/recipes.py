"""Named training recipes for attributors (``gantk train attributor --recipe``).

``paper`` is the authors' recipe (Yu et al., ICCV'19, built on the ProGAN discriminator): Adam
at lr 1e-3 with betas (0, 0.99), left-right mirroring, and the width rule channel_base 2048
(16 channels at 128 px, so 64 at the input of a 32 px network).

``fast`` (the default) learns pixel-level fingerprints several times faster on a CPU
(bench/attributor_learning.py; docs/performance.md has the figures). It changes two things that
each alone keep the paper's recipe at chance for minutes of CPU time, and one that helps early:

- lr 1e-2: with equalized learning rate a weight's step is lr times its layer's He gain
  (1/sqrt(fan_in): 0.19 for the first convolution, 0.011-0.022 for the linear layer), so
  lr 1e-3 moves the network far slower than the same Adam moves a plainly parametrized CNN;
- 16 channels at the input whatever its size (the paper's 16 at 128 px), doubling as the
  resolution halves: at 32 px a quarter of the paper rule's channels, 5.7-7x the steps
  per CPU second;
- betas (0.9, 0.99): momentum, which ProGAN dropped for the adversarial game, speeds a plain
  classifier's first minutes.

Mirroring stays: it was a suspect (a flip could shift the phase of up-sampling grids, the very
cue), but with even sizes a flip keeps 2x2 blocks aligned and measured it costs nothing.

visNet trains a critic against its reconstructions (a GAN-like game), for which ``paper``'s
Adam is the tested setting, so it stays its default there.
"""

from __future__ import annotations

from dataclasses import dataclass

from gantk.errors import GantkError

# The paper's 16 channels at its 128 px input.
INPUT_CHANNELS = 16


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float
    betas: tuple[float, float]
    mirror: bool
    # Width: channels at size r are channel_base / r; None: INPUT_CHANNELS at the input size.
    channel_base: int | None

    def default_channel_base(self, resolution: int) -> int:
        return self.channel_base or INPUT_CHANNELS * resolution


RECIPES = {
    "fast": Recipe("fast", lr=1e-2, betas=(0.9, 0.99), mirror=True, channel_base=None),
    "paper": Recipe("paper", lr=1e-3, betas=(0.0, 0.99), mirror=True, channel_base=2048),
}


def get_recipe(name: str | None, variant: str) -> Recipe:
    """The recipe called ``name``; None: the variant's default (``paper`` for visnet)."""
    if name is None:
        name = "paper" if variant == "visnet" else "fast"
    if name not in RECIPES:
        raise GantkError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]
