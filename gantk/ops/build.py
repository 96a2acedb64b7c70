"""Building gantk's CUDA kernels with :func:`torch.utils.cpp_extension.load`, safely.

The custom ops of StyleGAN2-ada/3 are notorious for failed builds, hangs on stale locks and
fallbacks that recompile on every call. Here:

- a build is cached in ``<cache>/<key>/`` where the key hashes the sources, the torch and CUDA
  versions and the target GPU architectures, so any change rebuilds and nothing else does;
- builds are serialized by our own lock file naming its owner (pid, host, time); a lock whose
  owner process is gone, or that is older than ``GANTK_OPS_STALE_LOCK_S`` (default 1 h), is
  cleared instead of waited on forever, and waiting gives up after ``GANTK_OPS_LOCK_TIMEOUT_S``;
- a failed build leaves its log in the cache folder and a mark, so later processes do not retry
  the same sources (``gantk ops build`` does); the process warns once and uses the reference;
- a loaded build is checked against the reference on the GPU before first use (once per build
  and device; a failure marks the build unusable until ``gantk ops build``:
  :mod:`gantk.ops.selfcheck`);
- the sources also compile on a machine with nvcc and no GPU (``TORCH_CUDA_ARCH_LIST`` or
  ``--arch`` names the target), which is how CI checks them and how a cluster login node
  prebuilds for its compute nodes (``gantk ops build``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from gantk.errors import GantkError
from gantk.io.safefile import exclusive

if TYPE_CHECKING:
    import torch

SOURCE_DIR = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "modulated_conv.cu", "patch_attention.cu")
HEADERS = ("common.cuh", "patch_attention_math.h")
FAILED_MARK = "build-failed.log"
LOCK_NAME = "gantk-build.lock"


class OpsBuildError(GantkError):
    """The CUDA kernels could not be built or loaded."""


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise GantkError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise GantkError(f"{name} must be positive, got {raw}")
    return value


def cache_root() -> Path:
    """``$GANTK_OPS_CACHE``, else ``$XDG_CACHE_HOME/gantk/ops``, else ``~/.cache/gantk/ops``."""
    explicit = os.environ.get("GANTK_OPS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gantk" / "ops"


def find_cuda_home() -> Path | None:
    """The CUDA toolkit folder (with ``include/cuda_runtime.h``), or None.

    torch guesses the parent of ``which nvcc``, which is wrong when nvcc is a wrapper script in
    ``/usr/local/bin``; we accept a candidate only when the runtime header is really there.
    """
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for candidate in candidates:
        if (candidate / "include" / "cuda_runtime.h").is_file() and (
            candidate / "bin" / "nvcc"
        ).exists():
            return candidate
    return None


def require_cuda_home() -> Path:
    """:func:`find_cuda_home`, or an error saying what to install."""
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise OpsBuildError(
            "nvcc and the CUDA headers were not found: install the CUDA toolkit or set CUDA_HOME"
        )
    return cuda_home


def target_arches(arch: str | None = None) -> str:
    """GPU architectures to compile for, in ``TORCH_CUDA_ARCH_LIST`` syntax (e.g. ``"9.0"``).

    ``arch`` wins, then ``$TORCH_CUDA_ARCH_LIST``, then the visible GPUs' compute capabilities.
    """
    if arch:
        return arch.strip()
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return os.environ["TORCH_CUDA_ARCH_LIST"].strip()
    import torch

    if torch.cuda.is_available():
        caps = sorted(
            {
                "{}.{}".format(*torch.cuda.get_device_capability(i))
                for i in range(torch.cuda.device_count())
            }
        )
        return ";".join(caps)
    raise OpsBuildError(
        "no GPU is visible to pick the target architecture: pass --arch (e.g. 9.0) or set "
        "TORCH_CUDA_ARCH_LIST"
    )


def normalize_arches(arches: str) -> str:
    """``"9.0 8.0;9.0"`` -> ``"8.0;9.0"``: one spelling per set, so equal sets share a build."""
    parts = {part.strip() for part in arches.replace(" ", ";").split(";") if part.strip()}
    if not parts:
        raise OpsBuildError(f"no GPU architecture in {arches!r}; give e.g. 9.0 or '8.0;9.0'")
    return ";".join(sorted(parts, key=_arch_order))


def _arch_order(arch: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", arch))


def source_key() -> str:
    """Hash of everything a build depends on except the architectures: sources, torch, CUDA,
    Python."""
    import torch

    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    for part in (torch.__version__, str(torch.version.cuda), sys.version.split()[0]):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _arch_tag(arches: str) -> str:
    # "8.0;9.0+PTX" -> "sm80_sm90ptx": readable in folder names and valid in module names.
    return "_".join("sm" + a.replace(".", "").replace("+PTX", "ptx") for a in arches.split(";"))


def build_key(arches: str) -> str:
    """The cache folder name of a build: source key plus architecture tag."""
    return f"{source_key()}_{_arch_tag(normalize_arches(arches))}"


def build_dir(arches: str) -> Path:
    return cache_root() / build_key(arches)


def module_name(arches: str) -> str:
    return f"gantk_ops_{build_key(arches)}"


def _library_in(folder: Path) -> Path | None:
    path = folder / f"gantk_ops_{folder.name}.so"
    return path if path.is_file() else None


def cached_library(arches: str) -> Path | None:
    """A finished build that runs on every architecture in ``arches``: the build for exactly
    these, else any build of the same sources whose architecture list covers them (a prebuild
    for "8.0;9.0" serves an H100, whose own list is "9.0")."""
    exact = _library_in(build_dir(arches))
    if exact is not None:
        return exact
    wanted = {a.split("+")[0] for a in normalize_arches(arches).split(";")}
    prefix = f"{source_key()}_"
    root = cache_root()
    candidates = sorted(root.glob(f"{prefix}*")) if root.is_dir() else []
    for folder in candidates:
        tags = folder.name[len(prefix) :].split("_")
        digits = [t[2:].removesuffix("ptx") for t in tags]
        built = {f"{d[:-1]}.{d[-1]}" for d in digits if d.isdigit() and len(d) >= 2}
        if wanted <= built and (library := _library_in(folder)) is not None:
            return library
    return None


def import_library(path: Path) -> ModuleType:
    """Import a built extension without a compiler: what a node without the CUDA toolkit
    needs to use a prebuild."""
    import importlib.util

    import torch  # noqa: F401  (the extension links against libtorch, which must be loaded)

    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise OpsBuildError(f"{path} is not an importable extension; run `gantk ops build`")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise OpsBuildError(
            f"the prebuilt kernels in {path} do not load ({exc}); run `gantk ops build` to rebuild"
        ) from exc
    return module


# ----------------------------------------------------------------------------------------------
# The build lock


@contextlib.contextmanager
def build_lock(path: Path, timeout: float, stale_after: float, poll: float = 0.5) -> Iterator[None]:
    """Hold ``path`` as an exclusive lock for the duration of a build (gantk's one lock,
    :func:`gantk.io.safefile.exclusive`): a lock whose owner died, or older than
    ``stale_after``, is cleared with a warning."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def busy() -> OpsBuildError:
        return OpsBuildError(
            f"another process has held the CUDA ops build lock for over {timeout:.0f} s "
            f"({path}); if no build is running, delete that file"
        )

    with exclusive(path, timeout, busy, stale_after, what="CUDA ops build lock", poll=poll):
        yield


