"""One representation of non-finite numbers in every JSON opmap writes (``--json``, catalog JSON columns, sidecars).

Strict JSON has no NaN or infinity (Python's ``json`` would print bare ``NaN``, which other parsers and PostgreSQL's
JSON columns reject). opmap writes them as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``: valid JSON, and
``float(value)`` in Python (``Number(value)`` in JavaScript) turns them back into the number. ``allow_nan=False``
makes any float that slips past :func:`encode` fail loudly instead of printing invalid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def encode(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples, at any depth) replaced by its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else NAMES[repr(value)]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (see the module docstring); other ``json.dumps`` arguments pass through."""
    return json.dumps(encode(value), allow_nan=False, **kwargs)
