"""gantk.io.builtin: the offline ``builtin:NAME`` datasets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gantk.errors import GantkError
from gantk.io.builtin import BUILTINS, load_builtin, parse_spec
from gantk.io.builtin.shapes import ATTRIBUTES, KINDS

SEEDED = ("stacked-digits", "textures", "photos", "shapes")


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_builds(name: str) -> None:
    info = BUILTINS[name]
    count = min(12, info.max_count)
    ds = load_builtin(f"builtin:{name}", count=count, resolution=16, seed=0)

    assert len(ds) == count
    assert ds.resolution == 16
    assert ds.images.dtype == np.uint8
    assert ds.images.shape == (count, 16, 16, 3)
    assert ds.labels.shape == (count,)
    if ds.class_names is None:
        assert (ds.labels == -1).all()
    else:
        assert ((ds.labels >= 0) & (ds.labels < len(ds.class_names))).all()
    assert ds.name == f"builtin:{name}"
    image, label = ds[0]
    assert tuple(image.shape) == (3, 16, 16)
    assert label == int(ds.labels[0])
    # Not blank.
    assert ds.images.std() > 1.0

    again = load_builtin(f"builtin:{name}", count=count, resolution=16, seed=0)
    np.testing.assert_array_equal(again.images, ds.images)
    np.testing.assert_array_equal(again.labels, ds.labels)


@pytest.mark.parametrize("name", SEEDED)
def test_seed_changes_the_images(name: str) -> None:
    a = load_builtin(f"builtin:{name}", count=12, resolution=16, seed=0)
    b = load_builtin(f"builtin:{name}", count=12, resolution=16, seed=1)
    assert not np.array_equal(a.images, b.images)


def test_default_resolution_and_count_from_info() -> None:
    ds = load_builtin("builtin:faces")
    info = BUILTINS["faces"]
    assert len(ds) == info.default_count
    assert ds.resolution == info.default_resolution


def test_digits_labels_match_sklearn(sklearn_digits) -> None:
    ds = load_builtin("builtin:digits", count=50, resolution=16)
    np.testing.assert_array_equal(ds.labels, sklearn_digits.target[:50])
    assert ds.class_names == [str(d) for d in range(10)]
    # Grey: all three channels are equal, and digit 0 is bright where sklearn's 0 is.
    np.testing.assert_array_equal(ds.images[..., 0], ds.images[..., 1])
    np.testing.assert_array_equal(ds.images[..., 0], ds.images[..., 2])
    small = np.asarray(Image.fromarray(ds.images[0, ..., 0]).resize((8, 8), Image.Resampling.BOX))
    corr = np.corrcoef(small.ravel().astype(float), sklearn_digits.images[0].ravel())[0, 1]
    assert corr > 0.9


def _upsampled_bank(digits, resolution: int) -> np.ndarray:
    gray = np.round(digits.images * 255 / 16).astype(np.uint8)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(g).resize((resolution, resolution), Image.Resampling.BILINEAR)
            )
            for g in gray
        ]
    )


def test_stacked_digit_labels_match_channels(sklearn_digits) -> None:
    resolution = 16
    ds = load_builtin("builtin:stacked-digits", count=20, resolution=resolution, seed=7)
    bank = _upsampled_bank(sklearn_digits, resolution)
    target = sklearn_digits.target
    assert len(ds.class_names) == 1000
    assert ds.class_names[42] == "042"
    for i in range(8):
        mode = int(ds.labels[i])
        wanted = (mode // 100, mode // 10 % 10, mode % 10)
        for channel, digit in enumerate(wanted):
            plane = ds.images[i, ..., channel]
            matches = np.flatnonzero((bank == plane).all(axis=(1, 2)))
            assert len(matches) > 0, f"image {i} channel {channel} is no upsampled digit"
            assert (target[matches] == digit).any(), (
                f"image {i} channel {channel}: expected a {digit}, found {set(target[matches])}"
            )
    # 20 random modes out of 1000: they are not all the same.
    assert len(set(ds.labels.tolist())) > 10


def test_shapes_attributes_are_consistent() -> None:
    ds = load_builtin("builtin:shapes", count=40, resolution=16, seed=2)
    assert ds.attribute_names == list(ATTRIBUTES)
    assert ds.class_names == list(KINDS)
    attrs = ds.attributes
    assert attrs.shape == (40, len(ATTRIBUTES))
    assert set(np.unique(attrs).tolist()) <= {0, 1}
    kinds = attrs[:, :3]
    colours = attrs[:, 3:7]
    np.testing.assert_array_equal(kinds.sum(axis=1), 1)
    np.testing.assert_array_equal(colours.sum(axis=1), 1)
    np.testing.assert_array_equal(kinds.argmax(axis=1), ds.labels)
    # 40 images with equal quotas: every kind and colour appears, large/multiple about half.
    assert (kinds.sum(axis=0) > 0).all()
    assert (colours.sum(axis=0) > 0).all()
    assert attrs[:, ATTRIBUTES.index("large")].sum() == 20
    assert attrs[:, ATTRIBUTES.index("multiple")].sum() == 20


def test_shapes_minority_quotas() -> None:
    ds = load_builtin("builtin:shapes?minority=triangle:0.02", count=500, resolution=8)
    assert int((ds.labels == KINDS.index("triangle")).sum()) == 10
    assert int(ds.attributes[:, ATTRIBUTES.index("triangle")].sum()) == 10
    # The other kinds share the rest.
    assert int((ds.labels == 0).sum()) + int((ds.labels == 1).sum()) == 490

    ds = load_builtin("builtin:shapes?minority=large:0.1", count=500, resolution=8)
    assert int(ds.attributes[:, ATTRIBUTES.index("large")].sum()) == 50

    ds = load_builtin("builtin:shapes?minority=blue", count=500, resolution=8)
    assert int(ds.attributes[:, ATTRIBUTES.index("blue")].sum()) == 10  # default 0.02


def test_shapes_colour_describes_pixels() -> None:
    ds = load_builtin("builtin:shapes", count=60, resolution=32, seed=4)
    checked = {"red": 0, "blue": 0}
    for i in range(len(ds)):
        img = ds.images[i].reshape(-1, 3).astype(int)
        saturation = img.max(axis=1) - img.min(axis=1)
        top = img[np.argsort(saturation)[-12:]].mean(axis=0)
        r, g, b = top
        if ds.attributes[i, ATTRIBUTES.index("red")]:
            assert r > g + 50 and r > b + 50, (i, top)
            checked["red"] += 1
        if ds.attributes[i, ATTRIBUTES.index("blue")]:
            assert b > r + 50 and b > g + 50, (i, top)
            checked["blue"] += 1
    assert checked["red"] >= 10 and checked["blue"] >= 10


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(GantkError, match="builtin:shapes") as info:
        load_builtin("builtin:nope")
    assert "nope" in str(info.value)
    assert "builtin:digits" in str(info.value)


def test_unknown_option() -> None:
    with pytest.raises(GantkError, match="foo"):
        load_builtin("builtin:digits?foo=1")
    # minority is an option of shapes only
    with pytest.raises(GantkError, match="minority"):
        parse_spec("builtin:digits?minority=red")


def test_count_above_max() -> None:
    with pytest.raises(GantkError, match="1797"):
        load_builtin("builtin:digits", count=5000)
    with pytest.raises(GantkError, match="at most"):
        load_builtin("builtin:faces?n=101")
    with pytest.raises(GantkError, match="at most"):
        load_builtin("builtin:shapes", count=0)


def test_bad_resolution() -> None:
    with pytest.raises(GantkError, match="power of two"):
        load_builtin("builtin:shapes", count=4, resolution=48)
    with pytest.raises(GantkError, match="power of two"):
        load_builtin("builtin:shapes?resolution=48&n=4")


def test_non_integer_option() -> None:
    with pytest.raises(GantkError, match="integer"):
        load_builtin("builtin:shapes?n=many")


@pytest.mark.parametrize("minority", ["hexagon", "triangle:abc", "triangle:1.5", "red:0"])
def test_bad_minority(minority: str) -> None:
    with pytest.raises(GantkError, match="minority"):
        load_builtin(f"builtin:shapes?minority={minority}", count=20, resolution=8)


def test_query_options() -> None:
    from_query = load_builtin("builtin:shapes?n=7&resolution=16&seed=3")
    explicit = load_builtin("builtin:shapes", count=7, resolution=16, seed=3)
    assert from_query.images.shape == (7, 16, 16, 3)
    np.testing.assert_array_equal(from_query.images, explicit.images)
    np.testing.assert_array_equal(from_query.labels, explicit.labels)
    np.testing.assert_array_equal(from_query.attributes, explicit.attributes)


def test_explicit_arguments_override_query() -> None:
    ds = load_builtin("builtin:shapes?n=7&resolution=16&seed=3", count=5, resolution=8, seed=9)
    reference = load_builtin("builtin:shapes", count=5, resolution=8, seed=9)
    assert ds.images.shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(ds.images, reference.images)
    other_seed = load_builtin("builtin:shapes", count=5, resolution=8, seed=3)
    assert not np.array_equal(ds.images, other_seed.images)


@pytest.mark.parametrize("count", [2, 6])
def test_shapes_small_counts_have_fair_colour_quotas(count: int) -> None:
    ds = load_builtin("builtin:shapes", count=count, resolution=8)
    per_colour = ds.attributes[:, 3:7].sum(axis=0).astype(int)
    assert per_colour.max() - per_colour.min() <= 1
