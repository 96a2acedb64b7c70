"""Fingerprint bit strings and the statistics of decoding them.

A fingerprint of n bits is written as hex (``0x`` + ceil(n/4) digits, most significant bit
first, unused leading bits zero) or as a string of n 0/1 characters.

Under the null hypothesis (an image that does not carry the fingerprint), each decoded bit
matches with probability 1/2 independently, so the number of matches k of n bits is
Binomial(n, 1/2); the p-value of k matches is P(X >= k). A detection threshold for a target
false-positive rate is the smallest k whose p-value is at most that rate.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from gantk.errors import GantkError


def to_hex(bits: np.ndarray) -> str:
    """0/1 array -> ``0x…`` (most significant bit first)."""
    bits = np.asarray(bits).astype(np.uint8).ravel()
    width = math.ceil(len(bits) / 4)
    value = int("".join(map(str, bits)) or "0", 2)
    return f"0x{value:0{width}x}"


def parse(text: str, length: int) -> np.ndarray:
    """``0x…`` hex or a 0/1 string of exactly ``length`` bits -> uint8 array."""
    raw = text.strip().lower().replace("_", "")
    if raw.startswith("0x"):
        digits = raw[2:]
        width = math.ceil(length / 4)
        try:
            value = int(digits, 16)
        except ValueError:
            raise GantkError(f"fingerprint {text!r} is not valid hex") from None
        if len(digits) != width or value >> length:
            raise GantkError(
                f"fingerprint {text!r} does not hold {length} bits: give 0x and {width} hex "
                f"digits (or {length} 0/1 characters)"
            )
        return np.array([int(c) for c in format(value, f"0{length}b")], dtype=np.uint8)
    if raw and set(raw) <= {"0", "1"}:
        if len(raw) != length:
            raise GantkError(
                f"fingerprint has {len(raw)} bits but the model uses {length}; give exactly "
                f"{length} 0/1 characters or 0x and {math.ceil(length / 4)} hex digits"
            )
        return np.array([int(c) for c in raw], dtype=np.uint8)
    raise GantkError(
        f"fingerprint {text!r} is neither hex (0x…) nor binary (0/1); give one of those"
    )


def random_bits(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, length, dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _upper_tail(length: int) -> np.ndarray:
    """P(X >= k) for X ~ Binomial(length, 1/2), k = 0..length, in float64.

    Summed in log space (log C(n, i) as a running sum of log((n - i + 1) / i), then a reversed
    running log-add), so tails far below 1e-308 of a single term do not underflow early.
    Against scipy's binom.sf: within 4e-14 relative at 128 bits, 9e-13 at 1000, 3e-11 at
    20000. numpy only: scipy.stats took 2 s to import, longer than decoding 200 images."""
    i = np.arange(1, length + 1, dtype=np.float64)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log((length - i + 1) / i))])
    log_pmf = log_comb - length * math.log(2.0)
    return np.exp(np.logaddexp.accumulate(log_pmf[::-1])[::-1])


def p_value(matches: int | np.ndarray, length: int | np.ndarray) -> np.ndarray:
    """P(X >= matches) for X ~ Binomial(length, 1/2)."""
    matches, length = np.broadcast_arrays(np.asarray(matches), np.asarray(length))
    out = np.empty(matches.shape, dtype=np.float64)
    for n in np.unique(length):
        n = int(n)
        where = length == n
        k = matches[where].astype(np.int64)
        tail = _upper_tail(n)
        out[where] = np.where(k <= 0, 1.0, np.where(k > n, 0.0, tail[np.clip(k, 0, n)]))
    return out if out.ndim else out[()]


def threshold(length: int, fpr: float) -> int:
    """Smallest number of matching bits whose p-value is at most ``fpr`` (length + 1 if none:
    then no image can be declared fingerprinted at that rate)."""
    if not 0 < fpr < 1:
        raise GantkError(f"--fpr must be in (0, 1), got {fpr}")
    passing = np.flatnonzero(_upper_tail(length) <= fpr)  # tails decrease with k
    return int(passing[0]) if passing.size else length + 1


def majority(decoded: np.ndarray) -> np.ndarray:
    """Per-bit majority vote over images (ties go to 1)."""
    return (np.asarray(decoded).mean(axis=0) >= 0.5).astype(np.uint8)


# A JSON registry larger than this is no list of fingerprints gantk wrote (a million 256-bit
# entries take ~100 MB); refused before it is read.
MAX_REGISTRY_BYTES = 256 * 2**20
REGISTRY_SHAPE = "JSON with a 'fingerprints' list of name/fingerprint/bits entries"
# The longest fingerprint any gantk model embeds (stego and scalable models: 1..4096 bits).
MAX_BITS = 4096


def read_registry(path: str | Path) -> list[dict]:
    """A JSON fingerprint registry: ``{"fingerprints": [{"name": …, "fingerprint": "0x…",
    "bits": n}, …]}`` (``gantk fingerprint-embed`` records and scalable-fingerprint user lists
    use the same entries; an ``.h5`` registry of scalable fingerprints gives the same entries
    through :func:`gantk.fingerprint.scalable.registry.read_entries`). Every entry is checked: a
    name and a fingerprint that are text, ``bits`` a positive whole number the fingerprint
    holds."""
    from gantk.io.files import describe, read_json

    data = read_json(path, "registry", MAX_REGISTRY_BYTES)
    entries = data.get("fingerprints") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise GantkError(f"{path} is not a fingerprint registry ({REGISTRY_SHAPE})")
    fix = "fix the entry or give a registry gantk wrote"
    for i, entry in enumerate(entries):
        where = f"{path} entry {i + 1}"
        if not isinstance(entry, dict) or not {"name", "fingerprint", "bits"} <= set(entry):
            raise GantkError(f"{path} is not a fingerprint registry ({REGISTRY_SHAPE}); {where} "
                             f"is {describe(entry)}")  # fmt: skip
        bits = entry["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise GantkError(f"{where}: bits is {describe(bits)}, not a whole number in "
                             f"1..{MAX_BITS}; {fix}")  # fmt: skip
        if not isinstance(entry["name"], str) or not isinstance(entry["fingerprint"], str):
            raise GantkError(f"{where}: the name and the fingerprint must be text; {fix}")
        try:
            parse(entry["fingerprint"], bits)
        except GantkError as exc:
            raise GantkError(f"{where}: {exc}") from None  # parse says what to write
    return entries


# Bound the (rows x entries) match matrix of nearest() to ~64 MiB of float32 per chunk.
_CHUNK_CELLS = 1 << 24


def hamming(candidates: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Hamming distances (C, K) between 0/1 rows of ``candidates`` (C, bits) and ``others``."""
    if not len(others) or not len(candidates):
        return np.zeros((len(candidates), len(others)), dtype=np.int64)
    a, b = candidates.astype(np.float32), others.astype(np.float32)
    # |a xor b| = a.(1-b) + (1-a).b as two float32 matmuls: exact, since every value <= bits,
    # far below 2**24, and much faster than an (C, K, bits) boolean comparison.
    return np.rint(a @ (1 - b).T + (1 - a) @ b.T).astype(np.int64)


