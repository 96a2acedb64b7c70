"""Building the CUDA kernels: the real compile (wherever nvcc exists, GPU or not), the cache key,
the build lock, failure handling, GANTK_OPS and what `gantk info` / `gantk ops build` say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import error_line

from gantk import ops
from gantk.io import safefile
from gantk.ops import build


@pytest.fixture(autouse=True)
def _fresh_build_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own kernel cache and a process that has not tried to build yet."""
    monkeypatch.setenv("GANTK_OPS_CACHE", str(tmp_path / "ops-cache"))
    monkeypatch.delenv("GANTK_OPS", raising=False)
    build.reset_process_state()
    yield
    build.reset_process_state()


# ----------------------------------------------------------------------------------------------
# The real build


@pytest.mark.skipif(build.find_cuda_home() is None, reason="nvcc/CUDA toolkit not installed")
def test_sources_compile_and_import_without_a_gpu(cli, tmp_path: Path, monkeypatch) -> None:
    result = cli("ops", "build", "--arch", "9.0", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    library = Path(summary["library"])
    assert library.is_file() and library.parent == tmp_path / "ops-cache" / summary["key"]
    assert summary["was_cached"] is False and summary["arch"] == "9.0"
    module = build.build(arch="9.0")
    for name in ("scaled_conv2d", "patch_attention_forward", "patch_attention_backward"):
        assert callable(getattr(module, name))
    # A second build of the same sources is the cached one: no compiler runs. It clears the
    # build's self-check records, so the next use checks again.
    marks = [library.parent / "selfcheck-failed.json", library.parent / "selfcheck-passed-x.json"]
    for mark in marks:
        mark.write_text("{}")
    again = json.loads(cli("ops", "build", "--arch", "9.0", "--json").stdout)
    assert again["was_cached"] is True and again["library"] == summary["library"]
    assert not any(mark.exists() for mark in marks)
    # A node without the toolkit still loads the prebuild.
    monkeypatch.setattr(build, "find_cuda_home", lambda: None)
    assert callable(build.build(arch="9.0").scaled_conv2d)


# ----------------------------------------------------------------------------------------------
# Cache key and locations


def test_build_key_changes_with_arch_and_sources(tmp_path: Path, monkeypatch) -> None:
    key = build.build_key("9.0")
    assert key == build.build_key("9.0") and key.endswith("_sm90")
    assert build.build_key("8.0") != key
    assert build.build_key("9.0;8.0") == build.build_key("8.0 9.0") == build.build_key("8.0;9.0")
    copy = tmp_path / "csrc"
    copy.mkdir()
    for name in build.SOURCES + build.HEADERS:
        (copy / name).write_bytes((build.SOURCE_DIR / name).read_bytes())
    monkeypatch.setattr(build, "SOURCE_DIR", copy)
    assert build.build_key("9.0") == key
    (copy / "common.cuh").write_text((copy / "common.cuh").read_text() + "\n// edited\n")
    assert build.build_key("9.0") != key


def test_a_multi_arch_prebuild_serves_each_of_its_arches(tmp_path: Path) -> None:
    folder = build.build_dir("8.0;9.0+PTX")
    folder.mkdir(parents=True)
    assert build.cached_library("9.0") is None  # no finished build yet
    (folder / f"{build.module_name('8.0;9.0+PTX')}.so").write_bytes(b"")
    assert build.cached_library("9.0") == folder / f"{build.module_name('8.0;9.0+PTX')}.so"
    assert build.cached_library("8.0;9.0") is not None
    assert build.cached_library("8.6") is None and build.cached_library("9.0;10.0") is None


def test_cache_root_precedence(tmp_path: Path, monkeypatch) -> None:
    assert build.cache_root() == tmp_path / "ops-cache"
    monkeypatch.delenv("GANTK_OPS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_root() == tmp_path / "xdg" / "gantk" / "ops"


def test_target_arches_precedence(monkeypatch) -> None:
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;8.6")
    assert build.target_arches("9.0") == "9.0"
    assert build.target_arches() == "8.0;8.6"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    if not torch.cuda.is_available():
        with pytest.raises(build.OpsBuildError, match="--arch"):
            build.target_arches()


def test_find_cuda_home_needs_the_runtime_header(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "cuda"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "nvcc").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(fake))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(build, "Path", _PathWithoutUsrLocal)
    assert build.find_cuda_home() is None  # no include/cuda_runtime.h: not a toolkit
    (fake / "include").mkdir()
    (fake / "include" / "cuda_runtime.h").write_text("")
    assert build.find_cuda_home() == fake


class _PathWithoutUsrLocal(type(Path())):  # type: ignore[misc]
    """Path, except that /usr/local/cuda never exists (the test machine may have one)."""

    def is_file(self) -> bool:
        return not str(self).startswith("/usr/local/cuda") and super().is_file()


# ----------------------------------------------------------------------------------------------
# The build lock


def _write_lock(path: Path, pid: int, host: str, started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host, "time": started}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_taken_and_released(tmp_path: Path) -> None:
    lock = tmp_path / "a" / "gantk-build.lock"
    with build.build_lock(lock, timeout=1, stale_after=60):
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not lock.exists()


def test_lock_of_a_dead_process_is_cleared(tmp_path: Path) -> None:
    lock = tmp_path / "gantk-build.lock"
    _write_lock(lock, _dead_pid(), socket.gethostname(), time.time())
    with pytest.warns(UserWarning, match="stale"), build.build_lock(lock, 1, 60):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_old_lock_from_another_host_is_cleared(tmp_path: Path) -> None:
    lock = tmp_path / "gantk-build.lock"
    _write_lock(lock, 1, "some-other-node", time.time() - 120)
    with pytest.warns(UserWarning, match="stale"), build.build_lock(lock, 1, stale_after=60):
        pass
    assert not lock.exists()


def test_live_lock_times_out_with_advice(tmp_path: Path) -> None:
    lock = tmp_path / "gantk-build.lock"
    _write_lock(lock, os.getpid(), socket.gethostname(), time.time())
    with pytest.raises(build.OpsBuildError, match="delete that file"):  # noqa: SIM117
        with build.build_lock(lock, timeout=0.3, stale_after=60, poll=0.05):
            pass
    assert lock.exists()  # somebody else's lock is left alone


def test_unreadable_lock_is_cleared_after_a_grace_period(tmp_path: Path) -> None:
    lock = tmp_path / "gantk-build.lock"
    lock.write_text("{not json")
    assert not safefile.lock_is_stale(lock, 60)  # may be mid-write
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert safefile.lock_is_stale(lock, 60)


# ----------------------------------------------------------------------------------------------
# Failures: warn once, fall back, remember


def test_missing_toolkit_warns_once_and_falls_back(monkeypatch) -> None:
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setattr(build, "find_cuda_home", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.load_kernels() is None
        assert build.load_kernels() is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "CUDA toolkit" in messages[0]
    with pytest.raises(build.OpsBuildError, match="GANTK_OPS=cuda"):
        build.load_kernels(required=True)


def test_failed_compile_leaves_a_log_and_is_not_retried(tmp_path: Path, monkeypatch) -> None:
    from torch.utils import cpp_extension

    attempts: list[str] = []

    def failing_load(**kwargs):
        attempts.append(kwargs["name"])
        raise RuntimeError("Error building extension: nvcc fatal: Unsupported gpu architecture")

    monkeypatch.setattr(build, "find_cuda_home", lambda: tmp_path)
    monkeypatch.setattr(cpp_extension, "load", failing_load)
    with pytest.raises(build.OpsBuildError, match=r"log: .*build-failed\.log"):
        build.build(arch="9.0")
    log = build.build_dir("9.0") / build.FAILED_MARK
    assert "Unsupported gpu architecture" in log.read_text()
    assert not (build.build_dir("9.0") / build.LOCK_NAME).exists()
    # Processes that build on demand do not retry the same sources...
    with pytest.raises(build.OpsBuildError, match="gantk ops build"):
        build.build(arch="9.0", retry_failed=False)
    assert len(attempts) == 1
    # ...an explicit build does, and success clears the mark.
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: "module")
    assert build.build(arch="9.0") == "module"
    assert not log.exists()


# ----------------------------------------------------------------------------------------------
# Reporting and the CLI


def test_report_on_a_machine_without_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = ops.backend_report()
    assert report["active"] == "ref" and "no CUDA device" in report["reason"]
    assert set(report["ops"]) == {"modulated_conv2d", "patch_attention"}
    assert "second-order" in report["ops"]["modulated_conv2d"]["kernel_covers"]
    monkeypatch.setenv("GANTK_OPS", "ref")
    assert ops.backend_report()["reason"] == "forced by GANTK_OPS=ref"


def test_report_with_a_gpu_names_the_build(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setattr(build, "find_cuda_home", lambda: tmp_path)
    path, reason = ops.backend_report()["active"], ops.backend_report()["reason"]
    assert path == "cuda" and "built on first use" in reason
    folder = build.build_dir("9.0")
    folder.mkdir(parents=True)
    (folder / build.FAILED_MARK).write_text("boom")
    assert "earlier build failed" in ops.backend_report()["reason"]
    (folder / f"{build.module_name('9.0')}.so").write_bytes(b"")
    monkeypatch.setattr(build, "check_device", lambda: torch.device("cpu"))
    assert ops.backend_report()["reason"].startswith("prebuilt kernels in")
    assert "self-checked against the reference on first use" in ops.backend_report()["reason"]
    (folder / "selfcheck-passed-cpu.json").write_text("{}")
    assert "self-check passed on cpu" in ops.backend_report()["reason"]
    (folder / "selfcheck-failed.json").write_text(
        json.dumps({"device": "NVIDIA H200", "results": [{
            "op": "patch_attention", "dtype": "bfloat16", "case": "B2", "max_error": 0.5,
            "tolerance": 0.002, "passed": False}]})
    )  # fmt: skip
    report = ops.backend_report()
    assert report["active"] == "ref"
    assert "failed their self-check on NVIDIA H200 (patch_attention bfloat16" in report["reason"]
    assert "5.00e-01 > tolerance 2.00e-03" in report["reason"]
    (folder / "selfcheck-failed.json").unlink()
    monkeypatch.setattr(build, "find_cuda_home", lambda: None)
    (folder / f"{build.module_name('9.0')}.so").unlink()
    (folder / build.FAILED_MARK).unlink()
    assert "no CUDA toolkit" in ops.backend_report()["reason"]


def test_ops_build_cli_errors(cli, monkeypatch) -> None:
    assert "--arch '9.x'" in error_line(cli("ops", "build", "--arch", "9.x"))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(build, "find_cuda_home", lambda: Path("/opt/cuda"))
    assert "pass --arch" in error_line(cli("ops", "build"))
    monkeypatch.setattr(build, "find_cuda_home", lambda: None)
    assert "install the CUDA toolkit" in error_line(cli("ops", "build", "--arch", "9.0"))


def test_info_lists_each_op(cli) -> None:
    facts = json.loads(cli("info", "--json").stdout)
    assert set(facts["ops"]["ops"]) == {"modulated_conv2d", "patch_attention"}
