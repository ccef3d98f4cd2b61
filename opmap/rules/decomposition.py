"""PyTorch's own decomposition as one ``decompose`` candidate for any op, chosen per node.

Converters that run the decomposition table as a pre-pass lose the fused layers TensorRT
has (attention, layer norm, gelu...). Here the expansion competes with those layers: it
applies to a node when PyTorch's core-ATen table decomposes its op and every op the
expansion yields has a strategy in the catalog.
"""

import math
import pickle
import re
import sys
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from opmap.planning import diskcache
from opmap.loading.capture import op_name
from opmap.loading.graph import Graph, Node, Ref, TensorMeta
from opmap.loading.inplace import aten_overload as resolve
from opmap.planning.strategy import accept, reject, skip, strategy
from opmap.rules.common import t


@lru_cache(maxsize=1)
def _full_table() -> dict:
    """PyTorch's core-ATen decomposition table as a plain dict: make_fx copies the table it is given on every trace,
    and copying torch's lazily materialising table costs ~20 ms a trace."""
    from torch._decomp import core_aten_decompositions

    return dict(core_aten_decompositions())


class _Table:
    """Which ATen ops the core-ATen table decomposes, from a cached list of their names: materialising the table
    takes about a second per process, and only tracing needs it (see :mod:`opmap.planning.diskcache`)."""

    def __init__(self) -> None:
        name = diskcache.key("core-aten-table", torch.__version__)
        cached = diskcache.load("decompositions", name)
        if cached is None:
            cached = "\n".join(sorted(op_name(op) for op in _full_table() if op_name(op).startswith("aten."))).encode()
            diskcache.store("decompositions", name, cached)
        self.names = frozenset(cached.decode().split("\n"))

    def __contains__(self, overload) -> bool:
        return op_name(overload) in self.names


@lru_cache(maxsize=1)
def _table() -> _Table:
    return _Table()


def _argument(value, name: str, graph, tensor=None):
    """Rebuild an ATen argument from its captured form (tensors as empty ones of the same meta, made by ``tensor``)."""
    if isinstance(value, Ref):
        meta = graph.meta_of(value)
        assert meta is not None, f"argument {value} has no tensor meta"
        if tensor is not None:
            return tensor(meta)
        assert meta.is_static, f"argument {value} has dynamic dims {meta.shape}"
        return torch.empty(meta.shape, dtype=getattr(torch, meta.dtype))
    if isinstance(value, list):
        return [_argument(v, name, graph, tensor) for v in value]
    if isinstance(value, str) and name in ("dtype", "layout", "memory_format"):  # ATen's names for these enums
        return getattr(torch, value.removeprefix("torch."))
    if isinstance(value, str) and name == "device":
        return torch.device(value)
    return value


_SYMBOL = re.compile(r"\b[su]\d+\b")  # torch's names for size symbols (backed s0..., unbacked u0...)
_SIZE = re.compile(r"[\w\s+*/%()-]+")


def _ranges(node, graph) -> tuple:
    """The export's ranges of the size symbols in the node's tensor arguments: a symbolic trace depends on them."""
    names = sorted({m for meta in node.tensor_args().values() for d in meta.shape if isinstance(d, str)
                    for m in _SYMBOL.findall(d)})
    return tuple((n, graph.dim_range(n)) for n in names)


