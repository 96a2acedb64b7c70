"""LPIPS loading and distances, IvOM, and the Laplacian-pyramid sliced Wasserstein distance.

No pretrained weights exist on the test machine, so the torchvision trunk files are written with
random weights of the right architecture: the real loading code runs, the numbers are not the
published ones.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from scipy.stats import wasserstein_distance

from gantk.errors import GantkError
from gantk.gan.networks import Generator, NetworkConfig
from gantk.gan.sampling import latents_for
from gantk.io.builtin import load_builtin
from gantk.io.datasets import open_dataset
from gantk.io.images import to_uint8
from gantk.metrics import swd as swd_module
from gantk.metrics.ivom import (
    ivom,
    learning_rate,
    noise_strength,
    slerp,
    summarize_ivom,
)
from gantk.metrics.lpips_metric import (
    load_lpips,
    lpips_distance,
    paired_lpips,
    resize_to,
    to_unit_range,
)
from gantk.metrics.swd import (
    laplacian_pyramid,
    pyr_down,
    pyr_up,
    sample_descriptors,
    swd,
    swd_images,
)

ALEX_FILE = "alexnet-owt-7be5be79.pth"
VGG_FILE = "vgg16-397923af.pth"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def alex_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).state_dict()


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory: pytest.TempPathFactory, alex_state) -> Path:
    """A randomly initialised torchvision AlexNet, saved like the real file (once: 240 MB)."""
    path = tmp_path_factory.mktemp("weights") / ALEX_FILE
    torch.save(alex_state, path)
    return path


@pytest.fixture(scope="module")
def model(alex_file: Path):
    return load_lpips("alex", weights=alex_file)


def hub_dir() -> Path:
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_trunk_is(model, state: dict[str, torch.Tensor]) -> None:
    """Every tensor of the lpips trunk equals torchvision's ``features.N.*`` in the file."""
    trunk = model.net.state_dict()
    assert trunk
    for name, tensor in trunk.items():
        _, index, rest = name.split(".", 2)
        assert torch.equal(tensor, state[f"features.{index}.{rest}"]), name


# --- LPIPS loading ---------------------------------------------------------------------------


