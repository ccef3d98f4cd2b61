"""What a plan reads from an SQLite catalog, read with the standard library's ``sqlite3`` instead of SQLAlchemy.

``opmap suggest --no-record`` (fp32) only reads the catalog: user rule sources, which strategies map which op, the
measurements, and whether this backend's probe results are recorded. Importing SQLAlchemy and its ORM models costs a
third of a second, as much as loading a small model, so such a run reads those four through :class:`CatalogReader`.
It is used only where the full :class:`opmap.db.Catalog` would do nothing but read: an SQLite file that exists and
can be written (as ``suggest`` checks), migrated by exactly this opmap's migrations, whose shipped strategies and
measurements are already synced (the fingerprint :meth:`Catalog.sync` stores matches). Anything else — another
database, a missing or read-only file, another schema, a catalog to sync — returns None from :meth:`CatalogReader.open`
and the caller opens the full catalog, which migrates, syncs or refuses in its own words. Same rows, same order, same
values (NaN stored as the text ``'NaN'`` read back as a float, as :class:`opmap.db.models.Real` reads it).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from opmap.errors import CatalogError

ENV_VAR = "OPMAP_DB"

# opmap.db.migrations.MIGRATIONS by name (tests/test_api.py checks they agree): a catalog with exactly these is one
# whose schema this module reads
KNOWN_MIGRATIONS = ("0001_initial", "0002_probes", "0003_int8_calibration")


def default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("opmap", appauthor=False)) / "catalog.db"


def resolve_url(url: str | None = None) -> str:
    """``--db`` beats ``$OPMAP_DB`` beats the per-user default. A plain path means SQLite."""
    url = url or os.environ.get(ENV_VAR) or str(default_path())
    if "\x00" in url:  # no file name or URL holds one; the drivers would fail on it later with a bare ValueError
        raise CatalogError(f"bad catalog URL or path {url[:80]!r}: it contains a NUL character")
    if "://" not in url:
        path = Path(url).expanduser()
        try:
            if path.is_dir():
                raise CatalogError(f"catalog path {path} is a directory; give a file path or a SQLAlchemy URL")
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot use {path} as the catalog: {exc.strerror or exc}") from None
        return f"sqlite:///{path}"
    return url


def shipped_fingerprint(strategies: Iterable[Any], measurements_digest: str) -> str:
    """What the shipped state is keyed by: every shipped strategy's identity and the shipped measurements' hash."""
    lines = sorted(f"{s.id}|{s.version}|{s.source_hash}|{s.origin}|{','.join(s.ops)}" for s in strategies)
    return hashlib.sha256("\n".join([*lines, f"measurements|{measurements_digest}"]).encode()).hexdigest()


def shipped_measurements_text() -> tuple[str, str]:
    """The measurements shipped with opmap (opmap/data/measurements.json) and their hash; ("", "") where none are."""
    from importlib import resources

    try:
        text = resources.files("opmap.data").joinpath("measurements.json").read_text()
    except FileNotFoundError:
        return "", ""
    return text, hashlib.sha256(text.encode()).hexdigest()


def _real(value: Any) -> Any:
    return float(value) if isinstance(value, str) else value


class CatalogReader:
    """The reading half of :class:`opmap.db.Catalog` that planning uses, over ``sqlite3``."""

    def __init__(self, url: str, path: Path, conn: sqlite3.Connection) -> None:
        self.url, self.path, self.conn = url, path, conn

    @classmethod
    def open(cls, url: str | None, fingerprint: str) -> "CatalogReader | None":
        """A reader of the catalog at ``url``, or None where the full catalog must open it (see the module's doc)."""
        resolved = resolve_url(url)
        if not resolved.startswith("sqlite:///"):
            return None
        path = Path(resolved[len("sqlite:///"):])
        companions = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm")]
        writable = [path, path.parent] + [p for p in companions if p.exists()]
        if not path.is_file() or not all(os.access(p, os.W_OK) for p in writable):
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=60, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            cur = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'opmap_migrations'")
            if cur.fetchone() is None:
                conn.close()
                return None
            applied = tuple(sorted(name for (name,) in conn.execute("SELECT name FROM opmap_migrations")))
            stored = conn.execute("SELECT value FROM meta WHERE key = 'shipped_fingerprint'").fetchone()
        except sqlite3.Error:
            conn.close()
            return None
        if applied != tuple(sorted(KNOWN_MIGRATIONS)) or stored is None or stored[0] != fingerprint:
            conn.close()
            return None
        return cls(resolved, path, conn)

    def close(self) -> None:
        self.conn.close()

    def user_sources(self) -> list[tuple[str, str]]:
        """:meth:`Catalog.user_sources`."""
        return list(self.conn.execute(
            "SELECT DISTINCT rule_sources.path, rule_sources.text FROM rule_sources JOIN strategies "
            "ON strategies.rule_source_id = rule_sources.id WHERE strategies.origin = 'user'"))

    def candidates_by_op(self) -> dict[str, list[str]]:
        """:meth:`Catalog.candidates_by_op`."""
        out: dict[str, list[str]] = {}
        for op, sid in self.conn.execute(
                "SELECT ops.name, strategies.id FROM ops JOIN strategy_ops ON strategy_ops.op_id = ops.id "
                "JOIN strategies ON strategies.id = strategy_ops.strategy_id WHERE strategies.enabled = 1 ORDER BY strategies.id"):
            out.setdefault(op, []).append(sid)
        return out

    _REAL = {"max_abs_err", "max_rel_err", "mismatch_frac", "latency_ms", "build_seconds"}
    _BOOL = {"build_ok"}

    def measurement_rows(self, backend: str, columns: tuple[str, ...]) -> list[tuple]:
        """:meth:`Catalog.measurement_rows` of ``columns`` (plain tuples in the same order)."""
        if not all(c.isidentifier() for c in columns):
            raise ValueError(f"bad column names {columns}")
        convert = [(_real if c in self._REAL else (lambda v: v if v is None else bool(v)) if c in self._BOOL else None)
                   for c in columns]
        rows = self.conn.execute(f"SELECT {', '.join(columns)} FROM measurements WHERE backend = ? ORDER BY id", (backend,))
        if not any(convert):
            return rows.fetchall()
        return [tuple(f(v) if f else v for f, v in zip(convert, row)) for row in rows]

    def record_probes(self, backend: str, version: str | None, results: dict[str, Any]) -> None:
        """:meth:`Catalog.record_probes`: where a result is not recorded yet, the full catalog records it."""
        for name, r in results.items():
            last = self.conn.execute("SELECT ok, message FROM probes WHERE backend = ? AND backend_version IS ? AND probe = ? "
                                     "ORDER BY id DESC LIMIT 1", (backend, version, name)).fetchone()
            if last is None or bool(last[0]) != r.ok or last[1] != r.message:
                from opmap.db import Catalog

                catalog = Catalog(self.url)
                try:
                    catalog.record_probes(backend, version, results)
                finally:
                    catalog.close()
                return