def nearest(rows: np.ndarray, fingerprints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The identification rule of both kinds of fingerprint: for each decoded row (N, bits),
    the fingerprint (of M) with the most matching bits, the earliest on ties, and that count;
    (index (N,), matches (N,)), zeros when there is no fingerprint. Whether the match is
    trusted is the caller's test: the Bonferroni-corrected p-value (``p_value * M``, so that
    searching M fingerprints is accounted for) and, for a registry of scalable fingerprints,
    its verification threshold (:meth:`gantk.fingerprint.scalable.registry.Registry.threshold`)."""
    n, count = len(rows), len(fingerprints)
    best = np.zeros(n, dtype=np.int64)
    matches = np.zeros(n, dtype=np.int64)
    if count:
        bits = fingerprints.shape[1]
        # ±1 encoding: s.t = matches - mismatches, so matches = (s.t + bits) / 2; one exact
        # float32 matmul per chunk of rows keeps N x M large registries fast and bounded.
        signed = 2 * fingerprints.astype(np.float32) - 1
        step = max(1, _CHUNK_CELLS // count)
        for start in range(0, n, step):
            chunk = 2 * rows[start : start + step].astype(np.float32) - 1
            agree = np.rint((chunk @ signed.T + bits) / 2).astype(np.int64)
            best[start : start + step] = agree.argmax(axis=1)  # first maximum on ties
            matches[start : start + step] = agree.max(axis=1)
    return best, matches


def closest(decoded: np.ndarray, registry: list[dict]) -> dict | None:
    """The registry entry with the most matching bits (:func:`nearest`), with its match count,
    p-value, and the p-value corrected for having searched the whole registry."""
    candidates = [entry for entry in registry if int(entry["bits"]) == len(decoded)]
    if not candidates:
        return None
    codes = np.stack([parse(entry["fingerprint"], len(decoded)) for entry in candidates])
    index, matches = nearest(np.asarray(decoded)[None, :], codes)
    entry, count = candidates[int(index[0])], int(matches[0])
    best = {"name": entry["name"], "fingerprint": entry["fingerprint"], "matches": count}
    best["bit_accuracy"] = count / len(decoded)
    best["p_value"] = float(p_value(count, len(decoded)))
    # The best of several candidates matches better than chance more easily: Bonferroni.
    best["p_value_corrected"] = min(1.0, best["p_value"] * len(candidates))
    return best


def folder_test(decoded: np.ndarray, expected: np.ndarray) -> dict:
    """One p-value for a whole set of images, valid when the images are not independent.

    A decoder reading images without the fingerprint is not a fair coin per image: it tends to
    read the same bits from similar images, so pooling all bits of all images as independent
    trials would flag a clean model. What is random under the null is the owner's fingerprint:

    - one fingerprint for all images (``expected`` rows equal): test the per-bit majority vote of
      the decoded bits against it, ``n`` trials;
    - a fingerprint drawn per image: every image's matches are independent coin flips whatever
      the decoder does, so all ``images * n`` bits pool.
    """
    decoded, expected = np.asarray(decoded), np.asarray(expected)
    count, length = expected.shape
    if (expected == expected[0]).all():
        matches = int((majority(decoded) == expected[0]).sum())
        return {"method": "majority vote", "matches": matches, "trials": length,
                "p_value": float(p_value(matches, length))}  # fmt: skip
    matches = int((decoded == expected).sum())
    return {"method": "pooled bits", "matches": matches, "trials": count * length,
            "p_value": float(p_value(matches, count * length))}  # fmt: skip