def test_load_lpips_from_torch_hub_cache(alex_file: Path, alex_state) -> None:
    (hub_dir() / ALEX_FILE).symlink_to(alex_file)
    model = load_lpips()
    assert_trunk_is(model, alex_state)
    # The linear heads come from the wheel, untouched.
    import lpips

    heads = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
        map_location="cpu",
        weights_only=True,
    )
    assert torch.equal(model.lin0.model[1].weight, heads["lin0.model.1.weight"])
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_load_lpips_from_weights_dir_and_explicit_path(
    tmp_path: Path, alex_file: Path, alex_state, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "gantk_weights"
    folder.mkdir()
    (folder / ALEX_FILE).symlink_to(alex_file)
    monkeypatch.setenv("GANTK_WEIGHTS_DIR", str(folder))
    assert_trunk_is(load_lpips("alex"), alex_state)

    monkeypatch.delenv("GANTK_WEIGHTS_DIR")
    renamed = tmp_path / "my_alexnet.pth"
    renamed.symlink_to(alex_file)
    assert_trunk_is(load_lpips("alexnet", weights=renamed), alex_state)


def test_load_lpips_vgg_trunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the convolutional part matters to LPIPS; the classifier (500 MB) is left out.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch.save(state, tmp_path / VGG_FILE)
    monkeypatch.setenv("GANTK_WEIGHTS_DIR", str(tmp_path))
    model = load_lpips("vgg")
    assert_trunk_is(model, state)
    assert len(model.net.state_dict()) == 26  # 13 convolutions, weight and bias each


def test_load_lpips_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(GantkError, match=ALEX_FILE) as info:
        load_lpips("alex")
    assert "download.pytorch.org" in str(info.value)
    with pytest.raises(GantkError, match="does not exist"):
        load_lpips("alex", weights=tmp_path / "nope.pth")
    with pytest.raises(GantkError, match="'alex' or 'vgg'"):
        load_lpips("squeeze")


def test_load_lpips_rejects_files_of_another_architecture(tmp_path: Path, alex_state) -> None:
    vgg_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    wrong = hub_dir() / ALEX_FILE
    torch.save({f"features.{k}": v for k, v in vgg_features.state_dict().items()}, wrong)
    with pytest.raises(
        GantkError, match=r"does not fit torchvision's alexnet.*features\.0\.weight"
    ):
        load_lpips("alex")

    truncated = {k: v for k, v in alex_state.items() if not k.startswith("features.10.")}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(GantkError, match=r"2 of 10 trunk tensors wrong.*features\.10\..* missing"):
        load_lpips("alex", weights=tmp_path / "truncated.pth")

    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(GantkError, match="cannot read"):
        load_lpips("alex", weights=tmp_path / "garbage.pth")


# --- LPIPS distances -------------------------------------------------------------------------


def random_images(count: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand((count, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_distance_properties(model) -> None:
    a, b = random_images(3, 64, 0), random_images(3, 64, 1)
    assert torch.all(lpips_distance(model, a, a) < 1e-7)
    d_ab = lpips_distance(model, a, b)
    assert d_ab.shape == (3,)
    assert torch.all(d_ab > 1e-3)
    torch.testing.assert_close(d_ab, lpips_distance(model, b, a), atol=1e-6, rtol=0)
    torch.testing.assert_close(d_ab, model(a, b).reshape(-1), atol=1e-6, rtol=0)

    # Small images are upsampled to 32 px (AlexNet has no extent left below 31 px).
    small_a, small_b = random_images(2, 16, 2), random_images(2, 16, 3)
    up = [F.interpolate(x, size=(32, 32), mode="bilinear") for x in (small_a, small_b)]
    torch.testing.assert_close(
        lpips_distance(model, small_a, small_b), model(*up).reshape(-1), atol=1e-6, rtol=0
    )

    # Differentiable w.r.t. the input, as IvOM needs.
    x = a.clone().requires_grad_(True)
    lpips_distance(model, x, b).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def to_float(arr: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [-1, 1], independently of gantk's helpers."""
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1


def write_folder(root: Path, images: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True)
    for name, arr in images.items():
        Image.fromarray(arr).save(root / name)
    return root


def test_paired_lpips_pairs_by_filename(tmp_path: Path, model) -> None:
    rng = np.random.default_rng(0)
    names = ["c.png", "a.png", "b.png", "d.png"]
    originals = {n: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for n in names}
    copies = {
        n: np.clip(originals[n].astype(int) + rng.integers(-40, 41, (32, 32, 3)), 0, 255).astype(
            np.uint8
        )
        for n in names
    }
    copies["a.png"] = originals["a.png"]  # one identical pair: distance 0
    dir_a = write_folder(tmp_path / "a", originals)
    dir_b = write_folder(tmp_path / "b", copies)

    seen: list[int] = []
    result = paired_lpips(
        model, open_dataset(dir_a), open_dataset(dir_b), batch_size=3, advance=seen.append
    )
    assert seen == [3, 1]
    assert result["network"] == "lpips-alex"
    assert result["count"] == 4 and result["resized"] is False
    assert [e["file"] for e in result["per_image"]] == sorted(names)
    values = np.array([e["lpips"] for e in result["per_image"]])
    assert values[0] < 1e-7 and np.all(values[1:] > 1e-4)
    assert result["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert result["std"] == pytest.approx(values.std(), abs=1e-12)
    for entry in result["per_image"]:
        direct = model(to_float(originals[entry["file"]]), to_float(copies[entry["file"]]))
        assert entry["lpips"] == pytest.approx(float(direct), abs=1e-6)


def test_paired_lpips_mismatches_and_resizing(tmp_path: Path, model) -> None:
    rng = np.random.default_rng(1)

    def img(size: int) -> np.ndarray:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    base = open_dataset(write_folder(tmp_path / "base", {f"{i}.png": img(32) for i in range(3)}))

    renamed = write_folder(tmp_path / "renamed", {f"{i}.png": img(32) for i in (0, 1, 7)})
    with pytest.raises(GantkError, match=r"'2.png' is only in .*'7.png' only in"):
        paired_lpips(model, base, open_dataset(renamed))

    fewer = write_folder(tmp_path / "fewer", {f"{i}.png": img(32) for i in range(2)})
    with pytest.raises(GantkError, match=r"has 3 and .* has 2"):
        paired_lpips(model, base, open_dataset(fewer))

    bigger = write_folder(tmp_path / "bigger", {f"{i}.png": img(48) for i in range(3)})
    result = paired_lpips(model, base, open_dataset(bigger))
    assert result["resized"] is True and result["count"] == 3

    # Same names with another extension still pair (e.g. .jpg originals, .png outputs).
    jpegs = write_folder(tmp_path / "jpegs", {f"{i}.jpg": img(32) for i in range(3)})
    result = paired_lpips(model, open_dataset(jpegs), base)
    assert [e["file"] for e in result["per_image"]] == ["0.jpg", "1.jpg", "2.jpg"]


# --- IvOM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_G() -> Generator:
    torch.manual_seed(0)
    config = NetworkConfig(
        resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=64, channel_max=8
    )
    return Generator(config).eval()  # parameters left trainable: ivom must not touch them


def test_ivom_reconstructs_generator_outputs_better_than_noise(tiny_G, model) -> None:
    with torch.no_grad():
        made = tiny_G(latents_for(range(100, 106), tiny_G), noise_mode="const")
    reachable = to_uint8(made).permute(0, 3, 1, 2).contiguous()
    noise = torch.randint(
        0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )

    start = ivom(tiny_G, reachable, model, steps=0)
    done: list[int] = []
    reached = ivom(tiny_G, reachable, model, steps=60, batch_size=4, advance=done.append)
    unreachable = ivom(tiny_G, noise, model, steps=60)
    assert reached.shape == (6,) and reached.dtype == np.float64
    assert done == [4, 2]
    assert np.all(reached < start)
    assert reached.mean() < 0.5 * unreachable.mean()
    assert all(p.grad is None for p in tiny_G.parameters())


def test_ivom_seeded_restarts_and_resizing(tiny_G, model) -> None:
    queries = torch.randint(
        0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    once = ivom(tiny_G, queries, model, steps=3, seed=5)
    np.testing.assert_array_equal(once, ivom(tiny_G, queries, model, steps=3, seed=5))
    # Latents are drawn for all queries up front, so batching does not change them.
    np.testing.assert_allclose(
        once, ivom(tiny_G, queries, model, steps=3, seed=5, batch_size=1), atol=1e-5
    )
    assert not np.allclose(once, ivom(tiny_G, queries, model, steps=3, seed=6))
    # Restart 0 starts from the same latents as a single run, so the best can only improve.
    assert np.all(ivom(tiny_G, queries, model, steps=3, seed=5, restarts=2) <= once)
    big = F.interpolate(queries.float(), size=(32, 32), mode="nearest").to(torch.uint8)
    assert ivom(tiny_G, big, model, steps=0).shape == (4,)


def test_ivom_schedule_is_the_authors_projector() -> None:
    # projector_lpips.py: lr 0.1, ramp-up over 5 % of the steps, cosine ramp-down over the last
    # 25 %; latent noise 0.05 * (1 - t / 0.75)^2.
    assert learning_rate(0, 400, 0.1, "authors") == 0.0
    assert learning_rate(10, 400, 0.1, "authors") == pytest.approx(0.05)  # halfway up
    assert learning_rate(200, 400, 0.1, "authors") == pytest.approx(0.1)
    assert learning_rate(350, 400, 0.1, "authors") == pytest.approx(0.05)  # halfway down
    assert learning_rate(350, 400, 0.1, "constant") == 0.1
    assert noise_strength(0, 400, "authors") == pytest.approx(0.05)
    assert noise_strength(150, 400, "authors") == pytest.approx(0.05 * 0.25)
    assert noise_strength(300, 400, "authors") == 0.0
    assert noise_strength(0, 400, "constant") == 0.0


def test_slerp_moves_along_the_great_circle() -> None:
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.5]])
    torch.testing.assert_close(slerp(a, b, 0.0), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(slerp(a, b, 1.0), torch.tensor([[0.0, 1.0]]), atol=1e-6, rtol=0)
    half = math.sqrt(0.5)
    torch.testing.assert_close(slerp(a, b, 0.5), torch.tensor([[half, half]]))


def test_ivom_constant_schedule_is_plain_adam(tiny_G, model) -> None:
    queries = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    got = ivom(tiny_G, queries, model, steps=3, lr=0.05, seed=2, schedule="constant")
    # By hand: the same initial latents, Adam at a fixed rate, no latent noise.
    z = torch.randn((1, 2, tiny_G.config.z_dim), generator=torch.Generator().manual_seed(2))[0]
    z = z.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    target = resize_to(to_unit_range(queries), (tiny_G.config.resolution,) * 2)
    for _ in range(3):
        (z.grad,) = torch.autograd.grad(
            lpips_distance(model, tiny_G(z, noise_mode="const"), target).sum(), [z]
        )
        opt.step()
    with torch.no_grad():
        expected = lpips_distance(model, tiny_G(z, noise_mode="const"), target)
    np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-5)
    with pytest.raises(GantkError, match="schedule 'fast'"):
        ivom(tiny_G, queries, model, steps=1, schedule="fast")


def test_summarize_ivom_by_attribute() -> None:
    values = np.array([0.1, 0.2, 0.3, 0.4])
    attributes = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0]])
    summary = summarize_ivom(values, attributes, ["Smiling", "Eyeglasses", "Bald"])
    assert summary["mean"] == pytest.approx(0.25)
    assert summary["std"] == pytest.approx(np.sqrt(0.0125))
    assert summary["count"] == 4
    assert summary["attributes"]["Smiling"] == pytest.approx(0.15)
    assert summary["attributes"]["Eyeglasses"] == pytest.approx(0.3)
    assert summary["attributes"]["Bald"] is None
    assert summary["attribute_std"] == pytest.approx(0.075)  # std of 0.15 and 0.3
    assert set(summarize_ivom(values, None, None)) == {"mean", "std", "count"}
    with pytest.raises(GantkError, match="one row per query"):
        summarize_ivom(values, attributes[:3], ["a", "b", "c"])


# --- SWD -------------------------------------------------------------------------------------


def textures(seed: int) -> torch.Tensor:
    dataset = load_builtin("builtin:textures", count=64, resolution=32, seed=seed)
    return torch.from_numpy(dataset.images).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("size", [32, 37])
def test_laplacian_pyramid_reconstructs(size: int) -> None:
    x = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(0))
    levels = laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == ([32, 16] if size == 32 else [37, 19])
    torch.testing.assert_close(levels[-1], pyr_down(x))  # the last level is the lowpass
    rebuilt = levels[-1]
    for level in levels[-2::-1]:
        rebuilt = pyr_up(rebuilt, level.shape[-2:]) + level
    torch.testing.assert_close(rebuilt, x, atol=1e-5, rtol=0)
    # A flat image has no detail: bandpass exactly 0, lowpass the same constant.
    flat = laplacian_pyramid(torch.full((1, 3, 64, 64), 0.3))
    assert len(flat) == 3
    assert all(lv.abs().max() < 1e-6 for lv in flat[:-1])
    torch.testing.assert_close(flat[-1], torch.full((1, 3, 16, 16), 0.3))


