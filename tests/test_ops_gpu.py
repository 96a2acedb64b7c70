"""The real CUDA kernels against the reference, on a GPU (skipped elsewhere).

Tolerances: float64 to gradcheck precision; float32 within 1e-4 relative (TF32 off for the
reference, since the kernels accumulate in full float32); bfloat16 within 1.5x the reference's own
bfloat16 error against float64, plus 1e-3 for rounding order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gantk.ops.modulated_conv import (
    ScaledConvKernel,
    modulated_conv2d_kernel,
    modulated_conv2d_ref,
)
from gantk.ops.patch_attention import PatchAttentionKernel, patch_attention_ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def kernels():
    from gantk.ops import build

    return build.build()


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_patch_attention_gradcheck_float64(kernels, padding_mode: str) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    values = torch.randn(2, 4, 5, 6, device="cuda", dtype=torch.float64, generator=gen)
    weights = torch.randn(2, 2, 9, 5, 6, device="cuda", dtype=torch.float64, generator=gen)
    values.requires_grad_(True)
    weights.requires_grad_(True)

    def op(v, w):
        return PatchAttentionKernel.apply(kernels, v, w, 3, 2, padding_mode)

    assert torch.autograd.gradcheck(op, (values, weights))
    assert torch.autograd.gradgradcheck(op, (values, weights))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_scaled_conv_gradcheck_float64(kernels, kernel_size: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    args = dict(device="cuda", dtype=torch.float64, generator=gen)
    inputs = (
        torch.randn(2, 5, 7, 9, **args),
        torch.randn(6, 5, kernel_size, kernel_size, **args),
        torch.randn(2, 5, **args) + 1.5,
        torch.rand(2, 6, **args) + 0.5,
    )
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(lambda *a: ScaledConvKernel.apply(kernels, *a), inputs)
    assert torch.autograd.gradgradcheck(lambda *a: ScaledConvKernel.apply(kernels, *a), inputs)


def _grads(out: torch.Tensor, grad: torch.Tensor, tensors) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, tensors, grad))


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (torch.float32, (8, 512, 32, 32)),  # 3x3 at StyleGAN2's 32x32 blocks
        (torch.float32, (4, 128, 128, 128)),
        (torch.bfloat16, (8, 512, 32, 32)),
    ],
)
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_modulated_conv_matches_reference(kernels, dtype, shape, kernel_size: int) -> None:
    torch.manual_seed(0)
    batch, channels, height, width = shape
    x64 = torch.randn(shape, device="cuda", dtype=torch.float64)
    w64 = torch.randn(channels, channels, kernel_size, kernel_size, device="cuda").double()
    s64 = torch.randn(batch, channels, device="cuda").double() + 1
    grad64 = torch.randn(batch, channels, height, width, device="cuda").double()
    truth = [t.clone().requires_grad_(True) for t in (x64, w64, s64)]
    out64 = modulated_conv2d_ref(*truth, True, kernel_size // 2, fused=False)
    truth_grads = [out64, *_grads(out64, grad64, truth)]

    def run(fn):
        tensors = [t.to(dtype).requires_grad_(True) for t in (x64, w64, s64)]
        out = fn(*tensors)
        return [out, *_grads(out, grad64.to(dtype), tensors)]

    mine = run(lambda x, w, s: modulated_conv2d_kernel(kernels, x, w, s, True))
    ref = run(lambda x, w, s: modulated_conv2d_ref(x, w, s, True, kernel_size // 2, fused=False))
    for name, got, base, want in zip(["out", "x", "w", "s"], mine, ref, truth_grads, strict=True):
        if dtype == torch.float32:
            assert _rel_err(got, want) < 1e-4, name
        else:
            assert _rel_err(got, want) <= 1.5 * _rel_err(base, want) + 1e-3, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_attention_matches_reference_at_san_size(kernels, dtype) -> None:
    torch.manual_seed(0)
    values = torch.randn(4, 256, 32, 32, device="cuda", dtype=torch.float64)
    weights = torch.randn(4, 32, 49, 32, 32, device="cuda", dtype=torch.float64) / 7
    grad = torch.randn_like(values)
    truth_in = [values.clone().requires_grad_(True), weights.clone().requires_grad_(True)]
    truth_out = patch_attention_ref(*truth_in, 7)
    truth = [truth_out, *_grads(truth_out, grad, truth_in)]

    def run(fn):
        tensors = [values.to(dtype).requires_grad_(True), weights.to(dtype).requires_grad_(True)]
        out = fn(*tensors)
        return [out, *_grads(out, grad.to(dtype), tensors)]

    mine = run(lambda v, w: PatchAttentionKernel.apply(kernels, v, w, 7, 1, "zeros"))
    ref = run(lambda v, w: patch_attention_ref(v, w, 7))
    for name, got, base, want in zip(["out", "values", "weights"], mine, ref, truth, strict=True):
        if dtype == torch.float32:
            assert _rel_err(got, want) < 1e-5, name
        else:
            assert _rel_err(got, want) <= 1.5 * _rel_err(base, want) + 1e-3, name


def test_short_training_matches_between_paths(tmp_path: Path, kernels) -> None:
    args = [
        "builtin:shapes?n=256", "--resolution", "32", "--kimg", "0.256", "--batch-size", "16",
        "--g-attn", "san@16", "--tick-kimg", "0.064", "--snapshot-kimg", "1",
        "--sample-kimg", "1", "--device", "cuda", "--seed", "3", "--quiet",
    ]  # fmt: skip
    losses = {}
    for path in ("ref", "cuda"):
        out = tmp_path / path
        env = {**os.environ, "GANTK_OPS": path, "NVIDIA_TF32_OVERRIDE": "0"}
        subprocess.run(
            [sys.executable, "-m", "gantk", "train", "gan", *args, "--out", str(out)],
            check=True, env=env, capture_output=True, timeout=600,
        )  # fmt: skip
        entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        losses[path] = [(e["loss_d"], e["loss_g"]) for e in entries]
    assert len(losses["ref"]) == len(losses["cuda"]) >= 3
    for (d_ref, g_ref), (d_cuda, g_cuda) in zip(losses["ref"], losses["cuda"], strict=True):
        assert abs(d_ref - d_cuda) < 0.05 * max(1.0, abs(d_ref))
        assert abs(g_ref - g_cuda) < 0.05 * max(1.0, abs(g_ref))


def test_ops_check_passes_and_records_the_device(cli, kernels) -> None:
    from gantk.ops import selfcheck

    result = cli("ops", "check", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and len(report["checks"]) == 4 * len(selfcheck.full_cases())
    folder = Path(report["build_dir"])
    assert selfcheck.passed_mark(folder, torch.cuda.get_device_name()).is_file()
