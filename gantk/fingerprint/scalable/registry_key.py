"""The key that seals fingerprint registries (an HMAC-SHA256 over their content).

A plain checksum stops accidents but not an adversary: whoever can write the registry can swap
two users' fingerprints, recompute the checksum and frame a user. The MAC needs a secret that
is kept apart from the registry: ``GANTK_REGISTRY_KEY`` (the key itself, for CI and secret
stores) or a key file, ``GANTK_REGISTRY_KEY_FILE`` or by default
``$XDG_CONFIG_HOME/gantk/registry.key`` (``~/.config/gantk/registry.key``), created with mode
0600 the first time a registry is written. The registry records the key's id (a hash of it), so
a missing or wrong key gets its own message, apart from a registry that was tampered with.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from gantk.errors import GantkError

KEY_ENV = "GANTK_REGISTRY_KEY"
KEY_FILE_ENV = "GANTK_REGISTRY_KEY_FILE"
MIN_KEY_CHARS = 16


def key_file() -> Path:
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "gantk" / "registry.key"


def key_id(key: bytes) -> str:
    """A public name for a key: a different hash of it, so it reveals nothing of the key."""
    return hashlib.sha256(b"gantk registry key id\0" + key).hexdigest()[:16]


def seal(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def same_seal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _checked(text: str, where: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_KEY_CHARS:
        raise GantkError(
            f"the registry key in {where} is shorter than {MIN_KEY_CHARS} characters; use a "
            "long random one (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return text.encode("utf-8")


def _create(path: Path, warn: Callable[[str], None] | None) -> bytes:
    text = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return _checked(path.read_text(), str(path))
    except OSError as exc:
        raise GantkError(
            f"cannot create the registry key {path} ({exc.strerror}); set {KEY_ENV} or "
            f"{KEY_FILE_ENV}"
        ) from exc
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    if warn is not None:
        warn(
            f"made a registry key at {path}: back it up, apart from the registries; without "
            "it they cannot be opened"
        )
    return text.encode("utf-8")


def registry_key(create: bool = False, warn: Callable[[str], None] | None = None) -> bytes:
    """The key: from the environment, else the key file (made if ``create`` and absent)."""
    if os.environ.get(KEY_ENV):
        return _checked(os.environ[KEY_ENV], f"${KEY_ENV}")
    path = key_file()
    try:
        return _checked(path.read_text(), str(path))
    except FileNotFoundError:
        if create:
            return _create(path, warn)
        raise GantkError(
            f"no registry key here (no ${KEY_ENV}, no {path}); copy the key that sealed the "
            f"registry to {path} or set {KEY_ENV}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GantkError(f"cannot read the registry key {path} ({exc})") from None
