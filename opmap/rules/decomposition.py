"""PyTorch's own decomposition as one ``decompose`` candidate for any op, chosen per node.

Converters that run the decomposition table as a pre-pass lose the fused layers TensorRT
has (attention, layer norm, gelu...). Here the expansion competes with those layers: it
applies to a node when PyTorch's core-ATen table decomposes its op and every op the
expansion yields has a strategy in the catalog.
"""

import pickle
import sys
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from opmap.engine import diskcache
from opmap.engine.capture import op_name
from opmap.engine.graph import Ref
from opmap.engine.inplace import aten_overload as resolve
from opmap.engine.rules import accept, reject, skip, strategy
from opmap.rules.common import t


@lru_cache(maxsize=1)
def _full_table():
    from torch._decomp import core_aten_decompositions

    return core_aten_decompositions()


class _Table:
    """Which ATen ops the core-ATen table decomposes, from a cached list of their names: materialising the table
    takes about a second per process, and only tracing needs it (see :mod:`opmap.engine.diskcache`)."""

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


def _argument(value, name: str, graph):
    """Rebuild an ATen argument from its captured form (tensors as empty ones of the same meta)."""
    if isinstance(value, Ref):
        meta = graph.meta_of(value)
        assert meta is not None and meta.is_static, f"argument {value} has dynamic dims {meta.shape if meta else '?'}"
        return torch.empty(meta.shape, dtype=getattr(torch, meta.dtype))
    if isinstance(value, list):
        return [_argument(v, name, graph) for v in value]
    if isinstance(value, str) and name in ("dtype", "layout", "memory_format"):  # ATen's names for these enums
        return getattr(torch, value.removeprefix("torch."))
    if isinstance(value, str) and name == "device":
        return torch.device(value)
    return value


_EXPANSIONS: dict[tuple[str, str], object] = {}


def _trace(node, graph):
    """The traced expansion, from the disk cache when this op was traced with these argument metas before."""
    name = diskcache.key("decomposition", torch.__version__, _code_hash(), node.op, repr(_signature(node.args, graph)))
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
    from opmap.engine import capture, graph

    return diskcache.key(*(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], capture, graph)))


def _make_fx(node, graph):
    """make_fx of the op under PyTorch's core-ATen table, with the node's tensor arguments as the only inputs."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from opmap.engine.capture import graph_from_fx

    overload = resolve(node.op)
    tensors: list = []

    def collect(value, name):
        if isinstance(value, Ref):
            tensors.append(_argument(value, name, graph))
            return ("tensor", len(tensors) - 1)
        if isinstance(value, list):
            return [collect(v, name) for v in value]
        return ("const", _argument(value, name, graph))

    plan = []
    for p in overload._schema.arguments:
        if p.name in node.args:
            plan.append((p.name, p.kwarg_only, collect(node.args[p.name], p.name)))

    def rebuild(spec, live):
        if isinstance(spec, list):
            return [rebuild(s, live) for s in spec]
        kind, value = spec
        return live[value] if kind == "tensor" else value

    def call(*live):
        args = [rebuild(spec, live) for _, kw, spec in plan if not kw]
        kwargs = {name: rebuild(spec, live) for name, kw, spec in plan if kw}
        return overload(*args, **kwargs)

    gm = make_fx(call, decomposition_table=_full_table(), tracing_mode="fake")(*tensors)
    return graph_from_fx(gm, f"{node.op}:decomposed")


def expansion(node, graph):
    """(sub-graph, the node's tensor arguments feeding its inputs in order), traced once per signature."""
    key = (node.op, repr(sorted((k, str(graph.meta_of(v)) if isinstance(v, Ref) else repr(v)) for k, v in node.args.items())))
    if key not in _EXPANSIONS:
        _EXPANSIONS[key] = _trace(node, graph)
    return _EXPANSIONS[key], _tensor_args(node)


def _tensor_args(node) -> list[Ref]:
    """The node's tensor arguments in schema order, lists flattened: the sub-graph's inputs, in order."""
    refs: list[Ref] = []

    def collect(value):
        if isinstance(value, Ref):
            refs.append(value)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    overload = resolve(node.op)
    for p in overload._schema.arguments:
        if p.name in node.args:
            collect(node.args[p.name])
    return refs


def decomposed_ops(node, graph) -> frozenset:
    """The ops PyTorch's core-ATen decomposition of this node yields (traced at the node's static sizes)."""
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


rule_torch_decomposition.expand(expansion)
