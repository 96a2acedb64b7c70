"""Attention blocks for the StyleGAN2 generator and discriminator (thesis ch.2, §2.3.2-2.3.3).

Both blocks share one calling convention, ``block(kq_source, v_source)``: keys and queries are
computed from ``kq_source``, values and the residual shortcut from ``v_source``. So

* self-attention is ``block(x, x)`` (Eq. 2.7), and
* reference attention in the discriminator is ``block(t_ref, t_pri)``: keys/queries from the
  features of a real reference image, values and residual from the primary (real or generated)
  image's features (Eq. 2.8).

:class:`SANAttention` is the patch-wise self-attention of SAN (Zhao et al. 2020), the variant the
thesis found best; :class:`SAGANAttention` is the global softmax attention of SAGAN (Zhang et al.
2019), the comparison point. Both start out as the identity map (``block(kq, v) == v``), so adding
one to a network, or to a pretrained one, does not disturb it at the start of training.

Layers are plain :class:`torch.nn.Conv2d` with PyTorch's default initialization rather than
StyleGAN2's equalized-learning-rate layers: every layer here is a 1x1 convolution inside a block
that starts as the identity, and the thesis does not say the attention blocks used equalized
learning rates.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gantk.errors import GantkError
from gantk.ops.patch_attention import key_patch_linear, patch_attention

ATTENTION_KINDS: tuple[str, ...] = ("san", "sagan")

# StyleGAN2 uses leaky ReLU with slope 0.2 throughout; the thesis keeps it for K, Q, V (Eq. 2.4
# text) and the weight MLP (Eq. 2.5).
_LEAKY_SLOPE = 0.2

_DIGITS = re.compile(r"[0-9]+")


def _check_pair(block: nn.Module, channels: int, kq_source: Tensor, v_source: Tensor) -> None:
    """Both sources must be (B, channels, H, W) of one shape: K/Q and V are matched per pixel."""
    name = type(block).__name__
    if kq_source.dim() != 4 or kq_source.shape[1] != channels:
        raise ValueError(
            f"{name}: kq_source must be (B, {channels}, H, W), got {tuple(kq_source.shape)}"
        )
    if kq_source.shape != v_source.shape:
        raise ValueError(
            f"{name}: kq_source {tuple(kq_source.shape)} and v_source {tuple(v_source.shape)} "
            f"must have the same shape"
        )


class SANAttention(nn.Module):
    """SAN patch-wise attention with a residual shortcut from the value source.

    For every pixel, the ``k x k`` patch of keys around it and its query are fed through a
    two-layer per-pixel MLP that outputs one weight per patch offset and weight channel; the
    ``k x k`` patch of values is then summed with those weights (:func:`patch_attention`), and the
    result is projected and added to ``v_source``.

    Channel counts follow the SAN reference design: keys/queries ``rel = C // rel_reduction``
    channels, MLP hidden layer ``mid = C // mid_reduction``, and ``Cw = C // share_planes`` weight
    channels shared by groups of ``C / Cw`` value channels (each at least 1).

    Patches reach past the border by reflection, as in the SAN reference (``nn.ReflectionPad2d``
    before unfolding); maps too small to reflect ``kernel_size // 2`` pixels (below 4x4 for k=7)
    are zero-padded instead.

    The output projection is initialized to zero weights and bias, so a fresh block returns
    ``v_source`` exactly. Consequence for callers: at the first step only the projection gets a
    non-zero gradient; the K/Q/V/MLP layers start learning once it has moved away from zero.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        rel_reduction: int = 16,
        mid_reduction: int = 4,
        share_planes: int = 8,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd number so the patch has a centre, "
                f"got {kernel_size}"
            )
        for name, value in (
            ("rel_reduction", rel_reduction),
            ("mid_reduction", mid_reduction),
            ("share_planes", share_planes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        rel = max(1, channels // rel_reduction)
        mid = max(1, channels // mid_reduction)
        w_channels = max(1, channels // share_planes)
        if channels % w_channels != 0:
            raise ValueError(
                f"channels ({channels}) must be a multiple of the weight channels "
                f"channels // share_planes = {w_channels}"
            )
        taps = kernel_size * kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.rel_channels = rel
        self.mid_channels = mid
        self.weight_channels = w_channels

        self.query = nn.Conv2d(channels, rel, 1)
        self.key = nn.Conv2d(channels, rel, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        # Per-pixel MLP on concat(query, flattened key patch); 1x1 convs apply it at every pixel.
        self.weight_mlp = nn.Sequential(
            nn.Conv2d(rel * (taps + 1), mid, 1),
            nn.LeakyReLU(_LEAKY_SLOPE),
            nn.Conv2d(mid, w_channels * taps, 1),
        )
        self.proj = nn.Conv2d(channels, channels, 1)
        # Zero projection: the block is the identity (just the residual) when first added, so it
        # cannot disrupt a network that already trains, and it learns how much attention to add.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, kq_source: Tensor, v_source: Tensor) -> Tensor:
        """``attn(K(kq_source), Q(kq_source), V(v_source)) + v_source``, both (B, C, H, W)."""
        _check_pair(self, self.channels, kq_source, v_source)
        batch, _, height, width = v_source.shape
        k = self.kernel_size
        query = F.leaky_relu(self.query(kq_source), _LEAKY_SLOPE)
        key = F.leaky_relu(self.key(kq_source), _LEAKY_SLOPE)
        value = F.leaky_relu(self.value(v_source), _LEAKY_SLOPE)
        # First MLP layer on concat(query, flattened key patch), split in its two parts so the
        # key patch is a k x k convolution rather than a k*k-times larger unfolded tensor.
        first = self.weight_mlp[0]
        rel = self.rel_channels
        padding = "reflect" if min(height, width) > k // 2 else "zeros"
        hidden = F.conv2d(query, first.weight[:, :rel], first.bias) + key_patch_linear(
            key, first.weight[:, rel:], k, padding_mode=padding
        )
        weights = self.weight_mlp[2](self.weight_mlp[1](hidden))
        weights = weights.view(batch, self.weight_channels, k * k, height, width)
        attended = patch_attention(value, weights, k, padding_mode=padding)
        return v_source + self.proj(attended)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, "
            f"rel={self.rel_channels}, mid={self.mid_channels}, "
            f"weight_channels={self.weight_channels}"
        )


class SAGANAttention(nn.Module):
    """SAGAN self-attention: softmax over all ``H*W`` key positions, scaled residual.

    Queries (SAGAN's f) and keys (g) are ``C // 8`` channels from ``kq_source``; values (h) are
    ``C // 2`` channels from ``v_source`` (each at least 1); an output 1x1 conv maps the attended
    values back to ``C``. The result is ``v_source + gamma * o`` with the scalar ``gamma``
    initialized to 0, so a fresh block returns ``v_source`` exactly.

    The ``(H*W) x (H*W)`` attention matrix is built explicitly rather than with
    :func:`torch.nn.functional.scaled_dot_product_attention`: the fused GPU kernels behind the
    latter have no double backward, which the discriminator's R1 penalty needs.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        qk = max(1, channels // 8)
        v = max(1, channels // 2)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, v, 1)
        self.out = nn.Conv2d(v, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, kq_source: Tensor, v_source: Tensor) -> Tensor:
        """``v_source + gamma * o``, with ``o`` the attended values; both (B, C, H, W)."""
        _check_pair(self, self.channels, kq_source, v_source)
        batch, _, height, width = v_source.shape
        query = self.query(kq_source).flatten(2)  # (B, qk, N)
        key = self.key(kq_source).flatten(2)  # (B, qk, N)
        value = self.value(v_source).flatten(2)  # (B, v, N)
        # SAGAN uses unscaled dot products (no 1/sqrt(d)); row q of attn sums to 1 over keys.
        attn = torch.bmm(query.transpose(1, 2), key).softmax(dim=-1)  # (B, N_query, N_key)
        attended = torch.bmm(value, attn.transpose(1, 2))  # (B, v, N_query)
        out = self.out(attended.view(batch, -1, height, width))
        return v_source + self.gamma * out

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def make_attention(kind: str, channels: int, kernel_size: int = 7) -> nn.Module:
    """Build an attention block by name: ``"san"`` or ``"sagan"``.

    ``kernel_size`` is SAN's patch size; SAGAN attends globally and ignores it.
    """
    if kind == "san":
        return SANAttention(channels, kernel_size=kernel_size)
    if kind == "sagan":
        return SAGANAttention(channels)
    raise ValueError(
        f"unknown attention kind {kind!r}: expected one of {', '.join(ATTENTION_KINDS)}"
    )


def parse_attention_spec(
    spec: str | None, allowed_kinds: tuple[str, ...], *, option: str = "attention spec"
) -> tuple[str, int] | None:
    """Parse ``"KIND@RES"`` (e.g. ``"san@32"``) into ``(kind, resolution)``.

    ``None``, ``""`` and ``"none"`` mean no attention and return ``None``. The kind is matched
    case-insensitively and returned in lower case. ``option`` names the setting in error messages
    (e.g. ``"--g-attn"``). The resolution is only checked to be a power of two; whether the
    network has a layer at that resolution is for the caller to check.

    Raises:
        GantkError: unknown kind, or a missing, non-integer or non-power-of-two resolution.
        ValueError: ``allowed_kinds`` is empty (a programming error, not a user's).
    """
    if not allowed_kinds:
        raise ValueError("allowed_kinds must name at least one attention kind")
    if spec is None:
        return None
    text = spec.strip()
    if text == "" or text.lower() == "none":
        return None

    def fail(reason: str) -> GantkError:
        return GantkError(
            f"{option} {spec!r}: {reason}; expected KIND@RES with KIND one of "
            f"{', '.join(allowed_kinds)} and RES a power of two (or 'none')"
        )

    if text.count("@") != 1:
        raise fail("missing @RES" if "@" not in text else "more than one '@'")
    kind, res = (part.strip() for part in text.split("@"))
    kind = kind.lower()
    if not kind:
        raise fail("missing KIND")
    if kind not in allowed_kinds:
        raise fail(f"unknown kind {kind!r}")
    if not res:
        raise fail("missing resolution")
    # A plain digit run only: int() would also take '+32', '3_2' and non-ASCII digits.
    if not _DIGITS.fullmatch(res):
        raise fail(f"resolution {res!r} is not an integer")
    resolution = int(res)
    if resolution < 1 or resolution & (resolution - 1):
        raise fail(f"resolution {resolution} is not a power of two")
    return kind, resolution