def test_sample_descriptors_are_patches_of_their_image() -> None:
    n, size, per_image = 3, 16, 128
    # Each pixel encodes (image, channel, y, x), so a descriptor says where it came from.
    idx = torch.arange(n * 3 * size * size, dtype=torch.float64).reshape(n, 3, size, size)
    desc = sample_descriptors(idx, per_image=per_image, generator=torch.Generator().manual_seed(0))
    assert desc.shape == (n * per_image, 3 * 7 * 7)
    patches = desc.reshape(-1, 3, 7, 7).long()
    image = patches // (3 * size * size)
    channel = patches // (size * size) % 3
    y, x = patches // size % size, patches % size
    expected_image = torch.arange(n).repeat_interleave(per_image).view(-1, 1, 1, 1)
    assert torch.equal(image, expected_image.expand_as(image))
    assert torch.equal(channel, torch.arange(3).view(1, 3, 1, 1).expand_as(channel))
    assert torch.equal(y - y[:, :, :1, :], torch.arange(7).view(1, 1, 7, 1).expand_as(y))
    assert torch.equal(x - x[:, :, :, :1], torch.arange(7).view(1, 1, 1, 7).expand_as(x))
    assert y.min() >= 0 and y.max() < size and x.min() >= 0 and x.max() < size
    assert len(torch.unique(y[:, 0, 3, 3])) > 5  # centres vary


