"""The captured graph: what rules see of a model.

Nothing here knows about TensorRT or the catalog. A :class:`Graph` is a plain,
ordered set of :class:`Node` objects built from an ``ExportedProgram`` by
``opmap.loading.capture``. Arguments are kept by their ATen schema name, tensor
values carry shapes (with symbolic dims) and dtypes, and symbols carry the value
ranges torch.export proved for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

# Dims are ints when static, or a string naming a symbolic size ("s0", "u0", "2*s0").
Dim = int | str


def finite_int(value: Any) -> int | None:
    """An int, or None for infinities and NaN (sympy's ``int_oo`` included)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return int(f)


@dataclass(frozen=True)
class Ref:
    """An argument that is the output of another node (by node name)."""

    node: str
    index: int | None = None  # output index for multi-output producers

    def __str__(self) -> str:
        return self.node if self.index is None else f"{self.node}[{self.index}]"


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[Dim, ...]
    dtype: str  # torch dtype name without the "torch." prefix: "float32", "bool", ...

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    @property
    def numel(self) -> int | None:
        return math.prod(self.shape) if self.is_static else None  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    __repr__ = __str__


@dataclass(frozen=True)
class SymbolRange:
    lower: int | None
    upper: int | None  # None: unbounded
    data_dependent: bool  # an unbacked symbol (u0...): a size only known at run time


@dataclass
class Node:
    """One ATen call (or graph plumbing such as ``operator.getitem``)."""

    name: str
    op: str  # "aten.nonzero.default", "operator.getitem", ...
    args: dict[str, Any]  # by schema name; tensors appear as Ref
    outputs: list[TensorMeta | None]  # None for non-tensor outputs (SymInt, None)
    users: list[str] = field(default_factory=list)
    scalar_outputs: list[str] = field(default_factory=list)  # symbolic scalar results ("u0")
    stack: str | None = None  # the module path / source location, where torch.export kept one

    # Set by Graph: lets a rule ask for an argument's meta without indexing magic.
    _graph: "Graph | None" = field(default=None, repr=False, compare=False)

    @property
    def out(self) -> TensorMeta | None:
        """The first tensor output, the usual case for single-output ops."""
        return self.outputs[0] if self.outputs else None

    def arg(self, name: str, default: Any = None) -> Any:
        """An argument by its schema name (``node.arg("dim")``)."""
        return self.args.get(name, default)

    def meta(self, name: str) -> TensorMeta | None:
        """The tensor meta of a tensor argument, by schema name."""
        value = self.args.get(name)
        if isinstance(value, Ref) and self._graph is not None:
            return self._graph.meta_of(value)
        return None

    def tensor_args(self) -> dict[str, TensorMeta]:
        """Every tensor argument (lists flattened as ``name[i]``) with its meta."""
        found: dict[str, TensorMeta] = {}
        if self._graph is None:
            return found
        for key, value in self.args.items():
            items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            for i, item in items:
                if isinstance(item, Ref):
                    meta = self._graph.meta_of(item)
                    if meta is not None:
                        found[key if i is None else f"{key}[{i}]"] = meta
        return found

    def tensor_refs(self) -> list[Ref]:
        """Every tensor argument as its Ref, in argument order, lists flattened (repeats kept)."""
        refs: list[Ref] = []
        for value in self.args.values():
            if isinstance(value, Ref):
                refs.append(value)
            elif isinstance(value, (list, tuple)):
                refs.extend(v for v in value if isinstance(v, Ref))
        return refs

    def input_dtypes(self) -> set[str]:
        return {m.dtype for m in self.tensor_args().values()}

    def __str__(self) -> str:
        outs = ", ".join(str(o) for o in self.outputs if o is not None)
        return f"{self.name} = {self.op} -> {outs or '()'}"

    def __repr__(self) -> str:  # short: reprs end up in audit evidence
        return f"<Node {self}>"


@dataclass(frozen=True)
class State:
    """State the program updates in place, functionalized (issue 19): a buffer, parameter or user input it mutates is
    an engine input (``input``, the placeholder's name) and its new value an engine output (:attr:`output_name`),
    graph output number ``output``. One call is exact; the caller carries the state from one call to the next."""

    input: str  # the placeholder (engine input) holding the state before the call
    output: int  # the position of its new value among the graph's outputs
    target: str  # the buffer's or parameter's path in the module (a user input: its name)
    kind: str  # BUFFER_MUTATION | PARAMETER_MUTATION | USER_INPUT_MUTATION (torch.export's output kind)

    @property
    def output_name(self) -> str:
        return f"{self.input}.updated"

    def describe(self) -> str:
        what = {"BUFFER_MUTATION": "buffer", "PARAMETER_MUTATION": "parameter"}.get(self.kind, "input")
        return f"{what} {self.target}: engine input {self.input}, its new value engine output {self.output_name}"


@dataclass
class Graph:
    name: str
    nodes: dict[str, Node]  # call nodes, in graph order
    inputs: dict[str, TensorMeta]  # user inputs
    params: dict[str, TensorMeta]  # parameters, buffers and constants lifted to inputs
    outputs: list[Ref | None]
    symbols: dict[str, SymbolRange]
    facts: tuple[str, ...] = ()  # relations between input-dim symbols the export states (``Eq(s0*s1, 24)``): shapefacts
    state: tuple[State, ...] = ()  # mutated buffers/parameters/inputs: engine inputs and outputs (state in, state out)

    def __post_init__(self) -> None:
        for node in self.nodes.values():
            node._graph = self

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes, inputs {', '.join(self.inputs)}>"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def meta_of(self, ref: Ref) -> TensorMeta | None:
        if ref.node in self.inputs:
            return self.inputs[ref.node]
        if ref.node in self.params:
            return self.params[ref.node]
        node = self.nodes.get(ref.node)
        if node is None:
            return None
        index = ref.index or 0
        return node.outputs[index] if index < len(node.outputs) else None

    def dim_range(self, symbol: str) -> tuple[int, int | None]:
        """The export's proven range of a size symbol: (lower, upper or None when unbounded); (0, None) if unknown."""
        rng = self.symbols.get(symbol)
        return (rng.lower if rng and rng.lower is not None else 0, rng.upper if rng and rng.upper is not None else None)

    def producer(self, ref: Ref) -> Node | None:
        return self.nodes.get(ref.node)

    def consumers(self, node: Node | str) -> list[Node]:
        name = node if isinstance(node, str) else node.name
        return [self.nodes[u] for u in self.nodes[name].users if u in self.nodes]

    def is_output(self, node: Node | str) -> bool:
        name = node if isinstance(node, str) else node.name
        return any(r is not None and r.node == name for r in self.outputs)

    def ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts
