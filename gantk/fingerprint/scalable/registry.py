"""The secret registry of scalable fingerprints: which user received which fingerprint.

With scalable fingerprints (Yu et al., ICLR 2022) one GAN training run yields a decoder and a
generator that can be instantiated with any fingerprint (a bit string); every user gets a
generator instance carrying their own. The model owner keeps a registry *user name <->
fingerprint* so that, when a fake surfaces, the bits decoded from it point to the user whose
instance made it.

The registry is an HDF5 file (``.h5``)::

    attrs:  gantk.kind = "fingerprint-registry", gantk.format = 1, gantk.version,
            bits (int), run (the training run / decoder the fingerprints belong to, e.g. the
            SHA-256 of the decoder checkpoint), created (ISO-8601 UTC), checksum
    names            (M,)       utf-8 strings, unique, usable as file names
    fingerprints     (M, bits)  uint8 0/1
    created          (M,)       ISO-8601 UTC strings, when each user was registered
    instance_sha256  (M,)       SHA-256 of the generator file shipped to each user, or ""

``checksum`` is an HMAC-SHA256, under a key kept apart from the registry
(:mod:`gantk.fingerprint.scalable.registry_key`; its id is the ``key_id`` attribute), over a
canonical serialization of everything else. An edit made outside gantk (a flipped bit, two
users swapped, a renamed user) is caught when the registry is opened, also when made on purpose
by someone who can write the file but does not hold the key: they cannot recompute the seal. It
does not stop the key's holder, nor deleting the file. Format 1 registries (a plain SHA-256,
which whoever writes the file can recompute) open only with GANTK_TRUST_UNSEALED_REGISTRY=1,
since a sealed registry rewritten as format 1 would otherwise pass; the next save seals them
with the key.
Secrecy comes from the file mode: the registry is written 0600, because anyone who reads it can
tell which fingerprint to forge to frame a user.

Identification tests the decoded bits against *every* registered fingerprint, so the
per-fingerprint false-positive rate is ``fpr / M`` (Bonferroni): the chance that a string of
random bits verifies as *any* registered user stays at most ``fpr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gantk.errors import GantkError
from gantk.fingerprint.bits import hamming, nearest, p_value, read_registry, threshold, to_hex
from gantk.fingerprint.scalable.registry_file import (
    FORMAT,
    KIND,
    RegistryEntry,
    attr_str,
    content,
    stored_checksum,
    strings,
    write_h5,
)
from gantk.fingerprint.scalable.registry_key import key_id, registry_key, same_seal, seal
from gantk.io.atomic import missing_top, remove_empty_folders
from gantk.io.datasets import print_warning
from gantk.io.safefile import exclusive, replace_file

TRUST_UNSEALED_ENV = "GANTK_TRUST_UNSEALED_REGISTRY"

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def default_min_distance(bits: int) -> int:
    """``bits // 8`` (16 for 128 bits), at least 1.

    Nearest-entry identification cannot confuse two users while a decoded string has fewer than
    half this many wrong bits (``bits / 16``, i.e. at least 93.75 % bit accuracy). Random 128-bit
    fingerprints are closer than 16 bits with probability ~1e-20, so :meth:`Registry.draw` never
    has to retry in practice; the check catches duplicated or hand-picked fingerprints and makes
    short fingerprints fill up visibly instead of silently becoming ambiguous.
    """
    return max(1, bits // 8)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(a: str, b: str) -> tuple[str, str]:
    """Prefixes of two run identifiers, 12 characters or as many as it takes to tell them
    apart (run identifiers need not be hashes, and may share a long prefix)."""
    n = 12
    while n < max(len(a), len(b)) and a[:n] == b[:n]:
        n += 4
    return a[:n], b[:n]


def _as_bits(array: np.ndarray, what: str) -> np.ndarray:
    """Any 0/1 (or bool) array -> uint8; anything else is a user error."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size and not np.isin(array, (0, 1)).all():
        raise GantkError(f"{what} must hold only 0 and 1 bits")
    return array.astype(np.uint8)


# How long a command waits for another one that is changing the same registry.
LOCK_WAIT_S = 60.0


