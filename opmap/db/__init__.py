"""The catalog database (SQLAlchemy 2.0)."""

from opmap.db.catalog import ENV_VAR, Catalog, default_path, resolve_url
from opmap.db.models import Decision, Measurement, Probe, Run, StrategyRow, VerdictRow

__all__ = ["Catalog", "ENV_VAR", "default_path", "resolve_url", "Decision", "Measurement", "Probe", "Run", "StrategyRow", "VerdictRow"]
