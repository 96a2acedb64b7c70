"""The fast FID Inception computes pytorch-fid's pool3 features from the same weight file."""

from __future__ import annotations

import pytest
import torch

from gantk.errors import GantkError
from gantk.metrics.features import fid_inception_architecture
from gantk.metrics.fid_inception import FIDInception, expected_shapes


@pytest.fixture(scope="module")
def state() -> dict:
    """Random FID weights with non-trivial batch norms, so folding them is really tested."""
    state = fid_inception_architecture().state_dict()
    g = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if key.endswith(("bn.running_var", "bn.weight")):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key.endswith(("bn.running_mean", "bn.bias")):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
    return state


def pytorch_fid_features(state: dict, images: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's own InceptionV3 wrapper (resize, [-1, 1], pool3) around the same weights."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    original = pfi.fid_inception_v3

    def bare() -> torch.nn.Module:
        net = fid_inception_architecture()
        net.load_state_dict(state)
        return net

    pfi.fid_inception_v3 = bare
    try:
        model = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    finally:
        pfi.fid_inception_v3 = original
    with torch.no_grad():
        return model(images)[0].flatten(1)


@pytest.mark.parametrize("size", [37, 64])
def test_features_equal_pytorch_fid(state, size) -> None:
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    reference = pytorch_fid_features(state, images)
    with torch.no_grad():
        ours = FIDInception(state)(images)
    assert ours.shape == (3, 2048)
    assert reference.abs().mean() > 0.1  # activations are alive, not vanished to zero
    assert (ours - reference).norm() / reference.norm() < 1e-5


def test_gradients_reach_the_input(state) -> None:
    """IMLE's feature-space loss back-propagates through the network to the images."""
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    FIDInception(state)(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_weight_files_that_do_not_fit_are_refused(state) -> None:
    assert set(expected_shapes()) <= set(state)
    missing = {k: v for k, v in state.items() if k != "Mixed_6b.branch7x7_2.conv.weight"}
    with pytest.raises(GantkError, match=r"missing Mixed_6b\.branch7x7_2\.conv\.weight"):
        FIDInception(missing)
    wrong = {**state, "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)}
    with pytest.raises(GantkError, match=r"shape \(32, 3, 5, 5\), expected \(32, 3, 3, 3\)"):
        FIDInception(wrong)
    extra = {**state, "AuxLogits.fc.weight": torch.zeros(1)}
    with pytest.raises(GantkError, match=r"unexpected AuxLogits\.fc\.weight"):
        FIDInception(extra)