class _Symbolic:
    """Fake tensors whose dynamic dims are symbols of a private ShapeEnv standing for the outer graph's symbols.

    Each outer symbol gets one ShapeEnv symbol with the export's range and an interior hint; a dim that is an
    expression of outer symbols becomes the same expression of theirs. After tracing, :meth:`rename` writes the
    sub-graph back in the outer graph's symbols, so the builder resolves its sizes against the engine's inputs.
    Like torch.export, the trace assumes sizes of at least 2 (PyTorch's 0/1 specialisation); every guard the
    decomposition records must then follow from the ranges, else the rule rejects.
    """

    def __init__(self, graph) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        self.graph = graph
        self.env = ShapeEnv()
        self.mode = FakeTensorMode(shape_env=self.env)
        self.symbols: dict[str, object] = {}  # outer name -> this env's sympy symbol
        self.hints: dict[object, int] = {}
        self.ranges: dict[object, tuple] = {}  # this env's symbol -> (lower, upper or int_oo) as traced

    def _symbol(self, name: str):
        import sympy
        from torch._dynamo.source import ConstantSource
        from torch.fx.experimental.symbolic_shapes import DimDynamic

        if name not in self.symbols:
            lo, hi = self.graph.dim_range(name)
            assert not name.startswith("u") and not (self.graph.symbols.get(name) and self.graph.symbols[name].data_dependent), \
                f"size {name} is data-dependent: the decomposition is traced over input-dim symbols only"
            lo = max(lo, 2)
            hint = max(8, lo) if hi is None else min(max(8, lo), hi)
            sym = self.env.create_symbol(hint, ConstantSource(f"opmap_{name}"), dynamic_dim=DimDynamic.DYNAMIC)
            from torch.utils._sympy.numbers import int_oo

            if isinstance(sym, sympy.Symbol):
                self.env.constrain_symbol_range(sym, compiler_min=min(lo, hint), compiler_max=int_oo if hi is None else hi)
            self.ranges[sym] = (min(lo, hint), int_oo if hi is None else hi)
            self.symbols[name] = sym
            self.hints[sym] = hint
        return self.symbols[name]

    def dim(self, d):
        if isinstance(d, int):
            return d
        from opmap.loading import symexpr

        outer = symexpr.parse(d)
        expr = outer.subs({s: self._symbol(str(s)) for s in outer.free_symbols}, simultaneous=True)
        if expr.is_Integer:
            return int(expr)
        return self.env.create_symintnode(expr, hint=int(expr.subs(self.hints)))

    def tensor(self, meta):
        with self.mode:
            return torch.empty([self.dim(d) for d in meta.shape], dtype=getattr(torch, meta.dtype))

    def check_guards(self, op: str) -> None:
        """Every size assumption the trace recorded (guards, runtime asserts) must hold over the export's ranges:
        proven by value-range reasoning from the ranges alone (not from the other guards), or, for bounded sizes,
        by trying every value of the symbols it involves."""
        import sympy
        from torch.utils._sympy.value_ranges import ValueRanges

        ranges = tuple((sym, ValueRanges(lo, hi)) for sym, (lo, hi) in self.ranges.items())
        axioms = self._export_asserts()
        facts = [g.expr for g in self.env.guards]
        facts += [a.expr for asserts in self.env.deferred_runtime_asserts.values() for a in asserts]
        # a symbol the trace specialised (iterating over a dim, ``int(size)``) is replaced rather than guarded, and the
        # replacement makes its guard look true: the replacement itself must hold over the ranges
        for sym in self.ranges:
            value = self.env.replacements.get(sym)
            if value is not None and value != sym:
                assert self._holds_everywhere(sympy.Eq(sym, value)), (
                    f"PyTorch's decomposition of {op} holds only where {self.rename(str(sympy.Eq(sym, value)))}, "
                    "which the export's ranges do not prove")
        for expr in facts:
            if expr in axioms or self.env._maybe_evaluate_static(expr, axioms=axioms, var_to_range=ranges) == sympy.true:
                continue
            assert self._holds_everywhere(expr), (
                f"PyTorch's decomposition of {op} holds only where {self.rename(str(expr))}, "
                "which the export's ranges do not prove")

    def _export_asserts(self) -> tuple:
        """The size facts torch.export proved with runtime asserts (``_assert_scalar`` nodes, e.g. that a size is
        even), in this env's symbols: the outer graph checks them, so the trace may rely on them."""
        from opmap.loading import symexpr

        facts = []
        for node in self.graph:
            text = node.arg("self") if node.op == "aten._assert_scalar.default" else None
            if not isinstance(text, str):
                continue
            try:
                expr = symexpr.parse(text)
            except ValueError:
                continue
            if all(str(sym) in self.symbols for sym in expr.free_symbols):
                facts.append(expr.subs({sym: self.symbols[str(sym)] for sym in expr.free_symbols}, simultaneous=True))
        return tuple(facts)

    def _holds_everywhere(self, expr, limit: int = 4096) -> bool:
        import itertools

        import sympy

        syms = sorted(expr.free_symbols, key=str)
        spans = [self.ranges.get(s) for s in syms]
        if any(span is None or not isinstance(span[1], int) for span in spans):
            return False
        if math.prod(hi - lo + 1 for lo, hi in spans) > limit:
            return False
        return all(expr.xreplace(dict(zip(syms, map(sympy.Integer, point)))) == sympy.true
                   for point in itertools.product(*(range(lo, hi + 1) for lo, hi in spans)))

    def rename(self, value):
        """``value`` (a sub-graph, or any part of one) with this env's symbols replaced by the outer names."""
        import dataclasses

        names = {str(sym): outer for outer, sym in self.symbols.items()}

        def text(s: str) -> str:
            def one(m):
                assert m.group() in names, f"the decomposition introduced a size {m.group()} of its own"
                return names[m.group()]
            return _SYMBOL.sub(one, s)

        def walk(v):
            if isinstance(v, str):
                return text(v)
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, tuple):
                return tuple(walk(x) for x in v)
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            if isinstance(v, TensorMeta):
                return dataclasses.replace(v, shape=tuple(walk(d) for d in v.shape))
            if isinstance(v, Node):
                return dataclasses.replace(v, args=walk(v.args), outputs=walk(v.outputs),
                                           scalar_outputs=walk(v.scalar_outputs))
            return v

        return walk(value)


