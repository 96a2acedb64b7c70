"""Checking the compiled kernels against the reference before anything trains on them.

A kernel that compiles can still be wrong on a GPU it was never run on (a race, an indexing slip
that only shows with other block sizes, a miscompiled half-precision path), and a wrong kernel
trains silently wrong models. So the first load of a build in a process runs :func:`quick_cases`
(forward and every gradient of each op, each covered dtype, tiny shapes: well under a second)
against the reference, with the tolerances of tests/test_ops_gpu.py:

- float64: 1e-9 relative (the same sums in another order);
- float32: 1e-4 relative to the float64 truth, with TF32 off (the kernels accumulate in full
  float32);
- float16/bfloat16: 1.5x the reference's own error against the float64 truth, plus 1e-3 for
  the rounding order.

The outcome is cached beside the build, per device name (``selfcheck-passed-<device>.json``), so
later processes do not pay for it again. A failure writes ``selfcheck-failed.json`` there: every
later process with that build uses the reference until ``gantk ops build`` clears the mark.
``gantk ops check`` runs the larger :func:`full_cases` on demand.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from gantk.io.safefile import replace_file
from gantk.ops.modulated_conv import modulated_conv2d_kernel, modulated_conv2d_ref
from gantk.ops.patch_attention import PatchAttentionKernel, patch_attention_ref

FAILED_MARK = "selfcheck-failed.json"
PASSED_PREFIX = "selfcheck-passed-"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_HALF_TYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Case:
    """One op at one shape: ``conv`` (B, Cin, Cout, k, H) or ``attention`` (B, C, Cw, k, H)."""

    op: str  # "modulated_conv2d" or "patch_attention"
    shape: tuple[int, int, int, int, int]
    dilation: int = 1
    padding_mode: str = "zeros"

    def label(self) -> str:
        b, c, c2, k, res = self.shape
        if self.op == "modulated_conv2d":
            return f"B{b} {c}->{c2} {k}x{k} {res}px"
        extra = f" dil{self.dilation}" if self.dilation > 1 else ""
        return f"B{b} C{c}/{c2} {k}x{k}{extra} {self.padding_mode} {res}px"


@dataclass
class Result:
    op: str
    dtype: str
    case: str
    max_error: float  # worst relative error over the output and every gradient
    tolerance: float
    passed: bool
    error: str | None = None  # the exception, when the kernel raised one (e.g. a CUDA error)

    def describe(self) -> str:
        if self.error:
            return f"{self.op} {self.dtype} ({self.case}): {self.error}"
        return (
            f"{self.op} {self.dtype} ({self.case}): max relative error {self.max_error:.2e} "
            f"> tolerance {self.tolerance:.2e}"
        )


def quick_cases() -> list[Case]:
    """What the automatic check runs: every code path of each kernel at tiny sizes."""
    return [
        Case("modulated_conv2d", (2, 8, 6, 3, 9)),
        Case("modulated_conv2d", (2, 8, 3, 1, 9)),
        Case("patch_attention", (2, 8, 4, 3, 9), dilation=2, padding_mode="reflect"),
        Case("patch_attention", (2, 8, 2, 7, 9)),
    ]


def full_cases() -> list[Case]:
    """``gantk ops check``: the quick cases plus the layer shapes the models train with."""
    return [
        *quick_cases(),
        Case("modulated_conv2d", (8, 512, 512, 3, 32)),
        Case("modulated_conv2d", (4, 128, 128, 3, 128)),
        Case("modulated_conv2d", (4, 128, 3, 1, 128)),
        Case("patch_attention", (4, 256, 32, 7, 32)),
        Case("patch_attention", (2, 64, 8, 5, 33), dilation=3, padding_mode="reflect"),
    ]


def relative_error(got: Tensor, want: Tensor) -> float:
    """max |got - want| / max |want|, in float64."""
    got, want = got.double(), want.double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for the duration: the float32 reference must be as exact as the kernels."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _inputs(case: Case, device: torch.device) -> tuple[list[Tensor], Tensor]:
    """float64 inputs of ``case`` and the output gradient, seeded so every run sees the same."""
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*size: int) -> Tensor:
        return torch.randn(*size, generator=gen, device=device, dtype=torch.float64)

    b, c, c2, k, res = case.shape
    if case.op == "modulated_conv2d":
        # Styles around 1 as the affine layers' bias initialises them.
        tensors = [randn(b, c, res, res), randn(c2, c, k, k), randn(b, c) * 0.5 + 1.0]
        return tensors, randn(b, c2, res, res)
    return [randn(b, c, res, res), randn(b, c2, k * k, res, res) / k], randn(b, c, res, res)


def _evaluator(case: Case, kernels: ModuleType | None) -> Callable[..., Tensor]:
    """The op of ``case``: through ``kernels``, or the reference when ``kernels`` is None."""
    k = case.shape[3]
    if case.op == "modulated_conv2d":
        if kernels is None:
            return lambda x, w, s: modulated_conv2d_ref(x, w, s, True, k // 2, fused=False)
        return lambda x, w, s: modulated_conv2d_kernel(kernels, x, w, s, True)
    if kernels is None:
        return lambda v, w: patch_attention_ref(v, w, k, case.dilation, case.padding_mode)
    return lambda v, w: PatchAttentionKernel.apply(
        kernels, v, w, k, case.dilation, case.padding_mode
    )


def _output_and_grads(
    fn: Callable[..., Tensor], inputs: list[Tensor], grad: Tensor, dtype: torch.dtype
) -> list[Tensor]:
    tensors = [t.to(dtype).requires_grad_(True) for t in inputs]
    out = fn(*tensors)
    return [out.detach(), *torch.autograd.grad(out, tensors, grad.to(dtype))]


def check_case(case: Case, dtype: torch.dtype, kernels: ModuleType, device: torch.device) -> Result:
    """The kernel path of ``case`` in ``dtype`` against the float64 reference."""
    inputs, grad = _inputs(case, device)
    reference = _evaluator(case, None)
    truth = _output_and_grads(reference, inputs, grad, torch.float64)
    name = str(dtype).removeprefix("torch.")
    try:
        mine = _output_and_grads(_evaluator(case, kernels), inputs, grad, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # asynchronous CUDA errors surface here
    except Exception as exc:  # a CUDA error, a missing binding: the kernel cannot be used
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Result(case.op, name, case.label(), float("inf"), 0.0, False, message.strip())
    if dtype == torch.float64:
        tolerance = 1e-9
    elif dtype == torch.float32:
        tolerance = 1e-4
    else:
        base = _output_and_grads(reference, inputs, grad, dtype)
        tolerance = 1.5 * max(map(relative_error, base, truth)) + 1e-3
    error = max(map(relative_error, mine, truth))
    # NaN compares false: a kernel writing NaNs fails here too.
    return Result(case.op, name, case.label(), error, tolerance, bool(error <= tolerance))


def run_checks(
    kernels: ModuleType,
    device: torch.device | str,
    cases: list[Case] | None = None,
    dtypes: tuple[torch.dtype, ...] = DTYPES,
) -> list[Result]:
    """Every case in every dtype: the kernels against the reference on ``device``."""
    device = torch.device(device)
    with exact_float32():
        return [
            check_case(case, dtype, kernels, device)
            for case in (cases if cases is not None else quick_cases())
            for dtype in dtypes
        ]


# ----------------------------------------------------------------------------------------------
# Marks beside the build


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def passed_mark(folder: Path, name: str) -> Path:
    return folder / f"{PASSED_PREFIX}{_slug(name)}.json"


def clear_marks(folder: Path) -> list[Path]:
    """Remove every self-check outcome of the build in ``folder`` (``gantk ops build`` does)."""
    removed = []
    for path in [folder / FAILED_MARK, *folder.glob(f"{PASSED_PREFIX}*.json")]:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def _write(path: Path, name: str, results: list[Result]) -> None:
    record = {"device": name, "time": time.time(), "results": [asdict(r) for r in results]}
    with replace_file(path) as tmp:  # readers never see half a mark; racing processes each
        tmp.write_text(json.dumps(record, indent=1))  # write their own temporary


def record(folder: Path, device: torch.device, results: list[Result]) -> Path | None:
    """Store the outcome beside the build: the failure mark (returned), or the device's pass."""
    name = device_name(device)
    if all(r.passed for r in results):
        with contextlib.suppress(OSError):  # a read-only shared cache: just check again next time
            _write(passed_mark(folder, name), name, results)
        return None
    mark = folder / FAILED_MARK
    with contextlib.suppress(OSError):
        _write(mark, name, [r for r in results if not r.passed])
    return mark


