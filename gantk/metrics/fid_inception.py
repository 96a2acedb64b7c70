"""The FID InceptionV3 (pytorch-fid's network up to pool3), rebuilt for inference speed.

It reads the standard FID weight file and computes the same 2048-d pool3 features as
pytorch-fid's ``InceptionV3([3], resize_input=True, normalize_input=True)``, to float32
rounding, in about half the CPU time. The arithmetic is rearranged, never approximated:

- every convolution carries its batch normalisation folded into its weights and bias (the
  network only ever runs in eval mode, so BN is a fixed affine map per channel);
- the 1x1 convolutions of an Inception block that read the same input run as one convolution
  (one larger matrix product instead of three or four small ones), split afterwards;
- the average-pool branch pools *after* its 1x1 convolution instead of before: both are linear
  per pixel, and pytorch-fid's pools exclude padding from the count, so the mean of W x + b is
  W mean(x) + b exactly; the pool then runs over 32-192 channels instead of 192-1280 (in
  pytorch-fid this pool alone took 14 % of the pass on a CPU);
- activations are channels-last, the layout oneDNN's CPU convolutions are fastest in.

The layer table below is the architecture (torchvision's InceptionV3 blocks with pytorch-fid's
FID variants of Mixed_5b-5d, 6b-6e, 7b, 7c); load_state_dict checks a weight file against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantk.errors import GantkError

BN_EPS = 0.001  # torchvision's BasicConv2d

# name: (in, out, kernel, stride, padding) of each conv+BN+ReLU unit in the weight file.
_STEM = {
    "Conv2d_1a_3x3": (3, 32, (3, 3), 2, (0, 0)),
    "Conv2d_2a_3x3": (32, 32, (3, 3), 1, (0, 0)),
    "Conv2d_2b_3x3": (32, 64, (3, 3), 1, (1, 1)),
    "Conv2d_3b_1x1": (64, 80, (1, 1), 1, (0, 0)),
    "Conv2d_4a_3x3": (80, 192, (3, 3), 1, (0, 0)),
}


def _block_a(cin: int, pool: int) -> dict:
    return {
        "branch1x1": (cin, 64, (1, 1), 1, (0, 0)),
        "branch5x5_1": (cin, 48, (1, 1), 1, (0, 0)),
        "branch5x5_2": (48, 64, (5, 5), 1, (2, 2)),
        "branch3x3dbl_1": (cin, 64, (1, 1), 1, (0, 0)),
        "branch3x3dbl_2": (64, 96, (3, 3), 1, (1, 1)),
        "branch3x3dbl_3": (96, 96, (3, 3), 1, (1, 1)),
        "branch_pool": (cin, pool, (1, 1), 1, (0, 0)),
    }


def _block_b(cin: int) -> dict:
    return {
        "branch3x3": (cin, 384, (3, 3), 2, (0, 0)),
        "branch3x3dbl_1": (cin, 64, (1, 1), 1, (0, 0)),
        "branch3x3dbl_2": (64, 96, (3, 3), 1, (1, 1)),
        "branch3x3dbl_3": (96, 96, (3, 3), 2, (0, 0)),
    }


def _block_c(cin: int, c7: int) -> dict:
    return {
        "branch1x1": (cin, 192, (1, 1), 1, (0, 0)),
        "branch7x7_1": (cin, c7, (1, 1), 1, (0, 0)),
        "branch7x7_2": (c7, c7, (1, 7), 1, (0, 3)),
        "branch7x7_3": (c7, 192, (7, 1), 1, (3, 0)),
        "branch7x7dbl_1": (cin, c7, (1, 1), 1, (0, 0)),
        "branch7x7dbl_2": (c7, c7, (7, 1), 1, (3, 0)),
        "branch7x7dbl_3": (c7, c7, (1, 7), 1, (0, 3)),
        "branch7x7dbl_4": (c7, c7, (7, 1), 1, (3, 0)),
        "branch7x7dbl_5": (c7, 192, (1, 7), 1, (0, 3)),
        "branch_pool": (cin, 192, (1, 1), 1, (0, 0)),
    }


def _block_d(cin: int) -> dict:
    return {
        "branch3x3_1": (cin, 192, (1, 1), 1, (0, 0)),
        "branch3x3_2": (192, 320, (3, 3), 2, (0, 0)),
        "branch7x7x3_1": (cin, 192, (1, 1), 1, (0, 0)),
        "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
        "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
        "branch7x7x3_4": (192, 192, (3, 3), 2, (0, 0)),
    }


def _block_e(cin: int) -> dict:
    return {
        "branch1x1": (cin, 320, (1, 1), 1, (0, 0)),
        "branch3x3_1": (cin, 384, (1, 1), 1, (0, 0)),
        "branch3x3_2a": (384, 384, (1, 3), 1, (0, 1)),
        "branch3x3_2b": (384, 384, (3, 1), 1, (1, 0)),
        "branch3x3dbl_1": (cin, 448, (1, 1), 1, (0, 0)),
        "branch3x3dbl_2": (448, 384, (3, 3), 1, (1, 1)),
        "branch3x3dbl_3a": (384, 384, (1, 3), 1, (0, 1)),
        "branch3x3dbl_3b": (384, 384, (3, 1), 1, (1, 0)),
        "branch_pool": (cin, 192, (1, 1), 1, (0, 0)),
    }


# (block name, kind, layers); kinds A, C and E1 average-pool their pool branch, E2 max-pools.
BLOCKS = [
    ("Mixed_5b", "A", _block_a(192, 32)),
    ("Mixed_5c", "A", _block_a(256, 64)),
    ("Mixed_5d", "A", _block_a(288, 64)),
    ("Mixed_6a", "B", _block_b(288)),
    ("Mixed_6b", "C", _block_c(768, 128)),
    ("Mixed_6c", "C", _block_c(768, 160)),
    ("Mixed_6d", "C", _block_c(768, 160)),
    ("Mixed_6e", "C", _block_c(768, 192)),
    ("Mixed_7a", "D", _block_d(768)),
    ("Mixed_7b", "E1", _block_e(1280)),
    ("Mixed_7c", "E2", _block_e(2048)),
]

# Which 1x1 convolutions of a block read the block input and so run as one, in output order.
_SHARED_INPUT = {
    "A": ("branch1x1", "branch5x5_1", "branch3x3dbl_1", "branch_pool"),
    "B": (),
    "C": ("branch1x1", "branch7x7_1", "branch7x7dbl_1", "branch_pool"),
    "D": ("branch3x3_1", "branch7x7x3_1"),
    "E1": ("branch1x1", "branch3x3_1", "branch3x3dbl_1", "branch_pool"),
    "E2": ("branch1x1", "branch3x3_1", "branch3x3dbl_1"),  # its pool branch max-pools first
}


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor the FID weight file must hold for pool3 features, with its shape."""
    layers = dict(_STEM)
    for block, _, table in BLOCKS:
        layers.update({f"{block}.{name}": spec for name, spec in table.items()})
    shapes = {}
    for name, (cin, cout, kernel, _, _) in layers.items():
        shapes[f"{name}.conv.weight"] = (cout, cin, *kernel)
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{part}"] = (cout,)
    return shapes