def test_swd_identical_sets_are_zero_and_seeded() -> None:
    a, b = textures(1), textures(2)
    same = swd_images(a, a)
    assert list(same["levels"]) == [32, 16]
    assert same["mean"] == 0.0 and all(v == 0.0 for v in same["levels"].values())
    first = swd_images(a, b, seed=3)
    assert first == swd_images(a, b, seed=3)
    assert first != swd_images(a, b, seed=4)
    assert first["mean"] == pytest.approx(sum(first["levels"].values()) / 2)
    # Batches in, the same images in the same batches: patches at the same places, still 0.
    batched = swd_images([a[:40], a[40:]], [a[:40], a[40:]])
    assert batched["mean"] == 0.0 and batched["count_real"] == batched["count_fake"] == 64


def test_swd_detects_altered_images_beyond_sampling_noise() -> None:
    a, fresh = textures(1), textures(2)
    baseline = swd_images(a, fresh)
    # A uniform brightness shift would be removed by the per-channel normalisation of the
    # descriptors, so alter brightness nonlinearly (gamma 2), which changes the patch statistics.
    darker = (255 * (a.float() / 255) ** 2).round().to(torch.uint8)
    assert swd_images(a, darker)["mean"] > 1.5 * baseline["mean"]
    # Added noise is high-frequency detail: it shows in the finest level.
    noise = 25 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    noisy = (a.float() + noise).round().clamp(0, 255).to(torch.uint8)
    assert swd_images(a, noisy)["levels"][32] > 2 * baseline["levels"][32]