def failure_message(mark: Path) -> str:
    """One sentence from a failure mark: the device, the first failing op, dtype and error."""
    try:
        data = json.loads(mark.read_text())
        first = Result(**data["results"][0])
        count = len(data["results"])
        what = f"{first.describe()}" + (f" and {count - 1} more" if count > 1 else "")
        where = data.get("device", "?")
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        what, where = "details unreadable", "?"
    return (
        f"the compiled CUDA kernels failed their self-check on {where} ({what}); mark: {mark}; "
        "`gantk ops build` clears it after a fix"
    )


def verify(kernels: ModuleType, device: torch.device) -> str | None:
    """Check a freshly loaded build on ``device`` once (cached beside it).

    Returns None when the kernels may be used, else the reason (the failure mark's message).
    """
    folder = Path(kernels.__file__).parent
    mark = folder / FAILED_MARK
    if mark.is_file():
        return failure_message(mark)
    if passed_mark(folder, device_name(device)).is_file():
        return None
    results = run_checks(kernels, device)
    failed_mark = record(folder, device, results)
    if failed_mark is None:
        return None
    if failed_mark.is_file():
        return failure_message(failed_mark)
    failing = next(r for r in results if not r.passed)
    return f"the compiled CUDA kernels failed their self-check ({failing.describe()})"
