"""The catalog database (SQLAlchemy 2.0); opmap.db.reader reads what planning needs without it.

The names below load on first use: importing ``opmap.db.reader`` does not import SQLAlchemy."""

from opmap.lazy import lazy_attributes

_LAZY = {
    "opmap.db.catalog": ("Catalog",),
    "opmap.db.reader": ("ENV_VAR", "default_path", "resolve_url"),
    "opmap.db.models": ("Decision", "Measurement", "Probe", "Run", "StrategyRow", "VerdictRow"),
}

__all__ = ["Catalog", "ENV_VAR", "default_path", "resolve_url", "Decision", "Measurement", "Probe", "Run", "StrategyRow", "VerdictRow"]


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
