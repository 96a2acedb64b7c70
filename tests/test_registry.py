"""gantk.fingerprint.scalable.registry: the secret user <-> fingerprint registry (scalable)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from gantk.errors import GantkError
from gantk.fingerprint import bits as fpbits
from gantk.fingerprint.scalable import registry as regmod
from gantk.fingerprint.scalable.registry import Registry, default_min_distance

RUN = "a" * 64
OTHER_RUN = "b" * 64


def _three(path: Path, bits: int = 128, seed: int = 0) -> Registry:
    reg = Registry.create(path, bits, RUN)
    rng = np.random.default_rng(seed)
    for name in ("alice", "bob", "carol-2"):
        reg.add(name, reg.draw(name, rng, default_min_distance(bits)), instance_sha256="")
    return reg


def _flip(fp: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    out = np.array(fp, dtype=np.uint8)
    idx = np.random.default_rng(seed).choice(len(out), k, replace=False)
    out[idx] ^= 1
    return out


# --------------------------------------------------------------------------- file round trip


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "users.h5"
    reg = _three(path)
    assert reg.save() == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["users.h5"]  # no temporary file left behind

    again = Registry.open(path)
    assert again.names() == ["alice", "bob", "carol-2"]
    assert np.array_equal(again.fingerprints(), reg.fingerprints())
    assert again.fingerprints().dtype == np.uint8
    assert again.fingerprints().shape == (3, 128)
    assert (again.bits, again.run, again.created) == (128, RUN, reg.created)
    assert [e.created for e in again.entries] == [e.created for e in reg.entries]
    with h5py.File(path, "r") as f:
        assert f.attrs["gantk.kind"] == "fingerprint-registry"
        assert len(f.attrs["checksum"]) == 64


def test_save_replaces_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "users.h5"
    _three(path).save()
    os.chmod(path, 0o644)
    reg = Registry.open(path)
    reg.add("dave", reg.draw("dave", np.random.default_rng(5), 16))
    reg.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_append_keeps_earlier_entries(tmp_path: Path) -> None:
    path = tmp_path / "users.h5"
    first = _three(path)
    first.save()
    reg = Registry.open(path)
    sha = "ab" * 32
    reg.add("dave", reg.draw("dave", np.random.default_rng(9), 16), instance_sha256=sha.upper())
    reg.save()
    final = Registry.open(path)
    assert final.names() == ["alice", "bob", "carol-2", "dave"]
    assert np.array_equal(final.fingerprints()[:3], first.fingerprints())
    assert [e.created for e in final.entries[:3]] == [e.created for e in first.entries]
    assert final.entries[3].instance_sha256 == sha
    assert [e.instance_sha256 for e in final.entries[:3]] == ["", "", ""]


def test_empty_registry_round_trip(tmp_path: Path) -> None:
    path = Registry.create(tmp_path / "sub" / "empty.h5", 32, RUN).save()
    reg = Registry.open(path)
    assert len(reg) == 0 and reg.fingerprints().shape == (0, 32)
    row = reg.identify(np.zeros(32, dtype=np.uint8), fpr=1e-3)[0]
    assert row["name"] is None and row["nearest"] is None and not row["verified"]


# --------------------------------------------------------------------------- add / draw


def test_duplicate_name_refused(tmp_path: Path) -> None:
    reg = _three(tmp_path / "r.h5")
    fp = reg.draw("zed", np.random.default_rng(3), 16)
    with pytest.raises(GantkError, match=r"user alice is already in registry .*choose another"):
        reg.add("alice", fp)
    with pytest.raises(GantkError, match=r"already in registry .*as alice"):
        reg.add("Alice", fp)
    assert len(reg) == 3


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "a/b", "ü", "x" * 129, "..", "a\n"])
def test_bad_name_refused(tmp_path: Path, name: str) -> None:
    reg = Registry.create(tmp_path / "r.h5", 16, RUN)
    with pytest.raises(GantkError, match="file name"):
        reg.add(name, np.zeros(16, dtype=np.uint8))
    assert len(reg) == 0


def test_good_names_accepted(tmp_path: Path) -> None:
    reg = Registry.create(tmp_path / "r.h5", 64, RUN)
    rng = np.random.default_rng(0)
    for name in ("a", "Bob_2", "x.y-z", "_u", "-v"):
        reg.add(name, reg.draw(name, rng, 8))
    assert len(reg) == 5


def test_wrong_length_and_values_refused(tmp_path: Path) -> None:
    reg = Registry.create(tmp_path / "r.h5", 64, RUN)
    with pytest.raises(GantkError, match=r"63 bits .*64-bit"):
        reg.add("alice", np.zeros(63, dtype=np.uint8))
    with pytest.raises(GantkError, match="only 0 and 1"):
        reg.add("alice", np.full(64, 2))
    with pytest.raises(GantkError, match="64 hex digits"):
        reg.add("alice", np.zeros(64, dtype=np.uint8), instance_sha256="abc")
    assert len(reg) == 0


def test_too_close_fingerprint_refused(tmp_path: Path) -> None:
    reg = _three(tmp_path / "r.h5")
    near = _flip(reg.entries[1].fingerprint, 1)
    with pytest.raises(GantkError, match=r"1 bits from user bob's \(minimum 16\)"):
        reg.add("mallory", near)
    with pytest.raises(GantkError, match=r"0 bits from user bob's"):
        reg.add("mallory", reg.entries[1].fingerprint, min_distance=0)  # identical: never
    reg.add("mallory", near, min_distance=1)  # the caller may loosen the check explicitly
    assert reg.names()[-1] == "mallory"


def test_draw_respects_min_distance(tmp_path: Path) -> None:
    reg = Registry.create(tmp_path / "r.h5", 64, RUN)
    rng = np.random.default_rng(0)
    # 24 of 64 bits: a draw is rejected now and then (P(d < 24) ~ 2 %), so the check matters.
    for i in range(50):
        reg.add(f"user{i}", reg.draw(f"user{i}", rng, 24), min_distance=24)
    fps = reg.fingerprints().astype(int)
    dist = (fps[:, None, :] != fps[None, :, :]).sum(-1)
    off = dist[~np.eye(len(fps), dtype=bool)]
    assert off.min() >= 24


def test_draw_avoids_pending_draws_and_reports_full(tmp_path: Path) -> None:
    reg = Registry.create(tmp_path / "r.h5", 8, RUN)
    rng = np.random.default_rng(0)
    a = reg.draw("a", rng, 5)
    b = reg.draw("b", rng, 5)  # not added yet, but still kept apart from "a"
    assert (a != b).sum() >= 5
    reg.add("a", a, min_distance=5)
    reg.add("b", b, min_distance=5)
    # Plotkin bound: at most 2 * floor((d + 1) / (2d + 1 - n)) = 4 words of 8 bits lie at
    # pairwise distance >= 5, so 5 more users cannot all fit.
    with pytest.raises(GantkError, match="too full for 8-bit"):
        for i in range(5):
            reg.add(f"u{i}", reg.draw(f"u{i}", rng, 5, max_tries=500), min_distance=5)
    with pytest.raises(GantkError, match="exceeds the 8 bits"):
        reg.draw("z", rng, 9)
    with pytest.raises(GantkError, match="already in registry"):
        reg.draw("a", rng, 1)


def test_default_min_distance() -> None:
    assert default_min_distance(128) == 16  # bits // 8: the paper's 128 bits
    assert default_min_distance(4) == 1


def test_tampered_bit_detected(tmp_path: Path) -> None:
    path = _three(tmp_path / "r.h5").save()
    with h5py.File(path, "r+") as f:
        f["fingerprints"][0, 0] = 1 - f["fingerprints"][0, 0]
    with pytest.raises(GantkError, match=r"changed outside gantk \(checksum mismatch\)"):
        Registry.open(path)


def test_renamed_user_detected(tmp_path: Path) -> None:
    path = _three(tmp_path / "r.h5").save()
    with h5py.File(path, "r+") as f:
        f["names"][1] = "mallory"
    with pytest.raises(GantkError, match="checksum"):
        Registry.open(path)


def test_edited_run_detected(tmp_path: Path) -> None:
    path = _three(tmp_path / "r.h5").save()
    with h5py.File(path, "r+") as f:
        f.attrs["run"] = OTHER_RUN
    with pytest.raises(GantkError, match="checksum"):
        Registry.open(path)


def test_not_h5_truncated_and_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("alice 0x1234\n")
    with pytest.raises(GantkError, match="not a readable fingerprint registry"):
        Registry.open(text)

    path = _three(tmp_path / "r.h5").save()
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GantkError, match="restore it from a backup"):
        Registry.open(cut)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("fingerprints", data=np.zeros((1, 8), dtype=np.uint8))
    with pytest.raises(GantkError, match=r"has no gantk.kind"):
        Registry.open(foreign)

    with pytest.raises(GantkError, match="does not exist"):
        Registry.open(tmp_path / "missing.h5")
    with pytest.raises(GantkError, match="is a folder"):
        Registry.open(tmp_path)


def test_missing_dataset_is_damage(tmp_path: Path) -> None:
    path = _three(tmp_path / "r.h5").save()
    with h5py.File(path, "r+") as f:
        del f["instance_sha256"]
    with pytest.raises(GantkError, match="damaged"):
        Registry.open(path)


# --------------------------------------------------------------------------- open_or_create


def test_open_or_create(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    new = Registry.open_or_create(path, 64, RUN)
    assert len(new) == 0 and not path.exists()
    new.add("alice", np.ones(64, dtype=np.uint8))
    new.save()
    assert Registry.open_or_create(path, 64, RUN).names() == ["alice"]
    with pytest.raises(GantkError, match=r"holds 64-bit fingerprints, this model uses 128 bits"):
        Registry.open_or_create(path, 128, RUN)
    with pytest.raises(GantkError, match=r"run aaaaaaaaaaaa, this model is from run bbbbbbbbbbbb"):
        Registry.open_or_create(path, 64, OTHER_RUN)


def test_run_names_shown_until_they_differ(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    Registry.create(path, 16, "training-run-2024-01-a").save()
    with pytest.raises(
        GantkError, match=r"run training-run-2024-01-a, .* run training-run-2024-01-b"
    ):
        Registry.open_or_create(path, 16, "training-run-2024-01-b")


def test_concurrent_save_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _three(path).save()
    one, two = Registry.open(path), Registry.open(path)
    one.add("dave", one.draw("dave", np.random.default_rng(1), 16))
    two.add("erin", two.draw("erin", np.random.default_rng(2), 16))
    one.save()
    with pytest.raises(GantkError, match="changed by someone else"):
        two.save()
    assert Registry.open(path).names()[-1] == "dave"
    one.add("frank", one.draw("frank", np.random.default_rng(3), 16))
    one.save()  # the saving object itself may save again
    assert len(Registry.open(path)) == 5


# --------------------------------------------------------------------------- identify


def test_identify_flipped_and_random(tmp_path: Path) -> None:
    reg = _three(tmp_path / "r.h5")
    fpr = 1e-6
    # the stricter of chance (93 bits for 3 users) and unique decoding with 16-bit spacing
    assert fpbits.threshold(128, fpr / 3) == 93
    t = 121  # the paper's threshold: 128 - (16 - 1) // 2
    assert reg.threshold(fpr) == t
    rows = [_flip(reg.entries[1].fingerprint, k) for k in (0, 3, 7)]
    rows.append(np.random.default_rng(123).integers(0, 2, 128, dtype=np.uint8))
    out = reg.identify(np.stack(rows), fpr)
    for row, k in zip(out[:3], (0, 3, 7), strict=True):
        assert row["name"] == row["nearest"] == "bob"
        assert row["matches"] == 128 - k
        assert row["bit_accuracy"] == (128 - k) / 128
        assert row["verified"] and row["threshold"] == t
    random = out[3]
    assert random["name"] is None and not random["verified"]
    assert random["matches"] < t
    for row in out:
        p = float(fpbits.p_value(row["matches"], 128))
        assert row["p_value"] == pytest.approx(p, rel=1e-12)
        assert row["p_value_corrected"] == pytest.approx(min(1.0, 3 * p), rel=1e-12)
        assert not row["verified"] or row["p_value_corrected"] <= fpr
    # past the unique-decoding radius (8 wrong bits) or far off: still nearest, not verified
    for k in (8, 40):
        far = reg.identify(_flip(reg.entries[0].fingerprint, k), fpr)[0]
        assert far["nearest"] == "alice" and far["name"] is None and far["matches"] == 128 - k


def test_identify_matches_brute_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry.create(tmp_path / "r.h5", 32, RUN)
    rng = np.random.default_rng(0)
    for i in range(40):
        reg.add(f"u{i}", reg.draw(f"u{i}", rng, 4))
    fps = reg.fingerprints()
    noisy = fps[rng.integers(0, 40, 300)] ^ (rng.random((300, 32)) < 0.1).astype(np.uint8)
    decoded = np.concatenate([noisy, rng.integers(0, 2, (100, 32), dtype=np.uint8)])
    monkeypatch.setattr(fpbits, "_CHUNK_CELLS", 40 * 7)  # several chunks, one ragged
    out = reg.identify(decoded, fpr=1e-3)
    t = max(fpbits.threshold(32, 1e-3 / 40), 32 - (4 - 1) // 2)
    for row, bits in zip(out, decoded, strict=True):
        counts = [int((bits == fp).sum()) for fp in fps]
        best = int(np.argmax(counts))  # first maximum, like identify
        assert (row["nearest"], row["matches"]) == (f"u{best}", counts[best])
        assert row["verified"] == (counts[best] >= t)
        assert row["name"] == (f"u{best}" if counts[best] >= t else None)
        # bits.closest over the JSON entries agrees on the match count
        assert fpbits.closest(bits, reg.as_json_entries())["matches"] == counts[best]


def test_identify_is_fast_for_a_large_registry(tmp_path: Path) -> None:
    import time

    reg = Registry.create(tmp_path / "r.h5", 128, RUN)
    rng = np.random.default_rng(0)
    fps = rng.integers(0, 2, (1000, 128), dtype=np.uint8)
    for i, fp in enumerate(fps):
        reg.entries.append(regmod.RegistryEntry(f"u{i}", fp, "2024-01-01T00:00:00Z", ""))
    decoded = fps[rng.integers(0, 1000, 10000)]
    start = time.perf_counter()
    out = reg.identify(decoded, fpr=1e-6)
    assert time.perf_counter() - start < 5
    assert all(row["verified"] and row["matches"] == 128 for row in out)


def test_identify_rejects_bad_input(tmp_path: Path) -> None:
    reg = _three(tmp_path / "r.h5")
    with pytest.raises(GantkError, match="128-bit"):
        reg.identify(np.zeros((2, 64), dtype=np.uint8), 1e-3)
    with pytest.raises(GantkError, match="only 0 and 1"):
        reg.identify(np.full((2, 128), 0.5), 1e-3)


# --------------------------------------------------------------------------- read_entries


def test_read_registry_reads_h5(tmp_path: Path) -> None:
    reg = _three(tmp_path / "r.h5")
    path = reg.save()
    entries = regmod.read_entries(path)
    assert [e["name"] for e in entries] == ["alice", "bob", "carol-2"]
    assert all(e["bits"] == 128 for e in entries)
    for entry, fp in zip(entries, reg.fingerprints(), strict=True):
        assert np.array_equal(fpbits.parse(entry["fingerprint"], 128), fp)
    found = fpbits.closest(_flip(reg.entries[2].fingerprint, 5), entries)
    assert found["name"] == "carol-2" and found["matches"] == 123
    # odd lengths survive the hex round trip too
    odd = Registry.create(tmp_path / "odd.hdf5", 10, RUN)
    odd.add("x", np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1]))
    odd.save()
    (entry,) = regmod.read_entries(tmp_path / "odd.hdf5")
    assert fpbits.parse(entry["fingerprint"], 10).tolist() == [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    with pytest.raises(GantkError, match="checksum"):
        with h5py.File(path, "r+") as f:
            f["names"][0] = "eve"
        regmod.read_entries(path)


# --------------------------------------------------------------------------- failed saves


def test_failed_save_leaves_existing_registry_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.h5"
    reg = _three(path)
    reg.save()
    before = path.read_bytes()

    def half_written(tmp: Path, *args: object) -> None:
        tmp.write_bytes(b"\x89HDF\r\n\x1a\n half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(regmod, "write_h5", half_written)
    reg.add("dave", reg.draw("dave", np.random.default_rng(4), 16))
    with pytest.raises(
        GantkError, match=r"No space left on device.*previous registry is unchanged"
    ):
        reg.save()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.h5"]  # the partial file is gone
    assert Registry.open(path).names() == ["alice", "bob", "carol-2"]

    # A bug (not an OSError) propagates as itself, and still leaves the registry intact.
    def crash(tmp: Path, *args: object) -> None:
        tmp.write_bytes(b"junk")
        raise RuntimeError("boom")

    monkeypatch.setattr(regmod, "write_h5", crash)
    with pytest.raises(RuntimeError, match="boom"):
        reg.save()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.h5"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    path = _three(folder / "r.h5").save()
    before = path.read_bytes()
    reg = Registry.open(path)
    reg.add("dave", reg.draw("dave", np.random.default_rng(4), 16))
    folder.chmod(0o500)
    try:
        with pytest.raises(GantkError, match="cannot write registry"):
            reg.save()
    finally:
        folder.chmod(0o700)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- the keyed seal


def _swap_first_two(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        fps = np.array(f["fingerprints"][...])
        f["fingerprints"][0], f["fingerprints"][1] = fps[1], fps[0]


def _plain_sha256_of(path: Path, fmt: int) -> str:
    """What an attacker without the key can compute: the old, unkeyed checksum."""
    import hashlib

    reg_entries = []
    with h5py.File(path, "r") as f:
        names = [str(s) for s in f["names"].asstr()[...]]
        times = [str(s) for s in f["created"].asstr()[...]]
        hashes = [str(s) for s in f["instance_sha256"].asstr()[...]]
        for i, name in enumerate(names):
            fp = np.asarray(f["fingerprints"][i], dtype=np.uint8)
            reg_entries.append(regmod.RegistryEntry(name, fp, times[i], hashes[i]))
        text = regmod.content(fmt, int(f.attrs["bits"]), str(f.attrs["run"]),
                               str(f.attrs["created"]), str(f.attrs["gantk.version"]),
                               reg_entries)  # fmt: skip
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def test_swapping_users_cannot_be_resealed_without_the_key(tmp_path: Path) -> None:
    """Issue: anyone who could write the file could swap two users and recompute an unkeyed
    checksum, framing a user. With the keyed seal the forgery is refused."""
    path = _three(tmp_path / "r.h5").save()
    _swap_first_two(path)
    with h5py.File(path, "r+") as f:
        f.attrs["checksum"] = _plain_sha256_of(path, 2)
    with pytest.raises(GantkError, match=r"changed outside gantk \(checksum mismatch\)"):
        Registry.open(path)
    # ...nor by rewriting it as a format 1 registry, whose checksum was that plain hash
    with h5py.File(path, "r+") as f:
        f.attrs["gantk.format"] = 1
        f.attrs["checksum"] = _plain_sha256_of(path, 1)
    with pytest.raises(GantkError, match=r"unkeyed checksum .* that anyone who can write it"):
        Registry.open(path)


def test_missing_and_wrong_keys_have_their_own_messages(tmp_path: Path, monkeypatch) -> None:
    path = _three(tmp_path / "r.h5").save()
    monkeypatch.setenv("GANTK_REGISTRY_KEY_FILE", str(tmp_path / "nowhere" / "k"))
    with pytest.raises(GantkError, match=r"no registry key here .*GANTK_REGISTRY_KEY"):
        Registry.open(path)
    monkeypatch.setenv("GANTK_REGISTRY_KEY", "another-key-of-enough-length")
    with pytest.raises(GantkError, match=r"was sealed with the key [0-9a-f]{16}, the registry key"):
        Registry.open(path)
    monkeypatch.setenv("GANTK_REGISTRY_KEY", "short")
    with pytest.raises(GantkError, match="shorter than 16 characters"):
        Registry.open(path)


def test_the_key_file_is_made_private_once(tmp_path: Path, monkeypatch, capsys) -> None:
    key = tmp_path / "cfg" / "gantk" / "registry.key"
    monkeypatch.setenv("GANTK_REGISTRY_KEY_FILE", str(key))
    _three(tmp_path / "r.h5").save()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_text().strip()) == 64
    assert f"made a registry key at {key}" in capsys.readouterr().err
    first = key.read_text()
    _three(tmp_path / "s.h5").save()
    assert key.read_text() == first and "made a registry key" not in capsys.readouterr().err
    from gantk.fingerprint.scalable.registry_key import key_id

    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["key_id"] == key_id(first.strip().encode())


def test_a_trusted_format_1_registry_is_sealed_on_save(tmp_path: Path, monkeypatch) -> None:
    path = _three(tmp_path / "r.h5").save()
    with h5py.File(path, "r+") as f:  # make it what gantk wrote before the keyed seal
        f.attrs["gantk.format"] = 1
        del f.attrs["key_id"]
    with h5py.File(path, "r+") as f:
        f.attrs["checksum"] = _plain_sha256_of(path, 1)
    monkeypatch.setenv("GANTK_TRUST_UNSEALED_REGISTRY", "1")
    old = Registry.open(path)
    assert old.names() == ["alice", "bob", "carol-2"]
    old.add("dave", old.draw("dave", np.random.default_rng(3), 16))
    old.save()
    with h5py.File(path, "r") as f:
        assert int(f.attrs["gantk.format"]) == 2 and len(f.attrs["key_id"]) == 16
    monkeypatch.delenv("GANTK_TRUST_UNSEALED_REGISTRY")
    assert Registry.open(path).names() == ["alice", "bob", "carol-2", "dave"]
