"""What rules receive: the built-in fixtures and the objects behind them.

Base values (provided by the planner, not functions): ``node`` (node scope),
``graph`` (graph scope), ``settings`` and ``backend`` (session scope). Built-in
fixtures derived from them are defined here with :func:`~opmap.planning.strategy.fixture`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opmap.loading import symexpr
from opmap.loading.graph import Dim, Graph, Node, Ref, TensorMeta, finite_int
from opmap.planning.strategy import fixture

# dtypes a TensorRT tensor can have (TensorRT has no float64 and no complex types).
TRT_DTYPES = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool", "float8_e4m3fn"})
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})
MAX_RANK = 8  # TensorRT's Dims::MAX_DIMS


@dataclass(frozen=True)
class Settings:
    """Planner settings visible to rules."""

    tolerance: float = 1e-3  # accuracy budget: max relative error an approximate strategy may add
    precision: str = "fp32"  # the precision the user asked for (fp32 | fp16 | bf16)
    max_bound: int = 1 << 20  # largest static bound a padded (static-bound) strategy may allocate
    declared_bounds: tuple[tuple[str, int], ...] = ()  # (node name or size symbol, N) the user declared (--bound)


@lru_cache(maxsize=4096)
def _parse(expr: str):
    return symexpr.parse(expr)


class Bounds:
    """Value bounds of sizes, from the ranges torch.export proved (``0 <= u0 <= numel``)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def _range(self, dim: Dim) -> tuple[int | None, int | None]:
        if isinstance(dim, int):
            return dim, dim
        expr = _parse(dim)
        from torch.utils._sympy.value_ranges import ValueRanges, bound_sympy

        ranges = {}
        for sym in expr.free_symbols:
            rng = self.graph.symbols.get(str(sym))
            lo = rng.lower if rng and rng.lower is not None else -float("inf")
            hi = rng.upper if rng and rng.upper is not None else float("inf")
            ranges[sym] = ValueRanges(lo, hi)
        vr = bound_sympy(expr, ranges)
        return finite_int(vr.lower), finite_int(vr.upper)

    def _meta(self, x: Any) -> TensorMeta | None:
        if isinstance(x, TensorMeta):
            return x
        if isinstance(x, Ref):
            return self.graph.meta_of(x)
        if isinstance(x, Node):
            return x.out
        return None

    def _bound(self, x: Any, side: int) -> int | None:
        meta = self._meta(x)
        if meta is None:
            return self._range(x)[side]
        total = 1
        for d in meta.shape:
            b = self._range(d)[side]
            if b is None:
                return None
            total *= b
        return total

    def upper(self, x: Any) -> int | None:
        """Upper bound of a dim (int or symbol expression), or of a tensor's element count."""
        return self._bound(x, 1)

    def lower(self, x: Any) -> int | None:
        """Lower bound of a dim, or of a tensor's element count."""
        return self._bound(x, 0)

    def data_dependent(self, x: Any) -> bool:
        """Whether a dim or tensor has a size known only at run time (an unbacked ``u`` symbol)."""
        meta = self._meta(x)
        dims = meta.shape if meta is not None else (x,)
        for d in dims:
            if isinstance(d, str) and any(
                self.graph.symbols.get(str(s)) is not None and self.graph.symbols[str(s)].data_dependent
                or str(s).startswith("u")
                for s in _parse(d).free_symbols
            ):
                return True
        return False


@fixture(scope="graph")
def bounds(graph):
    """Value bounds of the graph's sizes (see :class:`Bounds`)."""
    return Bounds(graph)


@fixture
def consumers(node, graph):
    """The nodes that use this node's outputs (through ``getitem`` plumbing)."""
    found: list[Node] = []
    for user in graph.consumers(node):
        if user.op == "operator.getitem":
            found.extend(graph.consumers(user))
        else:
            found.append(user)
    return found


@fixture
def inputs(node):
    """The node's tensor arguments by schema name (``{"self": TensorMeta, "other": ...}``)."""
    return node.tensor_args()
