"""Plan signatures: an HMAC-SHA256 key kept in the aishell home, made on first use.

A saved plan is signed with the home's key, so `aishell apply` runs only plans this
home made, unchanged. The key is 32 random bytes stored as hex in a file only its
owner may read; a key id (the first 16 hex digits of the key's sha256) names it in
each plan without revealing it. Rotating the key replaces it: plans signed with the
old one are refused from then on. Old keys are never kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aishell.errors import PlanError
from aishell.files import (
    KEY_LIMIT,
    check_replaceable,
    fsync_dir,
    make_private_dirs,
    read_regular,
)

KEY_FILE = "plan-signing.key"
ALGORITHM = "hmac-sha256"
KEY_BYTES = 32


@dataclass(frozen=True)
class SigningKey:
    path: Path
    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id(self.secret)


def key_id(secret: bytes) -> str:
    """The name a plan gives its key: the first 16 hex digits of the key's sha256."""
    return hashlib.sha256(secret).hexdigest()[:16]


def key_path(home: Path) -> Path:
    return home / KEY_FILE


def load_key(home: Path, *, create: bool = True) -> SigningKey | None:
    """The home's signing key, made on first use when `create`; None when absent."""
    path = key_path(home)
    if not os.path.lexists(path):
        if not create:
            return None
        _create(path)
    return _read(path)


def rotate_key(home: Path) -> tuple[SigningKey, str | None]:
    """Replace the home's key with a new one; returns it and the id of the one replaced."""
    path = key_path(home)
    previous: str | None = None
    # The old key's id is only reported; a damaged or too-open old key is replaced anyway.
    with contextlib.suppress(OSError, ValueError, PlanError):
        previous = key_id(_decode(read_regular(path, KEY_LIMIT, "Key", PlanError).decode()))
    make_private_dirs(home, 0o700)
    # Renamed only over a regular file: a link, a folder or a device stays, refused.
    check_replaceable(path, "Signing key", PlanError)
    temporary = _write_temporary(path, secrets.token_bytes(KEY_BYTES))
    try:
        check_replaceable(path, "Signing key", PlanError)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return _read(path), previous


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, compact separators."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(key: SigningKey, body: Mapping[str, Any]) -> dict[str, str]:
    """A plan's signature over `body` (every field of the plan but the signature)."""
    value = hmac.new(key.secret, canonical(body), hashlib.sha256).hexdigest()
    return {"alg": ALGORITHM, "key_id": key.key_id, "value": value}


def verify(
    key: SigningKey | None,
    home: Path,
    body: Mapping[str, Any],
    signature: Mapping[str, Any],
    where: str,
) -> None:
    """Refuse, in one line starting with `where`, a signature this home's key did not make."""
    if signature.get("alg") != ALGORITHM:
        raise PlanError(
            f"{where} is signed with {signature.get('alg')!r}; aishell signs plans with {ALGORITHM}"
        )
    signed_by = signature.get("key_id")
    if key is None:
        raise PlanError(
            f"{where} is signed by another key ({signed_by}); this home has no signing key "
            f"({key_path(home)}): make the plan again here with `aishell plan ... --out`"
        )
    if signed_by != key.key_id:
        raise PlanError(
            f"{where} is signed by another key ({signed_by}), not this home's ({key.key_id}): "
            "it was made in another aishell home or before `aishell plan rotate-key`; "
            "make the plan again here"
        )
    expected = hmac.new(key.secret, canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), str(signature.get("value")).encode()):
        raise PlanError(
            f"{where} does not match its signature: it was changed after it was signed; "
            "make the plan again"
        )


def _read(path: Path) -> SigningKey:
    # A link is not followed: the key is the home's own file, nothing it points to.
    check_replaceable(path, "Signing key", PlanError)
    try:
        secret = read_regular(path, KEY_LIMIT, "Signing key", PlanError)
    except FileNotFoundError:
        raise PlanError(f"Signing key {path} is gone; run `aishell plan rotate-key`") from None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    # Anyone who can read the key can sign plans that apply here.
    if mode & 0o077:
        raise PlanError(
            f"Signing key {path} is readable by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        return SigningKey(path, _decode(secret.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        raise PlanError(
            f"Signing key {path} is damaged; run `aishell plan rotate-key` to make a new one"
        ) from None


def _decode(text: str) -> bytes:
    secret = bytes.fromhex(text.strip())
    if len(secret) != KEY_BYTES:
        raise ValueError("wrong key length")
    return secret


def _create(path: Path) -> None:
    """Make the key file once: written whole under a temporary name, then linked into
    place, so a process racing this one reads either no key or the whole key."""
    make_private_dirs(path.parent, 0o700)
    temporary = _write_temporary(path, secrets.token_bytes(KEY_BYTES))
    try:
        os.link(temporary, path)
        fsync_dir(path.parent)
    except FileExistsError:
        pass  # another process made it first (or something else is there: _read says)
    finally:
        temporary.unlink()


def _write_temporary(path: Path, secret: bytes) -> Path:
    """A new 0600 file beside `path` holding the key, flushed to disk."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        os.write(fd, (secret.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return temporary


__all__ = [
    "ALGORITHM",
    "KEY_FILE",
    "SigningKey",
    "canonical",
    "key_id",
    "key_path",
    "load_key",
    "rotate_key",
    "sign",
    "verify",
]
