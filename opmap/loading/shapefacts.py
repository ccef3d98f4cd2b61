"""Relations between input dims that an export states, and optimization-profile points that satisfy them.

A dim's range alone does not say which shapes are valid: ``x.view(3, 8)`` on an input whose two dims are dynamic holds
only where ``s0*s1 == 24``. torch.export records such facts as guards (``ExportedProgram._guards_code``, kept by
``torch.export.save``: Python conditions on ``L['x'].size()[i]``, read as text by the restricted parser, never run) and as ``_assert_scalar`` nodes. TensorRT checks
every profile point against the network's own shape constraints ("kOPT values violate shape constraints"), so the
profile's min, opt and max must each satisfy every fact, and be ordered dim by dim.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from opmap.loading import symexpr
from opmap.errors import OpmapError

_SIZE = re.compile(r"L((?:\[(?:'[^']*'|\d+)\])+)\.size\(\)\[(\d+)\]")
_KEY = re.compile(r"\[(?:'([^']*)'|(\d+))\]")
_ASSERTED = re.compile(r"expression (.+) on node")
SEARCH_POINTS = 20_000  # the most candidate points examined when the default points break a fact


class ShapeFactError(OpmapError):
    """No profile point inside the export's ranges satisfies the facts it states."""


def _input_name(path: str) -> str:
    """The placeholder name torch.export gives the input at a guard's access path: ``['xs'][1]['b']`` -> ``xs_1_b``."""
    return "_".join(a or b for a, b in _KEY.findall(path))


def facts_of(program: Any, inputs: dict, asserts: list[str]) -> tuple[str, ...]:
    """The export's conditions on input dims, as size expressions over the input-dim symbols (``Eq(s0*s1, 24)``).
    ``inputs``: name -> TensorMeta; ``asserts``: the messages of the graph's ``_assert_scalar`` nodes. A condition that
    names anything else (strides, storage offsets, data-dependent sizes, an input path it cannot place) is left out."""
    dims = {s for meta in inputs.values() for s in meta.shape if isinstance(s, str)}
    out: list[str] = []

    def keep(text: str) -> None:
        try:
            expr = symexpr.parse(text)
        except ValueError:
            return
        names = {str(s) for s in getattr(expr, "free_symbols", ())}
        if names and names <= dims and str(expr) not in out:
            out.append(str(expr))

    guards = getattr(program, "opmap_guard_text", None) or getattr(program, "_guards_code", None) or ()
    for code in guards:
        def dim(m: re.Match) -> str:
            meta = inputs.get(_input_name(m.group(1)))
            axis = int(m.group(2))
            return f"({meta.shape[axis]})" if meta is not None and axis < len(meta.shape) else "L_UNPLACED"

        text = _SIZE.sub(dim, str(code))
        if "L_UNPLACED" not in text and "L[" not in text:
            keep(text)
    for message in asserts:
        m = _ASSERTED.search(message or "")
        if m:
            keep(m.group(1))
    return tuple(out)


def _failing(facts: list, point: dict[str, int]) -> list:
    """The facts that do not hold at ``point`` (symbol -> value)."""
    import sympy

    values = {sympy.Symbol(k, integer=True): sympy.Integer(v) for k, v in point.items()}
    return [f for f in facts if f.xreplace(values) is not sympy.true]


def _hinted_values(facts: list) -> set[int]:
    """Sizes the facts' constants suggest (``Eq(s0*s1, 24)``: 24's divisors; ``Eq(Mod(s0, 1000), 0)``: multiples of
    1000), which a range's ends may miss."""
    import sympy

    out: set[int] = set()
    for f in facts:
        for c in {abs(int(n)) for n in f.atoms(sympy.Integer) if 1 < abs(int(n)) <= 1 << 20}:
            out |= {d for d in range(1, int(c ** 0.5) + 1) if c % d == 0} | {c // d for d in range(1, int(c ** 0.5) + 1) if c % d == 0}
            out |= {c * k for k in range(1, 65)}
    return out


def satisfying_points(facts_text: tuple[str, ...], ranges: dict[str, tuple[int, int]],
                      defaults: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """``defaults`` (``{"min": {sym: v}, "opt": ..., "max": ...}``) where each point satisfies every fact; else points
    searched among small and large values of each range (min: the smallest valid point, max: the largest valid point
    above it, opt: the valid point between them nearest the default opt). Raises :class:`ShapeFactError` naming the
    facts when no point inside the ranges satisfies them."""
    facts = [symexpr.parse(f) for f in facts_text]
    broken = {label: _failing(facts, point) for label, point in defaults.items()}
    if not any(broken.values()):
        return defaults
    involved = sorted({str(s) for f in facts for s in f.free_symbols} & set(ranges))
    hinted = _hinted_values(facts)
    span = 32
    while True:  # candidates per symbol: the ends of its range and the facts' divisors and multiples inside it
        candidates = []
        for s in involved:
            lo, hi = ranges[s]
            values = set(range(lo, min(hi, lo + span) + 1)) | set(range(max(lo, hi - span), hi + 1))
            values |= {defaults[label][s] for label in defaults} | {v for v in hinted if lo <= v <= hi}
            candidates.append(sorted(values))
        total = 1
        for c in candidates:
            total *= len(c)
        if total <= SEARCH_POINTS or span == 1:
            break
        span //= 2
    valid = []
    for combo in itertools.product(*candidates):
        if len(valid) >= SEARCH_POINTS:
            break
        point = dict(zip(involved, combo))
        if not _failing(facts, {**defaults["opt"], **point}):
            valid.append(point)
    if not valid:
        failing = sorted({str(f) for fs in broken.values() for f in fs})
        raise ShapeFactError(f"no input shape inside the export's dim ranges satisfies {' and '.join(failing)} "
                             f"(searched {total} points); export with ranges that hold a valid shape, or pass --shape")
    low = min(valid, key=lambda p: (sum(p.values()), tuple(p.values())))
    above = [p for p in valid if all(p[s] >= low[s] for s in involved)]
    high = max(above, key=lambda p: (sum(p.values()), tuple(p.values())))
    between = [p for p in above if all(p[s] <= high[s] for s in involved)]
    want = defaults["opt"]
    mid = min(between, key=lambda p: (sum(abs(p[s] - want[s]) for s in involved), tuple(p.values())))
    return {label: {**defaults[label], **chosen} for label, chosen in (("min", low), ("opt", mid), ("max", high))}