_EXPANSIONS: dict[tuple[str, str], object] = {}


def _trace(node, graph, ranges: tuple | None = None):
    """The traced expansion, from the disk cache when this op was traced with these argument metas (and, for dynamic
    dims, these symbol ranges: :func:`_ranges`) before."""
    name = diskcache.key("decomposition", torch.__version__, _code_hash(), node.op, repr(_signature(node.args, graph)),
                        repr(_ranges(node, graph) if ranges is None else ranges))
    cached = diskcache.load("decompositions", name)
    if cached is not None:
        try:
            return pickle.loads(cached)
        except Exception:  # a corrupt or outdated entry: traced again and rewritten
            pass
    sub = _make_fx(node, graph)
    diskcache.store("decompositions", name, pickle.dumps(sub))
    return sub


def _signature(value, graph):
    """Arguments with tensors as their metas: all a trace depends on."""
    if isinstance(value, dict):
        return tuple((k, _signature(v, graph)) for k, v in value.items())
    if isinstance(value, Ref):
        return ("tensor", str(graph.meta_of(value)))
    if isinstance(value, list):
        return [_signature(v, graph) for v in value]
    return (type(value).__name__, repr(value))


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """This module's and the capture's source: a change to how expansions are traced or converted is a new entry."""
    from opmap.loading import capture, graph

    return diskcache.key(*(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], capture, graph)))


