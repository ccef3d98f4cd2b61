"""The optimization profile's points: a value per input-dim symbol at the profile's minimum, an interior point and its
maximum, each inside the range torch.export proved and satisfying the export's shape facts (:mod:`opmap.loading.shapefacts`).
The builder makes its profile from them; verify checks the network at each of them."""

from __future__ import annotations

from typing import Any

from opmap.errors import BuildError
from opmap.loading.graph import Graph
from opmap.loading.shapefacts import ShapeFactError, satisfying_points


def symbol_range(graph: Graph, name: str, symbol: str) -> tuple[int, int, int]:
    """(min, opt, max) of an input-dim symbol for the optimization profile, from the export's proven range: min is the
    range's lower end (at least 1: TensorRT profiles have no empty dims), max its upper end, opt an interior point (8
    where the range holds it, else its middle)."""
    rng = graph.symbols.get(symbol)
    if rng is None or rng.upper is None:
        raise BuildError(f"input {name} dim {symbol} has no upper bound in the export; pass --shape {name}=MIN:OPT:MAX "
                         "or export with torch.export.Dim(..., max=N)")
    low = max(1, rng.lower or 1)
    opt = 8 if low < 8 < rng.upper else (low + rng.upper) // 2
    return low, opt, rng.upper


def symbol_points(graph: Any) -> dict[str, dict[str, int]]:
    """A value per input-dim symbol at the profile's minimum, an interior point and its maximum: each symbol's own
    range (:func:`symbol_range`), moved where needed so that every point satisfies the export's
    facts. Empty for a static graph."""
    defaults: dict[str, dict[str, int]] = {"min": {}, "opt": {}, "max": {}}
    for name, meta in graph.inputs.items():
        for d in meta.shape:
            if isinstance(d, str) and d not in defaults["min"]:
                defaults["min"][d], defaults["opt"][d], defaults["max"][d] = symbol_range(graph, name, d)
    if not defaults["min"] or not graph.facts:
        return defaults if defaults["min"] else {}
    ranges = {s: (defaults["min"][s], defaults["max"][s]) for s in defaults["min"]}
    return satisfying_points(graph.facts, ranges, defaults)


def profile_points(graph: Graph, shapes: dict | None = None) -> dict[str, dict[str, int]]:
    """``{"min": {...}, "opt": {...}, "max": {...}}``: a value per input-dim symbol at the profile's minimum, an
    interior point and its maximum (empty for a static graph), each satisfying the export's facts (shapefacts).
    ``shapes``: ``--shape`` overrides, NAME -> (min, opt, max) dims; a symbol takes the override of the first input dim
    it names."""
    try:
        points = symbol_points(graph)
    except ShapeFactError as exc:
        raise BuildError(str(exc)) from None
    given_for: set[str] = set()
    for name, meta in graph.inputs.items():
        given = (shapes or {}).get(name)
        for axis, d in enumerate(meta.shape):
            if given and isinstance(d, str) and d not in given_for:
                given_for.add(d)
                points["min"][d], points["opt"][d], points["max"][d] = given[0][axis], given[1][axis], given[2][axis]
    return points
