"""The catalog: ops -> strategies, user rules, measurements, runs and their decisions.

SQLite by default (WAL, busy timeout, foreign keys on) at a per-user path; any
SQLAlchemy URL works (``--db`` / ``OPMAP_DB``), PostgreSQL included. Every write
is one transaction taken under the catalog's write lock (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-scoped advisory lock), so concurrent processes queue
instead of colliding, and a failure (or Ctrl-C) leaves the catalog as it was.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import create_engine, event, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

import opmap
from opmap import interrupt, nonfinite
from opmap.db import migrations
from opmap.db.reader import resolve_url, shipped_fingerprint
from opmap.db.models import (
    Decision,
    Measurement,
    Meta,
    Op,
    Probe,
    RuleSource,
    Run,
    StrategyOp,
    StrategyRow,
    utcnow,
)
from opmap.errors import CatalogError, first_line

BUSY_TIMEOUT_S = 60  # how long a process waits for another's write transaction before giving up
PG_LOCK_KEY = 0x6F706D6170  # "opmap": the advisory lock every catalog write holds on PostgreSQL


def _sqlite_connect(dbapi_conn, _record) -> None:
    """Per connection: the driver's own transaction handling off (opmap's BEGIN makes DDL transactional too), foreign
    keys, the busy timeout, and WAL, but WAL only for an opmap catalog or an empty file: switching a foreign database
    to WAL would rewrite its header (the catalog refuses such a file untouched, see Catalog.migrate)."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        tables = {row[0] for row in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables or "opmap_migrations" in tables:
            cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout): a deferred transaction that
    reads and then writes fails at once with "database is locked" when another process wrote in between."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("opmap_write") else "BEGIN")


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        engine = create_engine(url, future=True, json_serializer=nonfinite.dumps,
                               **({"connect_args": {"timeout": BUSY_TIMEOUT_S}} if parsed.get_backend_name() == "sqlite" else {}))
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise CatalogError(f"bad catalog URL {url!r}: {first_line(exc)}") from None
    except ImportError as exc:
        raise CatalogError(f"catalog URL {url!r} needs a database driver: {first_line(exc)} (try: pip install 'opmap[postgres]')") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _db_error(display_url: str, exc: BaseException, doing: str = "catalog") -> CatalogError:
    """One line for a database failure: the driver's own first line, never the SQL statement."""
    orig = getattr(exc, "orig", None) or exc
    message = first_line(orig)
    if "readonly" in message.replace(" ", "") or "read-only" in message:
        return CatalogError(f"catalog {display_url} is read-only ({message}); give a writable one with --db")
    if "database is locked" in message:
        return CatalogError(f"catalog {display_url} stayed locked by another process for over {BUSY_TIMEOUT_S}s; try again")
    return CatalogError(f"{doing} {display_url}: {message}")