def test_swd_resizes_fake_to_real() -> None:
    a = textures(1)
    big = F.interpolate(a.float(), size=(64, 64), mode="bilinear").round().to(torch.uint8)
    result = swd_images(a, big)
    assert result["resized"] is True and list(result["levels"]) == [32, 16]
    assert swd_images(a, a)["resized"] is False
    with pytest.raises(GantkError, match="at least 16 px"):
        swd_images(a[:, :, :8, :8], a[:, :, :8, :8])


def test_swd_of_descriptor_sets() -> None:
    gen = torch.Generator().manual_seed(0)
    real = [torch.randn((500, 147), generator=gen)]
    assert swd(real, real) == [0.0]
    shifted = [real[0] * torch.linspace(0.5, 2, 147)]
    value = swd(real, shifted, projections=64, repeats=2, seed=1)
    assert value == swd(real, shifted, projections=64, repeats=2, seed=1)
    assert value[0] > 0
    # Unequal sizes: the exact 1-D Wasserstein-1 between the empirical distributions.
    a = torch.randn((37, 3), generator=gen, dtype=torch.float64)
    b = torch.randn((50, 3), generator=gen, dtype=torch.float64) + 0.5
    expected = np.mean([wasserstein_distance(a[:, k], b[:, k]) for k in range(3)])
    assert float(swd_module._wasserstein_1d(a.T, b.T)) == pytest.approx(expected, rel=1e-9)
