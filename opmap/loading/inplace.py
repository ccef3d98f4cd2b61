"""In-place (``aten.div_.Tensor``) and ``out=`` (``aten.add.out``) overloads, planned as their functional op.

torch.export keeps such calls on intermediates (``w /= w.sum(-1, keepdim=True)`` in a mixture-of-experts router).
A network has no memory to mutate: the functional result *is* the new value, and every later reader refers to the
mutating node. That holds when the mutated tensor is neither a graph input or weight (state across calls), nor a
view of another tensor (the base would change too), nor read again after the mutation through its old name. One
rule for every such overload, judged here once, instead of one strategy per op.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from opmap.loading.graph import Graph, Node, Ref


def aten_overload(op: str):
    """``"aten.gelu.default"`` -> ``torch.ops.aten.gelu.default`` (None for non-ATen targets)."""
    import torch

    parts = op.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        return None
    packet = getattr(torch.ops.aten, parts[1], None)
    return getattr(packet, parts[2], None) if packet is not None else None


def _written(schema) -> list[str]:
    return [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]


@lru_cache(maxsize=None)
def functional_op(op: str) -> tuple[str, tuple[str, ...]] | None:
    """(the functional overload, the arguments the overload writes), or None when ``op`` mutates nothing or has no
    functional twin. ``aten.X_.Y`` -> ``aten.X.Y``; ``aten.X.out`` -> the overload of X with the same arguments less
    the written ones."""
    overload = aten_overload(op)
    if overload is None:
        return None
    written = _written(overload._schema)
    if not written:
        return None
    _, name, over = op.split(".")
    inplace = name.endswith("_")  # X_ reads the tensor it writes (self); out= only writes its out arguments
    kept = [a.name for a in overload._schema.arguments if inplace or a.name not in written]
    candidates = [(name.removesuffix("_"), over)] if name.endswith("_") else []
    import torch

    packet = getattr(torch.ops.aten, name.removesuffix("_"), None)
    candidates += [(name.removesuffix("_"), o) for o in (packet.overloads() if packet is not None else [])]
    for base, o in candidates:
        twin = aten_overload(f"aten.{base}.{o}")
        if twin is None or _written(twin._schema):
            continue
        if [a.name for a in twin._schema.arguments] == kept:
            return f"aten.{base}.{o}", tuple(written)
    return None


def mutates(op: str) -> bool:
    """Whether the ATen overload writes one of its arguments (in place or ``out=``)."""
    overload = aten_overload(op)
    return overload is not None and bool(_written(overload._schema))


_EVAL_NOOPS = ("aten.dropout_.default", "aten.feature_dropout_.default", "aten.alpha_dropout_.default",
               "aten.feature_alpha_dropout_.default")


def writes_nothing(node: Node) -> bool:
    """An in-place dropout in eval mode (or with p = 0) leaves its tensor as it is (core/dropout-eval maps it)."""
    return node.op in _EVAL_NOOPS and (not node.arg("train") or node.arg("p") == 0)


def refused(graph: Graph) -> list[str]:
    """Why each mutating node of ``graph`` cannot be planned as its functional op on its own (:func:`as_functional`):
    a write into a view, into a graph input or weight, or one read again afterwards. Capture functionalizes such a
    program as a whole (state becomes engine inputs and outputs) instead of refusing it. A write that changes nothing
    (an in-place dropout in eval mode) is not one."""
    return [why for node in graph if mutates(node.op) and not writes_nothing(node)
            for new, why in [as_functional(node, graph)] if new is None]


def _view_op(node: Node | None, graph: Graph) -> str | None:
    """The op that produced ``node``'s value as a view of another tensor (its schema says the output aliases)."""
    if node is None:
        return None
    if node.op == "operator.getitem":
        source = node.arg("arg0")
        return _view_op(graph.nodes.get(source.node), graph) if isinstance(source, Ref) else None
    overload = aten_overload(node.op)
    if overload is None:
        return None
    returns = overload._schema.returns
    return node.op if any(r.alias_info is not None and not r.alias_info.is_write for r in returns) else None


def as_functional(node: Node, graph: Graph) -> tuple[Node | None, str]:
    """(the node rewritten as its functional op, a note) or (None, why it cannot be)."""
    found = functional_op(node.op)
    if found is None:
        return None, f"{node.op} mutates a tensor and has no functional overload"
    op, written = found
    order = list(graph.nodes)
    here = order.index(node.name) if node.name in order else len(order)
    for name in written:
        target = node.arg(name)
        if not isinstance(target, Ref):
            return None, f"{node.op} writes {name}={target!r}, not a tensor of the graph"
        if target.node in graph.inputs or target.node in graph.params:
            return None, f"{node.op} mutates {target.node}, a graph input or weight: an engine keeps no state across calls"
        view = _view_op(graph.nodes.get(target.node), graph)
        if view is not None:
            return None, f"{node.op} mutates {target.node}, a view ({view}) of another tensor that would change with it"
        later = [u for u in graph.nodes[target.node].users if u != node.name and u in graph.nodes and order.index(u) > here] \
            if target.node in graph.nodes else []
        if later:
            return None, f"{node.op} mutates {target.node}, which {', '.join(later)} read(s) again afterwards"
    args = node.args if node.op.split(".")[1].endswith("_") else {k: v for k, v in node.args.items() if k not in written}
    note = f"{node.op} planned as {op} (it mutates only an intermediate: {', '.join(str(node.arg(w)) for w in written)})"
    return dataclasses.replace(node, op=op, args=args), note