@contextlib.contextmanager
def locked(path: str | Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the registry at ``path`` for a read-modify-write against other gantk processes.

    The lock is a file beside the registry (:func:`gantk.io.safefile.exclusive`; the registry
    itself is replaced by a rename at each save, so a lock on it would lock a file no one else
    opens). The folder is created if missing, as the save would. Without it, two commands
    adding users could each write instances and the one whose save lost would delete files the
    other had registered.
    """
    folder = Path(path).expanduser().absolute().parent
    made = missing_top(folder)  # removed again if still empty at the end
    try:
        with contextlib.ExitStack() as stack:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                stack.enter_context(exclusive(
                    folder / f".{Path(path).name}.lock",
                    LOCK_WAIT_S if wait_s is None else wait_s,
                    lambda: GantkError(f"registry {path} is being changed by another gantk "
                                       "process; run the command again when it has finished"),
                    what="registry lock", poll=0.1,
                ))  # fmt: skip
            except OSError as exc:
                raise GantkError(
                    f"cannot use the folder of registry {path} ({exc.strerror}); choose another "
                    "--registry"
                ) from exc
            yield
    finally:
        remove_empty_folders(folder, made)  # a refused command leaves no empty folder


class Registry:
    """A registry of user fingerprints for one training run, loaded fully in memory.

    Changes (:meth:`add`) stay in memory until :meth:`save`, which replaces the file
    atomically; a failed save leaves the previous file as it was.
    """

    def __init__(
        self, path: str | Path, bits: int, run: str, created: str,
        entries: list[RegistryEntry], base: str | None,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.bits = bits
        self.run = run
        self.created = created
        self.entries = entries
        # Checksum of the file this object was loaded from ("" = expect no file, None = don't
        # check): save() refuses to overwrite a registry another process saved meanwhile.
        self._base = base
        # Fingerprints handed out by draw() but not yet added, by user name.
        self._drawn: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, path: str | Path, bits: int, run: str) -> Registry:
        """A new, empty registry, in memory until :meth:`save` (which replaces any file at
        ``path``: whether that is wanted is the caller's decision)."""
        return cls(path, _check_bits(bits), _check_run(run), _now(), [], base=None)

    @classmethod
    def open(cls, path: str | Path) -> Registry:
        """Load and validate a registry: kind, format, shapes, values and checksum."""
        import h5py

        from gantk.io.files import check_regular

        path = Path(path)
        # First: a clear message for a missing file, a folder, a FIFO or a device (which h5py
        # would report as "not HDF5", or wait on forever).
        check_regular(path, "registry")
        try:
            f = h5py.File(path, "r")
        except OSError:
            raise GantkError(
                f"{path} is not a readable fingerprint registry (not HDF5, or truncated); "
                "restore it from a backup"
            ) from None
        try:
            with f:
                kind = f.attrs.get("gantk.kind")
                if isinstance(kind, bytes):
                    kind = kind.decode("utf-8", "replace")
                if kind != KIND:
                    found = f"holds {kind!r}" if kind is not None else "has no gantk.kind"
                    raise GantkError(
                        f"{path} is not a fingerprint registry ({found}); give a registry .h5"
                    )
                fmt = int(f.attrs["gantk.format"])
                if fmt > FORMAT:
                    raise GantkError(
                        f"registry {path} has format {fmt}, newer than this gantk reads "
                        f"({FORMAT}); upgrade gantk"
                    )
                version = attr_str(f.attrs, "gantk.version")
                bits = int(f.attrs["bits"])
                run = attr_str(f.attrs, "run")
                created = attr_str(f.attrs, "created")
                stored = attr_str(f.attrs, "checksum")
                sealed_by = attr_str(f.attrs, "key_id") if fmt >= 2 else None
                names = strings(f["names"])
                fingerprints = np.asarray(f["fingerprints"][...])
                times = strings(f["created"])
                hashes = strings(f["instance_sha256"])
        except GantkError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            # Missing attribute/dataset, wrong type, or unreadable (truncated) data.
            raise GantkError(
                f"registry {path} is damaged ({type(exc).__name__}: {exc}); "
                "restore it from a backup"
            ) from None
        count = len(names)
        if (
            bits < 1
            or fingerprints.shape != (count, bits)
            or len(times) != count
            or len(hashes) != count
            or (fingerprints.size and fingerprints.max() > 1)
        ):
            raise GantkError(
                f"registry {path} is damaged (inconsistent shapes or values); "
                "restore it from a backup"
            )
        fingerprints = fingerprints.astype(np.uint8)
        entries = []
        for i in range(count):
            fp = fingerprints[i].copy()
            fp.setflags(write=False)
            entries.append(RegistryEntry(names[i], fp, times[i], hashes[i]))
        text = content(fmt, bits, run, created, version, entries)
        if fmt == 1:
            # Anyone who can write the file can forge this checksum, also by rewriting a sealed
            # registry as format 1: opened only when the user vouches for the copy.
            if os.environ.get(TRUST_UNSEALED_ENV) != "1":
                raise GantkError(
                    f"registry {path} has an unkeyed checksum (format 1, from an older gantk) "
                    "that anyone who can write it can forge; if this copy is trusted, run the "
                    f"command once with {TRUST_UNSEALED_ENV}=1 and a later save seals it"
                )
            expected = hashlib.sha256(text.encode("ascii")).hexdigest()
        else:
            key = registry_key()
            if key_id(key) != sealed_by:
                raise GantkError(
                    f"registry {path} was sealed with the key {sealed_by}, the registry key here "
                    f"is {key_id(key)}; use the key that sealed it"
                )
            expected = seal(key, text)
        if not same_seal(expected, stored):
            raise GantkError(
                f"registry {path} was changed outside gantk (checksum mismatch); "
                "restore it from a backup"
            )
        return cls(path, bits, run, created, entries, base=stored)

    @classmethod
    def open_or_create(cls, path: str | Path, bits: int, run: str) -> Registry:
        """The registry at ``path`` if there is one (it must match ``bits`` and ``run``), else a
        new one."""
        path = Path(path)
        bits, run = _check_bits(bits), _check_run(run)
        if not path.exists():
            registry = cls.create(path, bits, run)
            registry._base = ""  # don't overwrite a registry another process creates meanwhile
            return registry
        registry = cls.open(path)
        if registry.bits != bits:
            raise GantkError(
                f"registry {path} holds {registry.bits}-bit fingerprints, this model uses "
                f"{bits} bits; use another registry"
            )
        if registry.run != run:
            theirs, ours = _short(registry.run, run)
            raise GantkError(
                f"registry {path} holds fingerprints of training run {theirs}, this model is "
                f"from run {ours}; use that run's registry or another one"
            )
        return registry

    # ------------------------------------------------------------------ content

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def fingerprints(self) -> np.ndarray:
        """All fingerprints, (M, bits) uint8, in registration order."""
        if not self.entries:
            return np.zeros((0, self.bits), dtype=np.uint8)
        return np.stack([e.fingerprint for e in self.entries]).astype(np.uint8)

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise GantkError(
                f"user name {name!r} cannot be used as a file name; use 1-128 letters, digits, "
                "'-', '_' or '.' (not first)"
            )
        # Case-insensitive: names become file names, and Alice/alice collide on macOS/Windows.
        for existing in self.names():
            if existing.lower() == name.lower():
                same = "" if existing == name else f" (as {existing})"
                raise GantkError(
                    f"user {name} is already in registry {self.path}{same}; choose another name"
                )

    def _others(self, exclude: str | None) -> tuple[list[str], np.ndarray]:
        """Owners and fingerprints (K, bits) that a new fingerprint must keep its distance
        from: the registered ones, then those drawn for other users but not yet added."""
        others = [(e.name, e.fingerprint) for e in self.entries]
        others += [(n, fp) for n, fp in self._drawn.items() if n != exclude]
        if not others:
            return [], np.zeros((0, self.bits), dtype=np.uint8)
        return [n for n, _ in others], np.stack([fp for _, fp in others])

    def add(
        self,
        name: str,
        fingerprint: np.ndarray,
        instance_sha256: str = "",
        min_distance: int | None = None,
    ) -> RegistryEntry:
        """Register ``name`` with ``fingerprint`` (in memory until :meth:`save`).

        Refuses a name unusable as a file name or already registered, a fingerprint of another
        length, and one closer than ``min_distance`` bits (default :func:`default_min_distance`;
        at least 1, so never an identical one) to a registered fingerprint.
        """
        self._check_name(name)
        fp = _as_bits(fingerprint, "a fingerprint").ravel()
        if fp.shape != (self.bits,):
            raise GantkError(
                f"fingerprint for {name} has {fp.size} bits but registry {self.path} holds "
                f"{self.bits}-bit fingerprints; give {self.bits} bits"
            )
        sha = (instance_sha256 or "").strip().lower()
        if sha and not _SHA256.fullmatch(sha):
            raise GantkError(
                f"instance SHA-256 {instance_sha256!r} is not 64 hex digits; give the hash of "
                "the shipped generator file or leave it empty"
            )
        minimum = max(1, default_min_distance(self.bits) if min_distance is None else min_distance)
        # Only registered fingerprints count here: a fingerprint drawn for someone else but not
        # yet added is not a reason to refuse an explicit add.
        dist = hamming(fp[None, :], self.fingerprints())[0]
        if dist.size and dist.min() < minimum:
            i = int(dist.argmin())
            raise GantkError(
                f"fingerprint for {name} is {int(dist[i])} bits from user "
                f"{self.entries[i].name}'s (minimum {minimum}); draw another fingerprint"
            )
        fp = fp.copy()
        fp.setflags(write=False)
        entry = RegistryEntry(name, fp, _now(), sha)
        self.entries.append(entry)
        self._drawn.pop(name, None)
        return entry

    def draw(
        self, name: str, rng: np.random.Generator, min_distance: int, max_tries: int = 1000
    ) -> np.ndarray:
        """A random fingerprint for ``name`` at least ``min_distance`` bits from every
        registered fingerprint and every one drawn for another user and not yet added.

        Does not register it: pass it to :meth:`add` (with the same ``min_distance``) once the
        generator instance exists. ``name`` is checked now so that no work is wasted on a name
        that :meth:`add` would refuse.
        """
        self._check_name(name)
        if min_distance > self.bits:
            raise GantkError(
                f"minimum distance {min_distance} exceeds the {self.bits} bits of a fingerprint; "
                "give a smaller minimum distance"
            )
        owners, others = self._others(exclude=name)
        tried = 0
        while tried < max_tries:
            # Candidates in batches: one matmul against all others instead of one per try.
            count = min(64, max_tries - tried)
            candidates = rng.integers(0, 2, (count, self.bits), dtype=np.uint8)
            ok = np.flatnonzero((hamming(candidates, others) >= min_distance).all(axis=1))
            if len(ok):
                fp = candidates[ok[0]].copy()
                fp.setflags(write=False)
                self._drawn[name] = fp
                return fp.copy()
            tried += count
        raise GantkError(
            f"no fingerprint for {name} at least {min_distance} bits from the "
            f"{len(owners)} others in {max_tries} tries: registry {self.path} is too full "
            f"for {self.bits}-bit fingerprints; lower the minimum distance or use another "
            "registry with longer fingerprints"
        )

    def as_json_entries(self) -> list[dict]:
        """The entries of a JSON registry (:func:`gantk.fingerprint.bits.read_registry`)."""
        return [
            {"name": e.name, "fingerprint": to_hex(e.fingerprint), "bits": self.bits}
            for e in self.entries
        ]

    # ------------------------------------------------------------------ identification

    def threshold(self, fpr: float) -> int:
        """Matching bits needed to verify a user, the stricter of two bounds:

        - ``bits.threshold(bits, fpr / M)``: random bits verify as *any* of the M users with
          probability at most ``fpr``;
        - ``bits - (d - 1) // 2`` with d = :func:`default_min_distance`, the registry's spacing:
          within that many errors a decoded string is nearer its own fingerprint than any
          other, so a verified match can never name the wrong user (121 of 128 bits, the
          paper's threshold).
        """
        chance = threshold(self.bits, fpr / max(1, len(self.entries)))
        unique = self.bits - (default_min_distance(self.bits) - 1) // 2
        return max(chance, unique)

    def identify(self, decoded: np.ndarray, fpr: float) -> list[dict]:
        """The nearest registered user for each row of ``decoded`` ((N, bits) or (bits,) 0/1).

        Per row: ``nearest`` (the user with the most matching bits; ties go to the earliest
        registered; None for an empty registry), ``matches``, ``bit_accuracy``, ``p_value``
        (one-sided binomial, :func:`bits.p_value`), ``p_value_corrected`` (Bonferroni over the
        M users), ``threshold`` (:meth:`threshold`), ``verified`` (``matches >= threshold``, which
        implies ``p_value_corrected <= fpr``) and ``name``: ``nearest`` when verified, else None
        (no match).
        """
        count = len(self.entries)
        limit = self.threshold(fpr)
        rows = _as_bits(decoded, "decoded bits")
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.bits:
            raise GantkError(
                f"decoded bits have shape {tuple(np.shape(decoded))} but registry {self.path} "
                f"holds {self.bits}-bit fingerprints; decode with this run's decoder"
            )
        n = len(rows)
        best, matches = nearest(rows, self.fingerprints())
        pvals = np.asarray(p_value(matches, self.bits), dtype=float).reshape(n)
        corrected = np.minimum(1.0, pvals * max(1, count))
        verified = (matches >= limit) if count else np.zeros(n, dtype=bool)
        names = self.names()
        result = []
        for i in range(n):
            closest = names[best[i]] if count else None
            result.append({
                "name": closest if verified[i] else None,
                "nearest": closest,
                "matches": int(matches[i]),
                "bit_accuracy": float(matches[i]) / self.bits,
                "p_value": float(pvals[i]),
                "p_value_corrected": float(corrected[i]),
                "threshold": limit,
                "verified": bool(verified[i]),
            })  # fmt: skip
        return result

    # ------------------------------------------------------------------ saving

    def save(self) -> Path:
        """Write the registry atomically with mode 0600; returns its path.

        The file is built under a temporary name beside the target and renamed into place only
        once complete, so a failure leaves the previous registry (or none) untouched. Refuses
        to overwrite a registry that another process saved since this one was opened.
        """
        from gantk import __version__

        target = self.path
        if self._base is not None:
            current = stored_checksum(target) if target.exists() else ""
            if current != self._base:
                raise GantkError(
                    f"registry {target} was changed by someone else since it was opened; "
                    "run the command again"
                )
        version = str(__version__)
        key = registry_key(create=True, warn=print_warning)
        text = content(FORMAT, self.bits, self.run, self.created, version, self.entries)
        checksum = seal(key, text)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # 0600 from the file's creation on: a reader who opened it in between would keep
            # reading after a later chmod (permissions are checked at open only).
            with replace_file(target, mode=0o600) as tmp:
                write_h5(tmp, self, checksum, version, key_id(key))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise GantkError(
                f"cannot write registry {target} ({reason}); the previous registry is "
                "unchanged; free space or fix permissions and try again"
            ) from exc
        self._base = checksum
        return target


def read_entries(path: str | Path) -> list[dict]:
    """The entries of any fingerprint registry as JSON entries (name, hex fingerprint, bits):
    an ``.h5`` registry of scalable fingerprints (opened and checked by :meth:`Registry.open`)
    or a JSON one (:func:`gantk.fingerprint.bits.read_registry`)."""
    if Path(path).suffix.lower() in {".h5", ".hdf5"}:
        return Registry.open(path).as_json_entries()
    return read_registry(path)


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise GantkError(f"fingerprint length must be a positive number of bits, got {bits!r}")
    return int(bits)


def _check_run(run: str) -> str:
    if not isinstance(run, str) or not run.strip() or "\n" in run:
        raise GantkError(
            "a registry needs the training run it belongs to (e.g. the SHA-256 of the decoder "
            "checkpoint) as one non-empty line"
        )
    return run.strip()