class Catalog:
    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine = make_engine(self.url)
        self.backend = make_url(self.url).get_backend_name()
        try:
            self.migrate()
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _database_errors(self, doing: str = "catalog") -> Iterator[None]:
        try:
            yield
        except (DBAPIError, SQLAlchemyError) as exc:
            raise _db_error(self.display_url, exc, doing) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read transaction (writes go through :meth:`writing`, under the write lock)."""
        with self._database_errors(), Session(self.engine, expire_on_commit=False) as s:
            yield s
            s.commit()  # ends the read transaction; leaves the loaded objects usable

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """A write transaction holding the catalog's write lock; committed on success, rolled back on any error or
        after a Ctrl-C (even one something else swallowed)."""
        with self._database_errors(), self.engine.connect() as conn:
            if self.backend == "sqlite":
                conn.execution_options(opmap_write=True)
            with conn.begin():
                if self.backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
                yield conn
                interrupt.check()

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One ORM write transaction under the write lock (see :meth:`locked`)."""
        with self.locked() as conn, Session(bind=conn, expire_on_commit=False) as s:
            yield s
            s.flush()

    def check_writable(self) -> None:
        """Fail now, in one line, if this catalog cannot be written (a read-only file or role), not after planning."""
        with self.locked() as conn:
            conn.execute(text("UPDATE meta SET value = value WHERE 1 = 0"))  # refused by a read-only catalog; writes nothing

    # -- schema ---------------------------------------------------------------------------------
    def _refuse_foreign(self, conn: Connection) -> None:
        tables = set(inspect(conn).get_table_names())
        if tables and "opmap_migrations" not in tables:
            listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise CatalogError(f"{self.display_url} is not an opmap catalog (it holds other tables: {listed}); "
                               f"it was left untouched; give another --db")

    def migrate(self) -> list[str]:
        """Apply pending migrations, all in one transaction under the write lock (a concurrent first use waits, then
        finds them applied). A non-empty database that is not an opmap catalog is refused, untouched."""
        with self._database_errors("cannot open catalog"):
            with self.engine.connect() as conn:
                self._refuse_foreign(conn)
                newer = migrations.unknown(conn)
                todo = migrations.pending(conn)
            if newer:
                raise CatalogError(
                    f"catalog {self.display_url} was written by a newer opmap (migrations {', '.join(newer)}); upgrade opmap"
                )
            if not todo:
                return []
            done: list[str] = []
            with self.locked() as conn:
                self._refuse_foreign(conn)  # again, under the lock: another process may have been first
                applied = set(migrations.applied(conn))
                for name, fn in migrations.MIGRATIONS:
                    if name in applied:
                        continue
                    fn(conn)
                    migrations._LEDGER.create(conn, checkfirst=True)
                    conn.execute(migrations._LEDGER.insert().values(name=name, applied_at=utcnow()))
                    done.append(name)
            return done

    # -- meta -----------------------------------------------------------------------------------
    def _get_meta(self, s: Session, key: str, default: str | None = None) -> str | None:
        row = s.get(Meta, key)
        return row.value if row else default

    def _set_meta(self, s: Session, key: str, value: str) -> None:
        row = s.get(Meta, key)
        if row is None:
            s.add(Meta(key=key, value=value))
        else:
            row.value = value

    def _bump(self, s: Session) -> int:
        version = int(self._get_meta(s, "catalog_version", "0") or 0) + 1
        self._set_meta(s, "catalog_version", str(version))
        return version

    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            return self._get_meta(s, key)

    def set_meta(self, key: str, value: str) -> None:
        with self.writing() as s:
            self._set_meta(s, key, value)

    @property
    def version(self) -> int:
        with self.session() as s:
            return int(self._get_meta(s, "catalog_version", "0") or 0)

    # -- strategies -----------------------------------------------------------------------------
    def _op(self, s: Session, name: str) -> Op:
        op = s.scalar(select(Op).where(Op.name == name))
        if op is None:
            op = Op(name=name)
            s.add(op)
            s.flush()
        return op

    def _upsert(self, s: Session, strat: Any, rule_source_id: int | None = None) -> bool:
        row = s.get(StrategyRow, strat.id)
        fields = dict(
            kind=strat.kind, version=strat.version, source_hash=strat.source_hash, origin=strat.origin,
            source_path=strat.source_path, doc=strat.doc, tags=list(strat.tags), contract=strat.contract,
        )
        if row is not None and all(getattr(row, k) == v for k, v in fields.items()) and row.enabled and (
            sorted(o.op.name for o in row.ops) == sorted(strat.ops)
        ) and (rule_source_id is None or row.rule_source_id == rule_source_id):
            return False
        if row is None:
            row = StrategyRow(id=strat.id, created_at=utcnow(), **fields)
            s.add(row)
        else:
            for k, v in fields.items():
                setattr(row, k, v)
        row.enabled = True
        row.updated_at = utcnow()
        if rule_source_id is not None:
            row.rule_source_id = rule_source_id
        row.ops = [StrategyOp(op=self._op(s, op)) for op in strat.ops]
        return True

    shipped_fingerprint = staticmethod(shipped_fingerprint)

    def sync(self, strategies: Iterable[Any], measurements_digest: str = "",
             measurements: Callable[[], list[Measurement]] | None = None) -> int:
        """Bring built-in and pack strategies, and the measurements shipped for them, up to date; user strategies are
        never touched. Returns how many strategies changed.

        Keyed by :meth:`shipped_fingerprint`, stored in the catalog: when nothing changed this writes nothing and takes
        no lock. Otherwise it runs once, under the write lock, re-checking the key there, so processes starting
        together on a new catalog sync it exactly once (no duplicated shipped measurements). ``measurements`` makes
        the shipped rows; they enter once per ``measurements_digest``. Shipped strategies that disappeared are
        disabled, not deleted: their measurements and the runs that used them stay auditable.
        """
        shipped = [s for s in strategies if s.origin != "user"]
        fingerprint = self.shipped_fingerprint(shipped, measurements_digest)
        if self.get_meta("shipped_fingerprint") == fingerprint:
            return 0
        with self.writing() as s:
            if self._get_meta(s, "shipped_fingerprint") == fingerprint:
                return 0
            changed = 0
            user_ids = set(s.scalars(select(StrategyRow.id).where(StrategyRow.origin == "user")))
            for strat in shipped:
                if strat.id in user_ids:
                    raise CatalogError(
                        f"{strat.origin} strategy {strat.id} clashes with a user strategy of the same id; "
                        f"remove the user rule with `opmap rules remove {strat.id}` or rename it"
                    )
                changed += self._upsert(s, strat)
            ids = {strat.id for strat in shipped}
            for row in s.scalars(select(StrategyRow).where(StrategyRow.origin != "user", StrategyRow.enabled.is_(True))):
                if row.id not in ids:
                    row.enabled = False
                    changed += 1
            if changed:
                self._bump(s)
            if measurements is not None and self._get_meta(s, "shipped_measurements") != measurements_digest:
                s.flush()
                s.add_all(measurements())
                self._set_meta(s, "shipped_measurements", measurements_digest)
            self._set_meta(s, "shipped_fingerprint", fingerprint)
            self._set_meta(s, "synced_by", opmap.__version__)
            return changed

    def add_user_rules(self, files: list[tuple[str, str, list[Any]]],
                       check: Callable[[list[tuple[str, str]]], None] | None = None) -> list[str]:
        """Register user rule files, each ``(path, text, strategies)`` (already loaded and validated by the caller),
        all or nothing, in one transaction. Refused: an id that a shipped strategy has, or that another file (in this
        call or stored) defines. Re-adding a file replaces what it defined before; an unchanged file writes nothing.
        ``check`` gets every stored user source ``(path, text)`` as the transaction would commit them, before it
        commits: whatever it raises rolls the whole add back."""
        owner: dict[str, str] = {}
        for path, _, strategies in files:
            for strat in strategies:
                if strat.id in owner and owner[strat.id] != path:
                    raise CatalogError(f"strategy id {strat.id} is defined both in {owner[strat.id]} and in {path}; ids must be unique")
                owner[strat.id] = path
        with self.writing() as s:
            for row in s.scalars(select(StrategyRow).where(StrategyRow.id.in_(list(owner)))):
                path = owner[row.id]
                if row.origin != "user":
                    raise CatalogError(f"{path}: strategy id {row.id} is already a {row.origin} strategy; user rules need their own pack name")
                if row.source_path != path:
                    raise CatalogError(f"{path}: strategy id {row.id} is already defined by the stored user rule file {row.source_path}; "
                                       f"rename one of them, or `opmap rules remove {row.id}` first")
            changed = False
            for path, text_, strategies in files:
                digest = hashlib.sha256(text_.encode()).hexdigest()
                stored = {r.id: r for r in s.scalars(select(StrategyRow).where(StrategyRow.origin == "user", StrategyRow.source_path == path))}
                if set(stored) == {x.id for x in strategies} and all(
                    r.rule_source_id is not None and s.get(RuleSource, r.rule_source_id).sha256 == digest for r in stored.values()
                ):
                    continue  # the same file again: nothing to write
                source = RuleSource(path=path, sha256=digest, text=text_, added_at=utcnow())
                s.add(source)
                s.flush()
                for strat in strategies:
                    strat.origin = "user"
                    self._upsert(s, strat, rule_source_id=source.id)
                    stored.pop(strat.id, None)
                for row in stored.values():  # what the file no longer defines
                    s.delete(row)
                changed = True
            if changed:
                self._bump(s)
            if check is not None:
                s.flush()
                check(self._user_sources(s))
            return list(owner)

    def remove_user_rule(self, strategy_id: str) -> None:
        with self.writing() as s:
            row = s.get(StrategyRow, strategy_id)
            if row is None:
                raise CatalogError(f"no strategy {strategy_id} in the catalog")
            if row.origin != "user":
                raise CatalogError(f"{strategy_id} is a {row.origin} strategy; only user strategies can be removed")
            s.delete(row)
            self._bump(s)

    def user_sources(self) -> list[tuple[str, str]]:
        """(path, text) of every stored user rule file still referenced by a strategy."""
        with self.session() as s:
            return self._user_sources(s)

    @staticmethod
    def _user_sources(s: Session) -> list[tuple[str, str]]:
        q = (
            select(RuleSource.path, RuleSource.text)
            .join(StrategyRow, StrategyRow.rule_source_id == RuleSource.id)
            .where(StrategyRow.origin == "user")
            .distinct()
        )
        return [(p, t) for p, t in s.execute(q)]

    def strategy_rows(self, enabled_only: bool = True) -> list[StrategyRow]:
        with self.session() as s:
            q = select(StrategyRow).options(selectinload(StrategyRow.ops).selectinload(StrategyOp.op)).order_by(StrategyRow.id)
            if enabled_only:
                q = q.where(StrategyRow.enabled.is_(True))
            return list(s.scalars(q))

    def candidates_by_op(self) -> dict[str, list[str]]:
        """op name -> ids of enabled strategies mapped to it (``*`` for any op), in id order. Plain rows, not ORM
        objects: every plan reads this, and loading the mapped objects took a quarter second."""
        q = (select(Op.name, StrategyRow.id).join(StrategyOp, StrategyOp.op_id == Op.id).join(StrategyRow, StrategyRow.id == StrategyOp.strategy_id)
             .where(StrategyRow.enabled.is_(True)).order_by(StrategyRow.id))
        out: dict[str, list[str]] = {}
        with self.session() as s:
            for op, sid in s.execute(q):
                out.setdefault(op, []).append(sid)
        return out

    # -- measurements ---------------------------------------------------------------------------
    def add_measurements(self, rows: list[Measurement]) -> None:
        with self.writing() as s:
            s.add_all(rows)

    def measurements(self, backend: str) -> list[Measurement]:
        """Every measurement for a backend, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(Measurement).where(Measurement.backend == backend).order_by(Measurement.id)))

    def measurement_rows(self, backend: str, columns: tuple[str, ...] | None = None) -> list[Any]:
        """:meth:`measurements` as read-only rows with the same attribute names (what planning reads, several times
        faster than mapped objects), of every column or only of ``columns``."""
        table = Measurement.__table__
        picked = [table.c[name] for name in columns] if columns else [table]
        with self.session() as s:
            return list(s.execute(select(*picked).where(table.c.backend == backend).order_by(table.c.id)))

    # -- probes ---------------------------------------------------------------------------------
    def record_probes(self, backend: str, version: str | None, results: dict[str, Any]) -> None:
        """Store probe results not yet recorded for this backend version (the latest result is kept current)."""
        if not results:
            return
        with self.writing() as s:
            for name, r in results.items():
                last = s.scalar(select(Probe).where(Probe.backend == backend, Probe.backend_version == version, Probe.probe == name)
                                .order_by(Probe.id.desc()).limit(1))
                if last is not None and last.ok == r.ok and last.message == r.message:
                    continue
                s.add(Probe(backend=backend, backend_version=version, probe=name, ok=r.ok, message=r.message, seconds=r.seconds))

    def probes(self, backend: str | None = None) -> list[Probe]:
        with self.session() as s:
            q = select(Probe).order_by(Probe.id)
            if backend:
                q = q.where(Probe.backend == backend)
            return list(s.scalars(q))

    # -- runs -----------------------------------------------------------------------------------
    def record_run(self, run: Run, before_commit: Callable[[int], None] | None = None) -> int:
        """Store a run. ``before_commit(run_id)`` runs inside the transaction: if it fails, no run is recorded."""
        with self.writing() as s:
            run.catalog_version = int(self._get_meta(s, "catalog_version", "0") or 0)
            s.add(run)
            s.flush()
            if before_commit is not None:
                before_commit(run.id)
            return run.id

    def runs(self, limit: int = 50) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))

    def run(self, run_id: int) -> Run:
        with self.session() as s:
            run = s.scalar(
                select(Run).where(Run.id == run_id).options(selectinload(Run.decisions).selectinload(Decision.verdicts))
            )
            if run is None:
                raise CatalogError(f"no run {run_id} in the catalog {self.display_url} (see `opmap audit`)")
            return run

    def run_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Run)) or 0

