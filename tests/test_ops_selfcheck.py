"""The kernels' self-check, on the CPU: its verdicts on right and deliberately wrong kernels, the
marks it leaves beside a build, and what a process does with them (fall back to the reference
with one warning, or fail under GANTK_OPS=cuda). GPU runs of the real kernels: test_ops_gpu.py.

The right kernels here are the kernels' own per-element patch-attention math compiled for the
CPU (tests/csrc, as in test_ops_kernels.py) and, for the convolution, a stand-in computing the
kernel's contract with torch's convolution; the wrong ones perturb one output or gradient.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from helpers import error_line
from torch import Tensor

from gantk.ops import build, selfcheck
from gantk.ops.modulated_conv import scaled_conv2d_ref
from gantk.ops.patch_attention import patch_attention_ref

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
FLOAT_TYPES = (torch.float32, torch.float64)  # what the CPU copy of the kernel math covers


def _reference_patch_backward(grad, values, weights, k, dilation, reflect, need_v, need_w):
    mode = "reflect" if reflect else "zeros"
    v, w = values.detach().requires_grad_(True), weights.detach().requires_grad_(True)
    with torch.enable_grad():  # autograd runs backward functions with grad mode off
        out = patch_attention_ref(v, w, k, dilation, mode)
        gv, gw = torch.autograd.grad(out, (v, w), grad)
    return (gv if need_v else None), (gw if need_w else None)


class Kernels(SimpleNamespace):
    """A kernel module as gantk.ops.build loads one: the three bindings and a ``__file__`` in its
    build folder. ``calls`` counts forward calls, to see whether a check ran."""

    def __init__(self, folder: Path, patch_math: ModuleType | None = None, **overrides) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(__file__=str(folder / "gantk_ops_test.so"), calls=0)
        self.scaled_conv2d = overrides.get("scaled_conv2d", scaled_conv2d_ref)
        if patch_math is not None:
            self.patch_attention_forward = patch_math.patch_attention_forward
            self.patch_attention_backward = patch_math.patch_attention_backward
        else:
            self.patch_attention_forward = lambda v, w, k, d, r: patch_attention_ref(
                v, w, k, d, "reflect" if r else "zeros"
            )
            self.patch_attention_backward = _reference_patch_backward
        for name, fn in overrides.items():
            setattr(self, name, fn)
        forward = self.patch_attention_forward

        def counted(*args):
            self.calls += 1
            return forward(*args)

        self.patch_attention_forward = counted


def _scaled_by(factor: float):
    def conv(x: Tensor, weight: Tensor, in_scale: Tensor, out_scale: Tensor | None = None):
        return scaled_conv2d_ref(x, weight, in_scale, out_scale) * factor

    return conv


def _by_op(results: list[selfcheck.Result]) -> dict[tuple[str, str], selfcheck.Result]:
    return {(r.op, r.dtype): r for r in results}


# ----------------------------------------------------------------------------------------------
# Verdicts


def test_right_kernels_pass_in_every_dtype(tmp_path: Path, cpu_patch_kernels) -> None:
    kernels = Kernels(tmp_path, cpu_patch_kernels)
    results = selfcheck.run_checks(kernels, CPU, dtypes=FLOAT_TYPES)
    assert len(results) == 2 * len(selfcheck.quick_cases()) and all(r.passed for r in results)
    # The compiled math is a different program from the reference: tiny but nonzero errors.
    patch64 = [r for r in results if r.op == "patch_attention" and r.dtype == "float64"]
    assert all(0 <= r.max_error < 1e-12 for r in patch64)
    # Half types: the contract stand-in runs torch's own half convolution, as the reference does.
    halves = selfcheck.run_checks(
        Kernels(tmp_path), CPU, [selfcheck.quick_cases()[0]], (torch.bfloat16, torch.float16)
    )
    assert all(r.passed for r in halves)


def test_float32_tolerance_is_1e4_relative(tmp_path: Path) -> None:
    case = [selfcheck.quick_cases()[0]]
    slightly_off = Kernels(tmp_path, scaled_conv2d=_scaled_by(1 + 5e-5))
    result = selfcheck.run_checks(slightly_off, CPU, case, (torch.float32,))[0]
    assert result.passed and result.tolerance == 1e-4
    assert result.max_error == pytest.approx(5e-5, rel=0.05)
    too_far = Kernels(tmp_path, scaled_conv2d=_scaled_by(1 + 3e-4))
    result = selfcheck.run_checks(too_far, CPU, case, (torch.float32,))[0]
    assert not result.passed and result.max_error == pytest.approx(3e-4, rel=0.05)


def test_half_tolerance_follows_the_references_own_error(tmp_path: Path) -> None:
    case = selfcheck.quick_cases()[0]
    inputs, grad = selfcheck._inputs(case, CPU)
    reference = selfcheck._evaluator(case, None)
    truth = selfcheck._output_and_grads(reference, inputs, grad, torch.float64)
    base = selfcheck._output_and_grads(reference, inputs, grad, torch.bfloat16)
    expected = (
        1.5 * max(selfcheck.relative_error(b, t) for b, t in zip(base, truth, strict=True)) + 1e-3
    )
    result = selfcheck.run_checks(Kernels(tmp_path), CPU, [case], (torch.bfloat16,))[0]
    assert result.tolerance == pytest.approx(expected)
    wrong = Kernels(tmp_path, scaled_conv2d=_scaled_by(1.05))
    assert not selfcheck.run_checks(wrong, CPU, [case], (torch.bfloat16,))[0].passed


def test_a_wrong_gradient_alone_is_caught(tmp_path: Path, cpu_patch_kernels) -> None:
    def backward_off(grad, values, weights, k, dilation, reflect, need_v, need_w):
        gv, gw = cpu_patch_kernels.patch_attention_backward(
            grad, values, weights, k, dilation, reflect, need_v, need_w
        )
        return gv, gw * 1.01  # weight gradient 1 % off, output right

    kernels = Kernels(tmp_path, cpu_patch_kernels, patch_attention_backward=backward_off)
    results = _by_op(selfcheck.run_checks(kernels, CPU, dtypes=FLOAT_TYPES))
    assert not results[("patch_attention", "float32")].passed
    assert results[("patch_attention", "float64")].max_error == pytest.approx(0.01, rel=0.05)
    assert results[("modulated_conv2d", "float32")].passed


def test_errors_and_nans_fail(tmp_path: Path) -> None:
    def crashing(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore text")

    def nans(x, weight, in_scale, out_scale=None):
        return torch.full_like(scaled_conv2d_ref(x, weight, in_scale, out_scale), float("nan"))

    case = [selfcheck.quick_cases()[0]]
    result = selfcheck.run_checks(Kernels(tmp_path, scaled_conv2d=crashing), CPU, case)[0]
    assert not result.passed
    assert result.error == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert "illegal memory access" in result.describe()
    assert not selfcheck.run_checks(Kernels(tmp_path, scaled_conv2d=nans), CPU, case)[0].passed


# ----------------------------------------------------------------------------------------------
# Marks and what a process does with them


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch):
    """A process that has not loaded kernels yet, whose check runs on the CPU."""
    monkeypatch.setattr(build, "check_device", lambda: CPU)
    build.reset_process_state()
    yield
    build.reset_process_state()


def _load_with(monkeypatch: pytest.MonkeyPatch, kernels: Kernels, required: bool = False):
    monkeypatch.setattr(build, "build", lambda retry_failed=True: kernels)
    build.reset_process_state()
    return build.load_kernels(required=required)


def test_a_failed_check_falls_back_marks_the_build_and_warns_once(
    tmp_path: Path, monkeypatch, fresh_process
) -> None:
    wrong = Kernels(tmp_path / "build", scaled_conv2d=_scaled_by(1.01))
    with pytest.warns(UserWarning) as caught:
        assert _load_with(monkeypatch, wrong) is None
        assert build.load_kernels() is None  # the same process: no second warning
    assert len(caught) == 1
    message = str(caught[0].message)
    mark = tmp_path / "build" / selfcheck.FAILED_MARK
    assert "using the PyTorch reference" in message and "failed their self-check on cpu" in message
    assert "modulated_conv2d float32" in message and "max relative error 1.00e-02" in message
    assert str(mark) in message and "gantk ops build" in message
    recorded = json.loads(mark.read_text())
    assert recorded["device"] == "cpu" and all(not r["passed"] for r in recorded["results"])
    assert {r["op"] for r in recorded["results"]} == {"modulated_conv2d"}

    # A later process with that build: the reference again, without running the kernels.
    right_now = Kernels(tmp_path / "build")
    with pytest.warns(UserWarning, match="failed their self-check"):
        assert _load_with(monkeypatch, right_now) is None
    assert right_now.calls == 0
    # GANTK_OPS=cuda: an error instead.
    with pytest.raises(build.OpsBuildError, match=r"GANTK_OPS=cuda .*failed their self-check"):
        _load_with(monkeypatch, right_now, required=True)
    # `gantk ops build` clears the mark; the next process checks again and uses the kernels.
    assert selfcheck.clear_marks(tmp_path / "build") == [mark]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load_with(monkeypatch, right_now) is right_now


def test_a_passed_check_is_cached_per_device(tmp_path: Path, monkeypatch, fresh_process) -> None:
    kernels = Kernels(tmp_path / "build")
    assert _load_with(monkeypatch, kernels) is kernels
    checked = kernels.calls
    assert checked > 0 and build.process_state()["checked_on"] == "cpu"
    passed = json.loads((tmp_path / "build" / "selfcheck-passed-cpu.json").read_text())
    assert passed["device"] == "cpu" and len(passed["results"]) == 4 * 4
    assert _load_with(monkeypatch, kernels) is kernels
    assert kernels.calls == checked  # the next process trusted the record
    # Another GPU model is checked for itself.
    assert selfcheck.passed_mark(tmp_path, "NVIDIA H100 80GB HBM3").name == (
        "selfcheck-passed-nvidia-h100-80gb-hbm3.json"
    )


def test_the_automatic_checks_shapes_stay_tiny() -> None:
    # The automatic check runs on every first use of a build on a GPU model: its shapes must
    # stay this small (0.07 s for all 16 on this CPU; docs/performance.md).
    for case in selfcheck.quick_cases():
        b, c, c2, k, res = case.shape
        assert b * max(c, c2) * k * k * res * res <= 2 * 8 * 49 * 81


def test_ops_check_without_a_gpu(cli) -> None:
    result = cli("ops", "check")
    assert result.exit_code == 2
    assert "no CUDA device is usable here" in error_line(result)
    cpu = cli("ops", "check", "--device", "cpu")
    assert cpu.exit_code == 2 and "the kernels run on NVIDIA GPUs only" in error_line(cpu)