# ----------------------------------------------------------------------------------------------
# Building


def _import_cpp_extension(cuda_home: Path) -> ModuleType:
    """torch.utils.cpp_extension, imported quietly with the CUDA home we found.

    On import it guesses CUDA_HOME and logs a warning on every machine without a GPU; with
    CUDA_HOME set it needs no guess, and the warning says nothing our own report does not.
    """
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    saved = os.environ.get("CUDA_HOME")
    os.environ.setdefault("CUDA_HOME", str(cuda_home))
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
        if saved is None:
            os.environ.pop("CUDA_HOME", None)
    return cpp_extension


@contextlib.contextmanager
def _build_environment(cuda_home: Path, arches: str) -> Iterator[ModuleType]:
    """cpp_extension, pointed at ``cuda_home`` and ``arches`` for the duration of one build."""
    cpp_extension = _import_cpp_extension(cuda_home)
    saved_env = {k: os.environ.get(k) for k in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    saved_home = cpp_extension.CUDA_HOME
    os.environ["CUDA_HOME"] = str(cuda_home)
    os.environ["TORCH_CUDA_ARCH_LIST"] = arches
    # cpp_extension resolved CUDA_HOME when it was imported; its build functions read the module
    # global, so set that too.
    cpp_extension.CUDA_HOME = str(cuda_home)
    try:
        yield cpp_extension
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build(arch: str | None = None, verbose: bool = False, retry_failed: bool = True) -> ModuleType:
    """Compile the kernels (or reuse the cached build) and import them.

    Raises:
        OpsBuildError: no nvcc, no target architecture, a lock held too long, a failed compile
            (its log is left in the build folder), or ``retry_failed=False`` and these sources
            failed before.
    """
    arches = normalize_arches(target_arches(arch))
    library = cached_library(arches)
    if library is not None:
        return import_library(library)
    cuda_home = require_cuda_home()
    folder = build_dir(arches)
    failed = folder / FAILED_MARK
    if not retry_failed and failed.is_file():
        raise OpsBuildError(
            f"an earlier build of these sources failed (log: {failed}); "
            "run `gantk ops build` to retry"
        )
    timeout = _env_seconds("GANTK_OPS_LOCK_TIMEOUT_S", 900.0)
    stale_after = _env_seconds("GANTK_OPS_STALE_LOCK_S", 3600.0)
    with build_lock(folder / LOCK_NAME, timeout, stale_after):
        # We hold the only right to build in this folder, so torch's own lock file, if any, was
        # left by a killed build: torch versions that lock by the file's mere existence would
        # wait on it forever (newer ones use an advisory lock, for which deleting is harmless).
        (folder / "lock").unlink(missing_ok=True)
        with _build_environment(cuda_home, arches) as cpp_extension:
            try:
                module = cpp_extension.load(
                    name=module_name(arches),
                    sources=[str(SOURCE_DIR / name) for name in SOURCES],
                    build_directory=str(folder),
                    extra_cflags=["-O3"],
                    extra_cuda_cflags=["-O3", "-lineinfo"],
                    verbose=verbose,
                )
            except Exception as exc:  # compile, link and import errors all end up here
                failed.write_text(f"{type(exc).__name__}: {exc}\n")
                raise OpsBuildError(
                    f"building the CUDA ops failed (log: {failed}); the reference ops still work"
                ) from exc
        failed.unlink(missing_ok=True)
    return module


# ----------------------------------------------------------------------------------------------
# Per-process state: build at most once, warn at most once.

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "module": None, "error": None, "checked_on": None}


