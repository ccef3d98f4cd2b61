"""ORM models of the catalog (SQLAlchemy 2.0). The schema itself is created by migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import math

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class _RawFloat(Float):
    """Float without SQLAlchemy's value conversions (which would turn the text 'NaN' back into a NaN float)."""

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class Real(TypeDecorator):
    """A float column that keeps NaN and infinities on every backend (same DDL as ``Float``).

    PostgreSQL's double precision holds them natively. SQLite holds infinities but turns NaN into NULL, so NaN is
    stored there as the text ``'NaN'`` (SQLite columns are dynamically typed) and read back as ``float('nan')``.
    """

    impl = Float
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return _RawFloat() if dialect.name == "sqlite" else dialect.type_descriptor(Float())

    def process_bind_param(self, value, dialect):
        if isinstance(value, float) and math.isnan(value) and dialect.name == "sqlite":
            return "NaN"
        return value

    def process_result_value(self, value, dialect):
        return float(value) if isinstance(value, str) else value


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Op(Base):
    __tablename__ = "ops"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class RuleSource(Base):
    """The text of a user rule file, so the catalog alone can reproduce a decision."""

    __tablename__ = "rule_sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StrategyRow(Base):
    __tablename__ = "strategies"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "pack/slug[variant]"
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    source_hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(100))  # builtin | user | pack:<name>
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    rule_source_id: Mapped[int | None] = mapped_column(ForeignKey("rule_sources.id", ondelete="SET NULL"), nullable=True)
    doc: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    contract: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ops: Mapped[list["StrategyOp"]] = relationship(cascade="all, delete-orphan", back_populates="strategy")


class StrategyOp(Base):
    __tablename__ = "strategy_ops"
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True)
    op_id: Mapped[int] = mapped_column(ForeignKey("ops.id"), primary_key=True)
    strategy: Mapped[StrategyRow] = relationship(back_populates="ops")
    op: Mapped[Op] = relationship()


class Measurement(Base):
    """One measured (or estimated, and marked so) cost of a strategy, with its provenance."""

    __tablename__ = "measurements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    op: Mapped[str] = mapped_column(String(200))
    shape_bucket: Mapped[str] = mapped_column(String(200))
    dtype: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device: Mapped[str | None] = mapped_column(String(200), nullable=True)
    build_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    build_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    build_seconds: Mapped[float | None] = mapped_column(Real, nullable=True)
    engine_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_abs_err: Mapped[float | None] = mapped_column(Real, nullable=True)
    max_rel_err: Mapped[float | None] = mapped_column(Real, nullable=True)
    mismatch_frac: Mapped[float | None] = mapped_column(Real, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Real, nullable=True)
    provenance: Mapped[str] = mapped_column(String(32))  # measured-runtime | measured-build | estimated
    opmap_version: Mapped[str] = mapped_column(String(32))
    source_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    model_path: Mapped[str] = mapped_column(Text)
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_kind: Mapped[str] = mapped_column(String(32))
    opmap_version: Mapped[str] = mapped_column(String(32))
    catalog_version: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    decisions: Mapped[list["Decision"]] = relationship(
        cascade="all, delete-orphan", back_populates="run", order_by="Decision.seq"
    )


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(200))
    op: Mapped[str] = mapped_column(String(200))
    signature: Mapped[str] = mapped_column(Text, default="")  # inputs -> outputs, for the report
    choice: Mapped[str | None] = mapped_column(String(200), nullable=True)
    choice_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cost: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    runner_up: Mapped[str | None] = mapped_column(String(200), nullable=True)
    why: Mapped[str] = mapped_column(Text, default="")  # why the choice won (or why nothing maps)
    precision: Mapped[str | None] = mapped_column(String(8), nullable=True)  # fp16/bf16/int8; None: fp32
    precision_why: Mapped[str | None] = mapped_column(Text, nullable=True)
    run: Mapped[Run] = relationship(back_populates="decisions")
    verdicts: Mapped[list["VerdictRow"]] = relationship(
        cascade="all, delete-orphan", back_populates="decision", order_by="VerdictRow.seq"
    )


class VerdictRow(Base):
    """A rule's verdict on a node. Strategy ids are text, not keys: audits outlive strategies."""

    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(220))
    kind: Mapped[str] = mapped_column(String(16))
    source_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    expression: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    location: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[Decision] = relationship(back_populates="verdicts")


class Probe(Base):
    """A probe build's result: the evidence behind "this backend cannot build that layer"."""

    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(32))
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    probe: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    message: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Real, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Calibration(Base):
    """A model's calibration: activation ranges (max and a percentile of |x|) and per-channel weight ranges, measured
    by running batches through PyTorch, tied to the model file's sha256. ``data`` says how to redraw the batches."""

    __tablename__ = "calibrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    model_path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)  # what the batches were, in words
    generated: Mapped[bool] = mapped_column(Boolean)  # drawn by opmap (no user data), labelled so
    batches: Mapped[int] = mapped_column(Integer)
    percentile: Mapped[float] = mapped_column(Float)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # {"path", "sha256"} or {"generate", "seed"}
    ranges: Mapped[dict] = mapped_column(JSON, default=dict)  # {"activations": {...}, "weights": {...}}
    opmap_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