def _make_fx(node, graph):
    """make_fx of the op under PyTorch's core-ATen table, with the node's tensor arguments as the only inputs.

    Static arguments are traced at their sizes; with a dynamic dim anywhere, symbolically (:class:`_Symbolic`)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from opmap.loading.capture import graph_from_fx

    overload = resolve(node.op)
    symbolic = _Symbolic(graph) if not all(m.is_static for m in node.tensor_args().values()) else None
    tensors: list = []

    def collect(value, name):
        if isinstance(value, Ref):
            tensors.append(_argument(value, name, graph, symbolic.tensor if symbolic else None))
            return ("tensor", len(tensors) - 1)
        if isinstance(value, list):
            return [collect(v, name) for v in value]
        if symbolic is not None and isinstance(value, str) and _SIZE.fullmatch(value) and _SYMBOL.search(value):
            return ("const", symbolic.dim(value))  # a SymInt argument ("s0 - 1"): the same expression of the trace's
        return ("const", _argument(value, name, graph))

    specs = {name: collect(value, name) for name, value in node.args.items()}  # inputs in argument order (tensor_refs)
    plan = [(p.name, p.kwarg_only, specs[p.name]) for p in overload._schema.arguments if p.name in specs]

    def rebuild(spec, live):
        if isinstance(spec, list):
            return [rebuild(s, live) for s in spec]
        kind, value = spec
        return live[value] if kind == "tensor" else value

    def call(*live):
        args = [rebuild(spec, live) for _, kw, spec in plan if not kw]
        kwargs = {name: rebuild(spec, live) for name, kw, spec in plan if kw}
        return overload(*args, **kwargs)

    if symbolic is None:
        gm = make_fx(call, decomposition_table=_full_table(), tracing_mode="fake")(*tensors)
        return graph_from_fx(gm, f"{node.op}:decomposed")
    try:
        gm = make_fx(call, decomposition_table=_full_table(), tracing_mode="symbolic")(*tensors)
    except Exception as exc:  # e.g. a decomposition that branches on a size it cannot decide symbolically
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AssertionError(f"PyTorch's decomposition of {node.op} does not trace over symbolic sizes: "
                             f"{type(exc).__name__}: {first[:200]}") from None
    symbolic.check_guards(node.op)
    sub = graph_from_fx(gm, f"{node.op}:decomposed")
    return Graph(name=sub.name, nodes={k: symbolic.rename(n) for k, n in sub.nodes.items()},
                 inputs=symbolic.rename(sub.inputs), params=symbolic.rename(sub.params), outputs=sub.outputs,
                 symbols={k: v for k, v in graph.symbols.items() if k in symbolic.symbols})


def expansion(node, graph):
    """(sub-graph, the node's tensor arguments feeding its inputs in argument order), traced once per signature."""
    ranges = _ranges(node, graph)
    key = (node.op, repr([(k, str(graph.meta_of(v)) if isinstance(v, Ref) else repr(v)) for k, v in node.args.items()]),
           ranges)  # in argument order, as the sub-graph's inputs are
    if key not in _EXPANSIONS:
        _EXPANSIONS[key] = _trace(node, graph, ranges)
    return _EXPANSIONS[key], node.tensor_refs()


def decomposed_ops(node, graph) -> frozenset:
    """The ops PyTorch's core-ATen decomposition of this node yields (traced at its sizes, symbolic ones too)."""
    sub, _ = expansion(node, graph)
    return frozenset(n.op for n in sub)


@strategy("torch/decomposition", op="*", kind="decompose", tags=("generic",),
          examples=[accept(lambda a: F.layer_norm(a, (4,)), t(2, 3, 4)),
                    reject(lambda a: F.layer_norm(a, (4,)), t(2, 3, 4).double(), match="float64")])
def rule_torch_decomposition(node, graph, catalog_ops):
    """Expand the node with PyTorch's core-ATen decomposition table; each yielded op is then planned in turn."""
    overload = resolve(node.op)
    if overload is None:
        skip(f"{node.op} is not an ATen op")
    if overload not in _table():
        skip(f"PyTorch's core-ATen table has no decomposition for {node.op}")
    for name, meta in node.tensor_args().items():
        assert meta.dtype != "float64", f"{name} is float64: TensorRT has no float64 tensors"
    ops = decomposed_ops(node, graph)
    assert node.op not in ops, f"the decomposition of {node.op} yields the op itself"
    missing = sorted(ops - catalog_ops)
    assert not missing, f"the decomposition yields {', '.join(missing)}, which no catalog strategy maps"


rule_torch_decomposition.expand(expansion, keyed=True)  # a function of the node's class: traced per signature