def check_device() -> torch.device:
    """The device the self-check of a freshly loaded build runs on: the current CUDA device."""
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def verified(module: ModuleType) -> ModuleType:
    """``module`` once it has passed its self-check on this process's device (cached beside the
    build, see :mod:`gantk.ops.selfcheck`); a failed check raises :class:`OpsBuildError`."""
    from gantk.ops import selfcheck

    device = check_device()
    reason = selfcheck.verify(module, device)
    if reason is not None:
        raise OpsBuildError(reason)
    _state["checked_on"] = selfcheck.device_name(device)
    return module


def load_kernels(required: bool = False) -> ModuleType | None:
    """The kernel module, built on the first call in this process and checked against the
    reference on the device (once per build and device); None if unavailable.

    A failure (no build, or a failed self-check) warns once per process and is remembered, so
    callers fall back to the reference without another attempt. ``required``
    (``GANTK_OPS=cuda``) turns the failure into an error.
    """
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["module"] = verified(build(retry_failed=False))
            except OpsBuildError as exc:
                _state["error"] = str(exc)
                if not required:
                    warnings.warn(
                        f"CUDA ops unavailable, using the PyTorch reference: {exc}", stacklevel=3
                    )
        module = _state["module"]
        if module is None and required:
            reason = _state["error"]
            raise OpsBuildError(f"GANTK_OPS=cuda but the CUDA ops are unavailable: {reason}")
        return module  # type: ignore[return-value]


def process_state() -> dict[str, object]:
    """What this process has done so far: ``tried``, ``loaded`` and ``error``."""
    return {
        "tried": bool(_state["tried"]),
        "loaded": _state["module"] is not None,
        "error": _state["error"],
        "checked_on": _state["checked_on"],
    }


def reset_process_state() -> None:
    """Forget this process's build attempt (for tests and for ``gantk ops build``)."""
    with _lock:
        _state.update(tried=False, module=None, error=None, checked_on=None)
