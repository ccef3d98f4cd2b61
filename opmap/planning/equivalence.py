"""Judging once per equivalence class: a verdict is a function of what the rule read.

Two nodes with the same op, the same argument metadata (argument values, and tensor
arguments by their metas) and the same outputs are judged alike by a rule that reads
nothing else. Whether a rule read anything else is not declared but observed: while
a verdict may be cached, the rule sees the node, the graph and the upstream choices
through watching wrappers. Reading what the key holds (``node.op``, ``node.meta()``,
``node.tensor_args()``, argument values, ``graph.meta_of`` of the node's own
arguments) is free; anything else — another node's name, the graph's inputs or
symbols, ``consumers``, ``upstream`` — marks the judgement *context-dependent*, and
such a verdict is never reused. A fixture computed from a watched value passes the
mark on wherever its value is used again.

Sound because rules are deterministic functions of their fixtures: a judgement that
read only the key takes the same path, and reaches the same verdict, for every node
with that key. Text built in C (``", ".join(names)``) does not pass through the
wrappers, so a verdict is served from the memo only after a second node of its class
was judged in full and agreed field by field; a disagreement makes the class
context-dependent.
"""

from __future__ import annotations

from typing import Any

from opmap.loading.graph import Graph, Node, Ref


class Watch:
    """Set when the judgement in progress reads something its key does not hold."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty = False


def _forwarder(name: str, op):
    def forward(self, *args):
        object.__getattribute__(self, "_watch").dirty = True
        return op(object.__getattribute__(self, "_target"), *args)

    forward.__name__ = name
    return forward


_OPS = {
    "__iter__": iter, "__len__": len, "__bool__": bool, "__repr__": repr, "__str__": str, "__hash__": hash,
    "__contains__": lambda t, x: x in t, "__getitem__": lambda t, k: t[k], "__eq__": lambda t, o: t == o,
    "__ne__": lambda t, o: t != o, "__format__": format, "__call__": lambda t, *a: t(*a),
}


class Watched:
    """A value outside the key: any use of it marks the judgement context-dependent."""

    __slots__ = ("_target", "_watch")

    def __init__(self, target: Any, watch: Watch) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_watch", watch)

    @property
    def __class__(self):  # isinstance() sees the wrapped type
        return type(object.__getattribute__(self, "_target"))

    def __getattr__(self, name: str) -> Any:
        self._watch.dirty = True
        return getattr(self._target, name)


for _name, _op in _OPS.items():
    setattr(Watched, _name, _forwarder(_name, _op))


class WatchedGraph(Watched):
    """The graph: ``meta_of`` the node's own arguments is in the key; everything else is context."""

    __slots__ = ()

    def meta_of(self, ref: Ref):
        if isinstance(ref, KeyedRef):
            return self._target.meta_of(ref.plain)
        self._watch.dirty = True
        return self._target.meta_of(ref)


class Name(str):
    """A node's name, read from a keyed argument: comparing, hashing or formatting it is context."""

    def __new__(cls, value: str, watch: Watch) -> "Name":
        obj = super().__new__(cls, value)
        obj._watch = watch
        return obj

    def __getattribute__(self, name: str) -> Any:
        if name != "_watch":
            object.__getattribute__(self, "_watch").dirty = True
        return super().__getattribute__(name)


def _name_op(name: str):
    base = getattr(str, name)

    def op(self, *args):
        object.__getattribute__(self, "_watch").dirty = True
        return base(self, *args)

    return op


for _name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__str__", "__repr__", "__format__",
              "__add__", "__mod__", "__rmod__", "__mul__", "__rmul__", "__contains__", "__getitem__", "__len__", "__iter__"):
    setattr(Name, _name, _name_op(_name))


class KeyedRef(Ref):
    """One of the node's own tensor arguments: its meta is in the key, its producer's name is not."""

    def __init__(self, ref: Ref, watch: Watch) -> None:
        object.__setattr__(self, "node", Name(ref.node, watch))
        object.__setattr__(self, "index", ref.index)
        object.__setattr__(self, "plain", ref)

    @property
    def __class__(self):
        return Ref

    def __repr__(self) -> str:
        return f"Ref(node={self.node!r}, index={self.index!r})"


def _keyed(value: Any, watch: Watch) -> Any:
    if isinstance(value, Ref):
        return KeyedRef(value, watch)
    if isinstance(value, list):
        return [_keyed(v, watch) for v in value]
    if isinstance(value, tuple):
        return tuple(_keyed(v, watch) for v in value)
    return value


class NodeView:
    """The node as a rule sees it: op, arguments and metas are keyed; name, users and stack are context."""

    __slots__ = ("_node", "_watch", "args", "op", "outputs")

    def __init__(self, node: Node, watch: Watch) -> None:
        self._node, self._watch = node, watch
        self.op, self.outputs = node.op, node.outputs
        self.args = {k: _keyed(v, watch) for k, v in node.args.items()}

    @property
    def __class__(self):
        return Node

    @property
    def out(self):
        return self._node.out

    def arg(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def meta(self, name: str):
        return self._node.meta(name)

    def tensor_args(self):
        return self._node.tensor_args()

    def input_dtypes(self):
        return self._node.input_dtypes()

    def tensor_refs(self):
        return Node.tensor_refs(self)  # over the keyed arguments: a producer's name is context only when read

    def __getattr__(self, name: str) -> Any:
        self._watch.dirty = True
        return getattr(self._node, name)

    def __str__(self) -> str:
        self._watch.dirty = True
        return str(self._node)

    def __repr__(self) -> str:
        self._watch.dirty = True
        return repr(self._node)


def _canon(value: Any, graph: Graph) -> Any:
    if isinstance(value, Ref):
        return ("ref", value.index, graph.meta_of(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_canon(v, graph) for v in value))
    return (type(value).__name__, repr(value))  # repr: 0.0 and -0.0, nan, 1 and True stay apart


def node_key(node: Node, graph: Graph) -> tuple:
    """What a node-local rule may read of a node: op, arguments (tensors by meta) and outputs."""
    return (node.op, tuple((k, _canon(v, graph)) for k, v in node.args.items()), tuple(node.outputs))


CONTEXT = object()  # a memo entry: this rule's verdict for this key read context, so it is judged per node


class VerdictMemo:
    """Per planning run, shared by the planners of its sub-graphs."""

    def __init__(self) -> None:
        self.verdicts: dict[tuple, Any] = {}  # (session, rule, node key) -> (verdict, confirmed by a 2nd node) | CONTEXT
        self.subplans: dict[tuple, Any] = {}  # (strategy, sub-graph, depth) -> planned expansion (see Planner._expand)
        self.choices: dict[tuple, Any] = {}  # (depth, node class) -> a node's plan and the sub-graphs it saw (Planner._plan_node)
        self._classes: dict[tuple, int] = {}

    def intern(self, key: tuple) -> int:
        """A small number standing for a key (a node's, a session's): hashed and compared once, not per rule."""
        return self._classes.setdefault(key, len(self._classes))
