"""Shared fixtures: run the CLI in-process, and make small image folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gantk.cli.app import app


@pytest.fixture(autouse=True)
def _isolated_weights(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never look at (or depend on) weight files or keys of the machine running the tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("GANTK_WEIGHTS_DIR", raising=False)
    # Nor reach the network for them: download tests serve files from 127.0.0.1 themselves.
    monkeypatch.setenv("GANTK_OFFLINE", "1")
    monkeypatch.delenv("GANTK_WEIGHTS_URL", raising=False)
    # Nor at the user's registry key: each test seals registries with a key of its own.
    monkeypatch.setenv("GANTK_REGISTRY_KEY_FILE", str(tmp_path_factory.mktemp("key") / "k"))
    monkeypatch.delenv("GANTK_REGISTRY_KEY", raising=False)


@pytest.fixture
def torch_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub checkpoint folder in a temporary TORCH_HOME, for weight-file tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tmp_path / "torch" / "hub" / "checkpoints"
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run faster on one thread, and much faster on a loaded machine. Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli() -> Callable:
    """``cli("data", "list", "--json")`` -> click Result with exit_code, stdout, stderr."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Six 40x40 RGB PNGs (three per class in 0_real/ and 1_fake/) with distinct colours."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("0_real", "1_fake"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"img{i}.png")
    return root


@pytest.fixture(scope="session")
def random_gram():
    """One random VGG-19 for all texture tests (building one takes seconds; it is frozen)."""
    from gantk.texture.gram import load_gram_net

    return load_gram_net("random-vgg19")


@pytest.fixture
def fast_gram(monkeypatch: pytest.MonkeyPatch, random_gram) -> None:
    """Texture trainers get the shared random VGG-19 instead of building their own."""
    from gantk.texture import train as train_module

    real = train_module.load_gram_net

    def load(choice: str = "auto", weights: str | None = None, device: str = "cpu"):
        return random_gram if choice == "random-vgg19" else real(choice, weights, device)

    monkeypatch.setattr(train_module, "load_gram_net", load)


@pytest.fixture(scope="session")
def cpu_patch_kernels(tmp_path_factory: pytest.TempPathFactory):
    """The CUDA kernels' per-element patch-attention math (gantk/ops/csrc) compiled for the CPU
    from tests/csrc, to check it without a GPU (test_ops_kernels, test_ops_selfcheck)."""
    import shutil

    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler (c++) to build the CPU copy of the kernel math")
    from torch.utils import cpp_extension

    root = Path(__file__).resolve().parent.parent
    return cpp_extension.load(
        name="gantk_patch_attention_cpu_test",
        sources=[str(root / "tests" / "csrc" / "patch_attention_cpu.cpp")],
        extra_include_paths=[str(root / "gantk" / "ops" / "csrc")],
        extra_cflags=["-O1"],
        build_directory=str(tmp_path_factory.mktemp("patch_attention_cpu")),
    )
