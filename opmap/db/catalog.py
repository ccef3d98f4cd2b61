"""The catalog: ops -> strategies, user rules, measurements, runs and their decisions.

SQLite by default (WAL, busy timeout, foreign keys on) at a per-user path; any
SQLAlchemy URL works (``--db`` / ``OPMAP_DB``), PostgreSQL included. Every write
is one transaction: a failure leaves the catalog as it was.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

import opmap
from opmap.db import migrations
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

ENV_VAR = "OPMAP_DB"


def default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("opmap", appauthor=False)) / "catalog.db"


def resolve_url(url: str | None = None) -> str:
    """``--db`` beats ``$OPMAP_DB`` beats the per-user default. A plain path means SQLite."""
    url = url or os.environ.get(ENV_VAR) or str(default_path())
    if "://" not in url:
        path = Path(url).expanduser()
        if path.is_dir():
            raise CatalogError(f"catalog path {path} is a directory; give a file path or a SQLAlchemy URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        engine = create_engine(url, future=True)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise CatalogError(f"bad catalog URL {url!r}: {first_line(exc)}") from None
    except ImportError as exc:
        raise CatalogError(f"catalog URL {url!r} needs a database driver: {first_line(exc)} (try: pip install 'opmap[postgres]')") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Catalog:
    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine = make_engine(self.url)
        try:
            self.migrate()
        except CatalogError:
            self.engine.dispose()
            raise
        except (DBAPIError, SQLAlchemyError) as exc:
            self.engine.dispose()
            raise CatalogError(f"cannot open catalog {self.display_url}: {first_line(exc.orig if hasattr(exc, 'orig') and exc.orig else exc)}") from None

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        done: list[str] = []
        with self.engine.connect() as conn:
            newer = migrations.unknown(conn)
        if newer:
            raise CatalogError(
                f"catalog {self.display_url} was written by a newer opmap (migrations {', '.join(newer)}); upgrade opmap"
            )
        for name, fn in migrations.MIGRATIONS:
            with self.engine.begin() as conn:  # one transaction per migration
                if name in migrations.applied(conn):
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
        with self.session() as s:
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

    def sync(self, strategies: Iterable[Any]) -> int:
        """Bring built-in and pack strategies up to date; user strategies are never touched.

        Shipped strategies that disappeared are disabled, not deleted: their measurements and
        the runs that used them stay auditable.
        """
        shipped = [s for s in strategies if s.origin != "user"]
        fingerprint = hashlib.sha256(
            "\n".join(sorted(f"{s.id}|{s.version}|{s.source_hash}|{s.origin}|{','.join(s.ops)}" for s in shipped)).encode()
        ).hexdigest()
        with self.session() as s:
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
            self._set_meta(s, "shipped_fingerprint", fingerprint)
            self._set_meta(s, "synced_by", opmap.__version__)
            return changed

    def add_user_rules(self, path: str, text: str, strategies: list[Any]) -> list[str]:
        """Register a user rule file (already loaded and validated by the caller). One transaction."""
        with self.session() as s:
            taken = {
                row.id: row.origin
                for row in s.scalars(select(StrategyRow).where(StrategyRow.id.in_([x.id for x in strategies])))
                if row.origin != "user"
            }
            if taken:
                sid, origin = next(iter(taken.items()))
                raise CatalogError(f"{path}: strategy id {sid} is already a {origin} strategy; user rules need their own pack name")
            source = RuleSource(path=path, sha256=hashlib.sha256(text.encode()).hexdigest(), text=text, added_at=utcnow())
            s.add(source)
            s.flush()
            # Re-adding a file replaces the strategies it defined before.
            old = set(s.scalars(select(StrategyRow.id).where(StrategyRow.origin == "user", StrategyRow.source_path == path)))
            for strat in strategies:
                strat.origin = "user"
                self._upsert(s, strat, rule_source_id=source.id)
                old.discard(strat.id)
            for sid in old:
                s.delete(s.get(StrategyRow, sid))
            self._bump(s)
            return [x.id for x in strategies]

    def remove_user_rule(self, strategy_id: str) -> None:
        with self.session() as s:
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
        """op name -> ids of enabled strategies mapped to it (``*`` for any op)."""
        out: dict[str, list[str]] = {}
        for row in self.strategy_rows():
            for link in row.ops:
                out.setdefault(link.op.name, []).append(row.id)
        return out

    # -- measurements ---------------------------------------------------------------------------
    def add_measurements(self, rows: list[Measurement]) -> None:
        with self.session() as s:
            s.add_all(rows)

    def measurements(self, backend: str) -> list[Measurement]:
        """Every measurement for a backend, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(Measurement).where(Measurement.backend == backend).order_by(Measurement.id)))

    # -- probes ---------------------------------------------------------------------------------
    def record_probes(self, backend: str, version: str | None, results: dict[str, Any]) -> None:
        """Store probe results not yet recorded for this backend version (the latest result is kept current)."""
        if not results:
            return
        with self.session() as s:
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
    def record_run(self, run: Run) -> int:
        with self.session() as s:
            run.catalog_version = int(self._get_meta(s, "catalog_version", "0") or 0)
            s.add(run)
            s.flush()
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

