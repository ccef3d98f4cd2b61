"""Named schema migrations, each applied in one transaction and recorded in ``opmap_migrations``.

A migration is frozen once released: it describes the schema change *as of its
release* and never imports the ORM models (which follow the latest schema). A
test checks that the migrated schema matches the models.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)


def m0001_initial(conn: Connection) -> None:
    md = MetaData()
    Table("meta", md, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
    Table("ops", md, Column("id", Integer, primary_key=True, autoincrement=True), Column("name", String(200), nullable=False, unique=True))
    Table(
        "rule_sources", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("path", Text, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("text", Text, nullable=False),
        Column("added_at", DateTime, nullable=False),
    )
    Table(
        "strategies", md,
        Column("id", String(200), primary_key=True),
        Column("kind", String(16), nullable=False),
        Column("version", Integer, nullable=False),
        Column("source_hash", String(64), nullable=False),
        Column("origin", String(100), nullable=False),
        Column("source_path", Text),
        Column("rule_source_id", Integer, ForeignKey("rule_sources.id", ondelete="SET NULL")),
        Column("doc", Text, nullable=False),
        Column("tags", JSON, nullable=False),
        Column("contract", Text),
        Column("enabled", Boolean, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
    )
    Table(
        "strategy_ops", md,
        Column("strategy_id", String(200), ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True),
        Column("op_id", Integer, ForeignKey("ops.id"), primary_key=True),
    )
    Table(
        "measurements", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("strategy_id", String(200), ForeignKey("strategies.id", ondelete="CASCADE"), nullable=False),
        Column("op", String(200), nullable=False),
        Column("shape_bucket", String(200), nullable=False),
        Column("dtype", String(32), nullable=False),
        Column("backend", String(32), nullable=False),
        Column("backend_version", String(64)),
        Column("device", String(200)),
        Column("build_ok", Boolean),
        Column("build_error", Text),
        Column("build_seconds", Float),
        Column("engine_bytes", Integer),
        Column("max_abs_err", Float),
        Column("max_rel_err", Float),
        Column("mismatch_frac", Float),
        Column("latency_ms", Float),
        Column("provenance", String(32), nullable=False),
        Column("opmap_version", String(32), nullable=False),
        Column("source_hash", String(64), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    Table(
        "runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("created_at", DateTime, nullable=False),
        Column("model_path", Text, nullable=False),
        Column("model_sha256", String(64)),
        Column("model_kind", String(32), nullable=False),
        Column("opmap_version", String(32), nullable=False),
        Column("catalog_version", Integer, nullable=False),
        Column("backend", String(32), nullable=False),
        Column("backend_version", String(64)),
        Column("settings", JSON, nullable=False),
        Column("summary", JSON, nullable=False),
    )
    Table(
        "decisions", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("node", String(200), nullable=False),
        Column("op", String(200), nullable=False),
        Column("signature", Text, nullable=False),
        Column("choice", String(200)),
        Column("choice_kind", String(16)),
        Column("cost", JSON),
        Column("runner_up", String(200)),
        Column("why", Text, nullable=False),
    )
    Table(
        "verdicts", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("decision_id", Integer, ForeignKey("decisions.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("strategy", String(200), nullable=False),
        Column("rule", String(220), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("source_hash", String(64)),
        Column("outcome", String(16), nullable=False),
        Column("reason", Text),
        Column("expression", Text),
        Column("evidence", JSON, nullable=False),
        Column("location", Text),
    )
    md.create_all(conn)
    conn.execute(text("INSERT INTO meta (key, value) VALUES ('catalog_version', '0')"))


def m0002_probes(conn: Connection) -> None:
    """Probe builds: what a backend can build, established by building, with TensorRT's own message."""
    md = MetaData()
    Table(
        "probes", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("backend", String(32), nullable=False),
        Column("backend_version", String(64)),
        Column("probe", String(64), nullable=False),
        Column("ok", Boolean),
        Column("message", Text, nullable=False),
        Column("seconds", Float),
        Column("created_at", DateTime, nullable=False),
    )
    md.create_all(conn)


def m0003_int8_calibration(conn: Connection) -> None:
    """Calibrations (activation ranges and per-channel weight scales, tied to the model's hash), and each decision's
    precision with its reason."""
    md = MetaData()
    Table(
        "calibrations", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("model_sha256", String(64), nullable=False, index=True),
        Column("model_path", Text, nullable=False),
        Column("source", Text, nullable=False),
        Column("generated", Boolean, nullable=False),
        Column("batches", Integer, nullable=False),
        Column("percentile", Float, nullable=False),
        Column("data", JSON, nullable=False),
        Column("ranges", JSON, nullable=False),
        Column("opmap_version", String(32), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    md.create_all(conn)
    conn.execute(text("ALTER TABLE decisions ADD COLUMN precision VARCHAR(8)"))
    conn.execute(text("ALTER TABLE decisions ADD COLUMN precision_why TEXT"))


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", m0001_initial),
    ("0002_probes", m0002_probes),
    ("0003_int8_calibration", m0003_int8_calibration),
]

_LEDGER = Table(
    "opmap_migrations", MetaData(),
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)


def applied(conn: Connection) -> list[str]:
    if not inspect(conn).has_table("opmap_migrations"):
        return []
    return [row[0] for row in conn.execute(_LEDGER.select().order_by(_LEDGER.c.name))]


def pending(conn: Connection) -> list[str]:
    done = set(applied(conn))
    return [name for name, _ in MIGRATIONS if name not in done]


def unknown(conn: Connection) -> list[str]:
    """Migrations recorded in the catalog that this opmap does not know: a newer opmap wrote it."""
    known = {name for name, _ in MIGRATIONS}
    return [name for name in applied(conn) if name not in known]
