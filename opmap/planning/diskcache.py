"""A per-user cache of what does not change between runs (rewritten rule bytecode, traced decompositions).

Entries are files named by the hash of everything they depend on, so a changed source is a
new entry, never a stale one. Writers write a temporary file and rename it (safe under
concurrent runs); an entry that fails its checksum or does not load is ignored and rewritten.
``$OPMAP_CACHE_DIR`` moves the cache (default: the platform's user cache dir, e.g.
``~/.cache/opmap``); ``OPMAP_NO_CACHE=1`` turns every cache off, the in-process ones included.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_SUM = 32  # sha256 of the payload, in front of it


def enabled() -> bool:
    return os.environ.get("OPMAP_NO_CACHE", "") in ("", "0")


def cache_dir() -> Path:
    custom = os.environ.get("OPMAP_CACHE_DIR")
    if custom:
        return Path(custom)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("opmap", appauthor=False))


def key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _path(kind: str, name: str) -> Path:
    return cache_dir() / kind / name


def load(kind: str, name: str) -> bytes | None:
    """The payload of an entry, or None (absent, unreadable, or failing its checksum)."""
    if not enabled():
        return None
    try:
        data = _path(kind, name).read_bytes()
    except OSError:
        return None
    payload = data[_SUM:]
    return payload if len(data) > _SUM and hashlib.sha256(payload).digest() == data[:_SUM] else None


def store(kind: str, name: str, payload: bytes) -> None:
    """Write an entry atomically; a cache that cannot be written is no error (the run just is not faster)."""
    if not enabled():
        return
    target = _path(kind, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