def _fold(state: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with the eval-mode batch norm that follows folded in (float64
    arithmetic, so folding adds no rounding beyond the final float32 cast)."""
    w = state[f"{name}.conv.weight"].double()
    scale = state[f"{name}.bn.weight"].double() / torch.sqrt(
        state[f"{name}.bn.running_var"].double() + BN_EPS
    )
    bias = state[f"{name}.bn.bias"].double() - state[f"{name}.bn.running_mean"].double() * scale
    return (w * scale.view(-1, 1, 1, 1)).float(), bias.float()


class FusedConv(nn.Module):
    """A convolution with its batch norm folded in; ReLU is left to the caller, because a
    merged 1x1 convolution's pool slice must be pooled before it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _Block(nn.Module):
    """One Inception block; ``kind`` selects the wiring of torchvision's / pytorch-fid's class."""

    def __init__(self, kind: str, table: dict, state: dict, prefix: str) -> None:
        super().__init__()
        self.kind = kind

        def conv(name: str) -> FusedConv:
            _, _, _, stride, padding = table[name]
            return FusedConv(*_fold(state, f"{prefix}.{name}"), stride, padding)

        shared = _SHARED_INPUT[kind]
        self.widths = [table[name][1] for name in shared]
        if shared:
            folded = [_fold(state, f"{prefix}.{name}") for name in shared]
            self.entry = FusedConv(
                torch.cat([w for w, _ in folded]), torch.cat([b for _, b in folded]), 1, 0
            )
        rest = [name for name in table if name not in shared]
        self.convs = nn.ModuleDict({name: conv(name) for name in rest})

    def _relu(self, *names: str, x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = torch.relu_(self.convs[name](x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "B":
            return torch.cat([
                self._relu("branch3x3", x=x),
                self._relu("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", x=x),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ], 1)  # fmt: skip
        parts = torch.split(self.entry(x), self.widths, dim=1)
        heads = [torch.relu(p) for p in parts[:3]]  # split views: in-place would break autograd
        if k == "D":
            return torch.cat([
                self._relu("branch3x3_2", x=heads[0]),
                self._relu("branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4", x=heads[1]),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ], 1)  # fmt: skip
        if k == "E2":
            pool = self._relu("branch_pool", x=F.max_pool2d(x, 3, stride=1, padding=1))
        else:  # pool after the 1x1 conv: see the module docstring
            pool = torch.relu_(F.avg_pool2d(parts[3], 3, stride=1, padding=1,
                                           count_include_pad=False))  # fmt: skip
        if k == "A":
            return torch.cat([
                heads[0],
                self._relu("branch5x5_2", x=heads[1]),
                self._relu("branch3x3dbl_2", "branch3x3dbl_3", x=heads[2]),
                pool,
            ], 1)  # fmt: skip
        if k == "C":
            return torch.cat([
                heads[0],
                self._relu("branch7x7_2", "branch7x7_3", x=heads[1]),
                self._relu(*(f"branch7x7dbl_{i}" for i in range(2, 6)), x=heads[2]),
                pool,
            ], 1)  # fmt: skip
        dbl = self._relu("branch3x3dbl_2", x=heads[2])
        return torch.cat([
            heads[0],
            torch.relu_(self.convs["branch3x3_2a"](heads[1])),
            torch.relu_(self.convs["branch3x3_2b"](heads[1])),
            torch.relu_(self.convs["branch3x3dbl_3a"](dbl)),
            torch.relu_(self.convs["branch3x3dbl_3b"](dbl)),
            pool,
        ], 1)  # fmt: skip


def check_state(state: dict) -> None:
    """Refuse a weight file that is not the FID InceptionV3's (missing, extra or misshapen
    tensors), with the first difference named."""
    expected = expected_shapes()
    optional = {"fc.weight", "fc.bias"}  # the classifier: unused for pool3 features
    for key, shape in expected.items():
        if key not in state:
            problem = f"missing {key}"
            break
        if tuple(state[key].shape) != shape:
            problem = f"{key} has shape {tuple(state[key].shape)}, expected {shape}"
            break
    else:
        extra = [k for k in state if k not in expected and k not in optional
                 and not k.endswith(".num_batches_tracked")]  # fmt: skip
        if not extra:
            return
        problem = f"unexpected {extra[0]}"
    raise GantkError(
        f"the Inception weight file does not fit the FID InceptionV3 architecture ({problem}); "
        "use pt_inception-2015-12-05-6726825d.pth"
    )


class FIDInception(nn.Module):
    """float images in [0, 1], any size (B, 3, H, W) -> pool3 features (B, 2048)."""

    def __init__(self, state: dict) -> None:
        super().__init__()
        check_state(state)
        self.stem = nn.ModuleDict({
            name: FusedConv(*_fold(state, name), stride, padding)
            for name, (_, _, _, stride, padding) in _STEM.items()
        })  # fmt: skip
        self.blocks = nn.ModuleList(
            _Block(kind, table, state, name) for name, kind, table in BLOCKS
        )
        self.to(memory_format=torch.channels_last)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pytorch-fid's input handling: bilinear resize to 299 (no antialiasing), then [-1, 1].
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (2 * x - 1).contiguous(memory_format=torch.channels_last)
        relu = torch.relu_
        s = self.stem
        x = relu(s["Conv2d_2b_3x3"](relu(s["Conv2d_2a_3x3"](relu(s["Conv2d_1a_3x3"](x))))))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = relu(s["Conv2d_4a_3x3"](relu(s["Conv2d_3b_1x1"](x))))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))
