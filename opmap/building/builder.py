"""The builder: a plan becomes one strongly typed ``INetworkDefinition``, through ``add_*`` only.

Each chosen strategy's emit function receives an :class:`EmitContext` for its node and returns
the node's outputs as TensorRT tensors. Every layer is named ``node/strategy/tag`` so it traces
back to its node; the layer-to-node map goes into the engine's sidecar JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from opmap.loading import symexpr
from opmap.building.backend import BackendProfile, logger, strongly_typed_network
from opmap.native import native_stderr_silenced
from opmap.loading.graph import Graph, Node, Ref, TensorMeta
from opmap.planning.planner import Plan
from opmap.planning.strategy import Strategy
from opmap.building.profile import profile_points
from opmap.errors import BuildError, EmitterBug
from opmap.version import __version__

TORCH_TO_TRT = {
    "float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int32": "INT32", "int64": "INT64",
    "bool": "BOOL", "int8": "INT8", "uint8": "UINT8", "float8_e4m3fn": "FP8",
}
TRT_TO_TORCH = {v: getattr(torch, k) for k, v in TORCH_TO_TRT.items()}
NP_DTYPE = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
            "int8": np.int8, "uint8": np.uint8}


PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16",
              "int8": "float32"}  # an INT8 node computes between Q/DQ pairs; the float around them stays float32


def trt_dtype(trt: Any, dtype: str):
    if dtype not in TORCH_TO_TRT:
        raise BuildError(f"dtype {dtype} has no TensorRT equivalent")
    return getattr(trt.DataType, TORCH_TO_TRT[dtype])


def torch_dtype_of(trt_type: Any) -> torch.dtype:
    return TRT_TO_TORCH[trt_type.name]


def dtype_name(trt_type: Any) -> str:
    return str(torch_dtype_of(trt_type)).removeprefix("torch.")


@dataclass
class Built:
    """What a build produced: the network (for the interpreter), the engine bytes, the maps."""

    trt: Any
    builder: Any
    network: Any
    config: Any
    inputs: dict[str, TensorMeta]
    outputs: list[str]  # network output tensor names, in graph output order (+ extra outputs)
    output_nodes: list[str | None]  # the graph node (or input) behind each network output
    layer_map: dict[str, dict[str, str]]  # layer name -> {"node", "strategy"}
    extra_outputs: dict[str, str] = field(default_factory=dict)  # network output -> what it is (e.g. a valid count)
    graph_outputs: list = field(default_factory=list)  # the graph's output refs by position (None: a constant, not computed)
    graph: Graph | None = None  # the captured graph the network was built from
    attention: dict[str, Any] = field(default_factory=dict)  # IAttention helpers by their name (the interpreter reads them)
    # graph node -> its output tensors' names by output index (None: that output is no tensor of the network, e.g. a
    # masked selection or a non-tensor result): discrete checks, INT8 fitting, verify --locate
    node_tensors: dict[str, list[str | None]] = field(default_factory=dict)
    engine: bytes | None = None
    build_seconds: float | None = None
    checked: dict[str, Any] | None = None  # build's reference check at one point (app.check_built); None: not checked
    keep: list = field(default_factory=list, repr=False)  # numpy arrays TensorRT's Weights point into

    def sidecar(self, plan: Plan, backend: BackendProfile, precision: str) -> dict[str, Any]:
        return {
            "opmap": __version__,
            "backend": {"name": backend.name, "version": backend.version},
            "precision": precision,
            "node_precision": {n.node.name: n.precision for n in plan.nodes if n.precision},
            "engine_bytes": len(self.engine) if self.engine else None,
            "build_seconds": self.build_seconds,
            "checked": self.checked,
            "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in self.inputs.items()},
            "outputs": [
                {"name": name, "node": node, "extra": self.extra_outputs.get(name)}
                for name, node in zip(self.outputs, self.output_nodes)
            ],
            # state in, state out: each mutated buffer/parameter/input is an input and its new value an output
            "state": [{"input": s.input, "output": s.output_name, "target": s.target, "kind": s.kind}
                      for s in (self.graph.state if self.graph is not None else ())],
            "plan": [
                {"node": n.node.name, "op": n.node.op, "strategy": n.choice.strategy if n.choice else None,
                 "kind": n.choice.kind if n.choice else None, "contract": n.contract,
                 **({"precision": n.precision, "precision_why": n.precision_why} if n.precision_why else {})}
                for n in plan.nodes
            ],
            "layers": self.layer_map,
        }


@dataclass
class Masked:
    """What a masked-rewrite strategy emits for a selection (``x[mask]``, ``nonzero``): the rows it would select and
    the mask, not a data-dependent tensor. Only consumers that reduce the selection away can take it."""

    rows: Any  # ITensor [numel, *rest]: every candidate row
    mask: Any  # ITensor [numel] bool: which rows are selected
    source: str  # the selecting node


class EmitContext:
    """The converter API for rule authors: what a strategy's ``@rule_x.emit`` function works with.

    ``emit(ctx, node)`` returns the node's output as a TensorRT ``ITensor`` (a list for several outputs). ``ctx`` gives
    the node's arguments by ATen schema name (:meth:`input`, :meth:`operand`, :meth:`meta`), constants and casts, and
    layer helpers that name every layer ``node/strategy/tag`` (so build errors and the sidecar trace back to the node).
    Dtypes are torch names (``"float32"``, ``"int64"``, ``"bool"``); ops are TensorRT enum names (``"SUM"``, ``"TANH"``).
    Anything the helpers do not cover: ``ctx.out(ctx.net.add_*(...), "tag")`` on the raw ``INetworkDefinition``
    (``ctx.net``, enums through ``ctx.trt``). Stable since 0.1 (README, "Writing rules that build"); ``node``,
    ``strategy``, ``precision``, ``trt`` and ``net`` are public attributes, ``nb`` is not.
    """

    def __init__(self, net_builder: "NetworkBuilder", node: Node, strategy: Strategy, prefix: str = "",
                 precision: str | None = None, quant: dict[str, tuple] | None = None) -> None:
        self.nb = net_builder
        self.quant = quant or {}  # argument name -> (scale, axis, dtype): Q/DQ on that input (an INT8/FP8 node)
        self.prefix = prefix
        self.precision = precision or net_builder.compute_dtype  # the float dtype this node computes in
        self.trt = net_builder.trt
        self.net = net_builder.network
        self.node = node
        self.strategy = strategy
        self._count = 0

    # -- inputs ---------------------------------------------------------------------------------
    def tensor(self, ref: Ref) -> Any:
        """The value of any graph reference (a ``Ref`` from ``node.arg``), as built so far: an ITensor, no cast."""
        return self.nb.tensor(ref)

    def input(self, name: str) -> Any:
        """A tensor argument by schema name (``ctx.input("self")``), as an ITensor; a float one is cast to the node's
        precision. A non-tensor argument is a :class:`BuildError`: read it with ``node.arg(name)``."""
        value = self.node.arg(name)
        if not isinstance(value, Ref):
            raise BuildError(f"{self.node.name}: argument {name!r} is {value!r}, not a tensor")
        t = self.tensor(value)
        if isinstance(t, Masked):
            raise BuildError(f"{self.node.name} ({self.node.op}) consumes the masked selection {t.source}, which only "
                             f"reductions can take; plan {t.source} with another strategy")
        if t is not None and name in self.quant:  # Q reads the tensor as it is; its DQ gives the node's precision
            return self.nb.quantize_once(self, t, *self.quant[name])
        return self.at_precision(t) if t is not None else t

    def at_precision(self, t: Any) -> Any:
        """A float tensor in the node's precision (one cast per tensor and precision, shared by its readers); other
        tensors as they are. :meth:`input` applies it; an emitter reading a tensor another way (through a producer it
        folds) applies it itself."""
        if self.dtype(t) in ("float32", "float16", "bfloat16") and self.dtype(t) != self.precision:
            t = self.nb.cast_once(self, t, self.precision)  # explicit casts where precision changes between nodes
        return t

    def masked(self, name: str) -> Masked | None:
        """The masked selection an argument refers to, when its producer was planned as a masked rewrite."""
        value = self.node.arg(name)
        t = self.tensor(value) if isinstance(value, Ref) else None
        return t if isinstance(t, Masked) else None

    def operand(self, name: str, like: Any = None) -> Any:
        """A tensor argument, or a Python scalar argument made a constant of ``like``'s dtype."""
        value = self.node.arg(name)
        if isinstance(value, Ref):
            return self.input(name) if name in self.quant else self.tensor(value)  # a planned Q/DQ applies here too
        dtype = self.dtype(like) if like is not None else ("float32" if isinstance(value, float) else "int64")
        return self.const(value, dtype)

    def meta(self, name: str) -> TensorMeta | None:
        """An argument's captured meta by schema name: ``shape`` (ints, or symbolic dims like ``"s0"``), ``dtype``."""
        return self.node.meta(name)

    def graph_meta(self, ref: Ref) -> TensorMeta | None:
        """The captured meta (shape with symbolic dims, dtype) of any value of the graph being built."""
        graph = self.node._graph  # the node's own graph: an expansion's sub-graph has its own names
        return graph.meta_of(ref) if graph is not None else None

    # -- naming ---------------------------------------------------------------------------------
    def layer(self, layer: Any, tag: str = "") -> Any:
        """Name a layer ``node/strategy/tag`` and record it in the sidecar's layer map; returns the layer."""
        self._count += 1
        name = f"{self.prefix}{self.node.name}/{self.strategy.id}/{tag or self._count}"
        layer.name = name
        entry = {"node": self.prefix.split("/", 1)[0] or self.node.name, "strategy": self.strategy.id}
        if self.prefix:
            entry["via"] = self.prefix.split("/", 1)[1].rstrip("/")  # the expanding strategy (and nested ones)
        self.nb.layer_map[name] = entry
        return layer

    def out(self, layer: Any, tag: str = "", index: int = 0) -> Any:
        """Name a layer (:meth:`layer`) and return its output ``index``: ``ctx.out(ctx.net.add_topk(...), "topk")``."""
        return self.layer(layer, tag).get_output(index)

    # -- constants and dtypes -------------------------------------------------------------------
    def const(self, value: Any, dtype: str | None = None, shape: Sequence[int] | None = None) -> Any:
        """A Constant layer from a Python number, list or tensor; ``dtype`` defaults to the value's (a float follows the
        node's precision; float64 becomes float32), ``shape`` reshapes it. A 0-d value stays 0-d: pass it to
        :meth:`elementwise`, which broadcasts."""
        arr = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if dtype is None:  # inferred from the value: a float follows the node's precision
            dtype = str(arr.dtype).removeprefix("torch.")
            if dtype in ("float32", "float64"):
                dtype = self.compute("float32")
        if dtype == "float64":
            dtype = "float32"
        arr = arr.to(getattr(torch, dtype))
        if shape is not None:
            arr = arr.reshape(tuple(shape))
        if dtype == "bfloat16":  # numpy has no bfloat16: build in float32 and cast
            return self.cast(self.const(arr.float(), "float32"), "bfloat16")
        if arr.numel() == 0 and arr.dim() > 0:  # a Constant needs weights: an empty tensor is a zero-length Slice of one
            one = self.const(torch.zeros([1] * arr.dim(), dtype=arr.dtype), dtype)
            return self.out(self.net.add_slice(one, (0,) * arr.dim(), tuple(arr.shape), (1,) * arr.dim()), "empty")
        np_arr = np.array(arr.numpy(), dtype=NP_DTYPE[dtype], order="C")  # keeps 0-d arrays 0-d
        self.nb.keep.append(np_arr)
        layer = self.net.add_constant(tuple(np_arr.shape), self.trt.Weights(np_arr))
        return self.out(layer, "const")

    def dtype(self, t: Any) -> str:
        """An ITensor's dtype as a torch name (``"float32"``)."""
        return dtype_name(t.dtype)

    def cast(self, t: Any, dtype: str) -> Any:
        """``t`` as ``dtype`` (a Cast layer; none when it already is)."""
        if self.dtype(t) == dtype:
            return t
        return self.out(self.net.add_cast(t, trt_dtype(self.trt, dtype)), f"cast-{dtype}")

    def rank(self, t: Any) -> int:
        """How many dims ``t`` has (known at build time, even where its sizes are not)."""
        return len(t.shape)

    # -- shapes ---------------------------------------------------------------------------------
    def reshape(self, t: Any, dims: Sequence[int | str]) -> Any:
        """Reshape to dims (ints, -1, or symbolic names resolved through shape tensors)."""
        layer = self.net.add_shuffle(t)
        unknown = [d for d in dims if not isinstance(d, int) or d == -1]
        if len(unknown) == 1 and not isinstance(unknown[0], int):  # one symbolic dim: TensorRT infers it as -1
            dims = [-1 if not isinstance(d, int) else d for d in dims]
        if all(isinstance(d, int) for d in dims) and sum(1 for d in dims if d == -1) <= 1:
            layer.reshape_dims = tuple(dims)
            layer.zero_is_placeholder = False
        else:
            layer.set_input(1, self.shape_tensor(dims))
        return self.out(layer, "reshape")

    def shape_tensor(self, dims: Sequence[int | str | Any]) -> Any:
        """An int64 [len(dims)] shape tensor from ints, symbolic sizes and [1] (or longer) shape tensors, concatenated."""
        parts = []
        for d in dims:
            if isinstance(d, int):
                parts.append(self.const([d], "int64"))
            elif isinstance(d, str):
                parts.append(self.reshape(self.nb.symbol(d), [1]))
            else:
                parts.append(d)
        if len(parts) == 1:
            return parts[0]
        layer = self.net.add_concatenation(parts)
        layer.axis = 0
        return self.out(layer, "shape")

    def shape_of(self, t: Any) -> Any:
        """``t``'s shape as an int64 [rank] tensor (a Shape layer), for shapes only known at run time."""
        return self.out(self.net.add_shape(t), "shape-of")

    def dim_of(self, t: Any, axis: int) -> Any:
        """A 1-element int64 tensor holding t.shape[axis]."""
        idx = self.const([axis], "int64")
        return self.out(self.net.add_gather(self.shape_of(t), idx, 0), "dim")

    def size(self, d: int | str) -> int | Any:
        """A dim as the builder handles it: an int stays an int; a symbolic size ("s0", "s0 - 1", "2*s1") becomes its
        int64 [1] shape tensor, computed from the input dims it is made of."""
        return d if isinstance(d, int) else self.nb.symbol(d)

    def dims_of(self, t: Any) -> list[int | Any]:
        """t's dims: ints where TensorRT knows them at build time, [1] shape tensors where it does not."""
        return [d if d >= 0 else self.dim_of(t, i) for i, d in enumerate(t.shape)]

    def scalar(self, t: Any) -> Any:
        """A 0-d tensor from a 1-element one (TensorRT wants some scalars 0-d: TopK's k, Fill's start)."""
        layer = self.net.add_shuffle(t)
        layer.reshape_dims = ()
        return self.out(layer, "scalar")

    def slice(self, x: Any, start: Sequence, size: Sequence, stride: Sequence, mode: str | None = None, fill: Any = None) -> Any:
        """ISliceLayer where any start/size/stride entry may be an int, a symbolic size or a [1] shape tensor; the
        parameters that are not all ints travel as shape tensors."""
        def known(v): return all(isinstance(d, int) for d in v)
        def resolved(v): return [self.size(d) if isinstance(d, str) else d for d in v]
        start, size, stride = resolved(start), resolved(size), resolved(stride)
        layer = self.net.add_slice(x, tuple(start) if known(start) else (0,) * len(size),
                                   tuple(size) if known(size) else (1,) * len(size),
                                   tuple(stride) if known(stride) else (1,) * len(size))
        for index, value in ((1, start), (2, size), (3, stride)):
            if not known(value):
                layer.set_input(index, self.shape_tensor(value))
        if mode is not None:
            layer.mode = getattr(self.trt.SampleMode, mode)
        if fill is not None:
            layer.set_input(4, fill)
        return self.out(layer, "slice")

    def arange(self, length: int | str | Any, start: Any = 0, step: Any = 1, dtype: str = "int64") -> Any:
        """[start, start + step, ...] of ``length`` elements: a Constant when everything is known, else Fill LINSPACE
        over a shape tensor (int64, or float32 then cast). ``start`` and ``step`` are numbers, symbolic sizes or
        1-element tensors (values computed in the graph, such as a bag length)."""
        if isinstance(length, int) and all(isinstance(v, (int, float)) for v in (start, step)):
            values = torch.arange(length, dtype=torch.float64) * step + start
            return self.const(values, dtype)
        floats = any(isinstance(v, float) or not isinstance(v, (int, str)) and self.dtype(v) not in ("int32", "int64")
                     for v in (start, step))
        fill_type = "int64" if dtype in ("int64", "int32") and not floats else "float32"

        def one(v: Any) -> Any:  # a [1] tensor of fill_type
            t = self.size(v) if isinstance(v, str) else self.const([v], fill_type) if isinstance(v, (int, float)) else v
            return self.cast(self.reshape(t, [1]), fill_type)

        layer = self.net.add_fill((1,), self.trt.FillOperation.LINSPACE, trt_dtype(self.trt, fill_type))
        layer.set_input(0, self.shape_tensor([length]))
        layer.set_input(1, self.scalar(one(start)))
        layer.set_input(2, one(step))
        return self.cast(self.out(layer, "arange"), dtype)

    def unsqueeze_to(self, t: Any, rank: int) -> Any:
        """Prepend unit dims (numpy broadcasting, as TensorRT's elementwise needs equal ranks)."""
        missing = rank - self.rank(t)
        if missing <= 0:
            return t
        if all(d >= 0 for d in t.shape):
            return self.reshape(t, [1] * missing + list(t.shape))
        layer = self.net.add_shuffle(t)
        layer.set_input(1, self.shape_tensor([self.const([1] * missing, "int64"), self.shape_of(t)]))
        return self.out(layer, "unsqueeze")

    def broadcast(self, *ts: Any) -> list[Any]:
        """The tensors with unit dims prepended to a common rank (TensorRT broadcasts equal ranks only)."""
        rank = max(self.rank(t) for t in ts)
        return [self.unsqueeze_to(t, rank) for t in ts]

    def expand_to(self, t: Any, shape: Sequence[int | str]) -> Any:
        """Broadcast to a shape of ints and symbolic sizes (a Slice with stride 0 on the unit dims; torch.export
        specializes sizes 0 and 1, so a dynamic dim is never a broadcast one)."""
        t = self.unsqueeze_to(t, len(shape))
        if tuple(t.shape) == tuple(shape):
            return t
        stride = [0 if s == 1 and d != 1 else 1 for s, d in zip(t.shape, shape)]
        return self.slice(t, [0] * len(shape), list(shape), stride)

    def elementwise(self, a: Any, b: Any, op: str, dtype: str | None = None) -> Any:
        """ElementWise with numpy broadcasting and both operands cast to ``dtype`` (default: a's). ``op`` is a
        ``trt.ElementWiseOperation`` name: SUM, SUB, PROD, DIV, FLOOR_DIV, POW, MAX, MIN, LESS, GREATER, EQUAL, AND, OR..."""
        dtype = dtype or self.dtype(a)
        a, b = self.broadcast(self.cast(a, dtype), self.cast(b, dtype))
        return self.out(self.net.add_elementwise(a, b, getattr(self.trt.ElementWiseOperation, op)), op.lower())

    def unary(self, t: Any, op: str) -> Any:
        """IUnaryLayer: ``op`` is a ``trt.UnaryOperation`` name (``"EXP"``, ``"ABS"``, ``"SQRT"``, ``"FLOOR"``...)."""
        return self.out(self.net.add_unary(t, getattr(self.trt.UnaryOperation, op)), op.lower())

    def activation(self, t: Any, kind: str, alpha: float | None = None, beta: float | None = None) -> Any:
        """IActivationLayer: ``kind`` is a ``trt.ActivationType`` name (``"RELU"``, ``"TANH"``, ``"SIGMOID"``...),
        ``alpha``/``beta`` its parameters where the kind has them."""
        layer = self.net.add_activation(t, getattr(self.trt.ActivationType, kind))
        if alpha is not None:
            layer.alpha = alpha
        if beta is not None:
            layer.beta = beta
        return self.out(layer, kind.lower())

    def axes_mask(self, dims: Sequence[int], rank: int) -> int:
        """The bit mask TensorRT's reduce layers take, from dims (negative ones counted from the end)."""
        mask = 0
        for d in dims:
            mask |= 1 << (d % rank if rank else 0)
        return mask

    def extra_output(self, label: str, t: Any) -> None:
        """An output the strategy adds to the node's contract (e.g. the valid count of a padded result), labelled
        ``label``; state the change in the strategy's ``contract=``. It becomes the network output ``outputN.label`` when
        the node's result is graph output N, and the sidecar lists it as extra."""
        self.nb.extras.setdefault(self.node.name, []).append((label, t))

    def compute(self, dtype: str) -> str:
        """The dtype a float32 value is computed in under this node's precision."""
        return self.precision if dtype == "float32" else dtype

    def output_dtype(self, index: int = 0) -> str:
        """The dtype the node's output ``index`` is computed in (its captured dtype, under the node's precision)."""
        meta = self.node.outputs[index]
        return self.compute(meta.dtype if meta is not None else "float32")

    # -- explicit quantization ------------------------------------------------------------------
    def quantized(self, name: str) -> bool:
        """Whether the plan puts Q/DQ on this argument: a quantized weight must then travel as a tensor, not Weights."""
        return name in self.quant

    def qdq(self, t: Any, scale: Any, axis: int | None = None, dtype: str = "int8") -> Any:
        """Quantize then dequantize ``t`` (explicit quantization, the only way to INT8/FP8 in a strongly typed network):
        TensorRT fuses the pair into its consumer's low-precision kernel. ``scale``: one float (per tensor) or a 1-D
        per-channel scale along ``axis``."""
        s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        per_channel = s.numel() > 1
        s = self.const(s if per_channel else s.reshape(()), self.dtype(t))
        q = self.net.add_quantize(t, s, trt_dtype(self.trt, dtype))
        if per_channel:
            q.axis = axis % self.rank(t)
        d = self.net.add_dequantize(self.out(q, f"quantize-{dtype}"), s, t.dtype)
        if per_channel:
            d.axis = axis % self.rank(t)
        return self.out(d, "dequantize")

    # -- public helpers for rule authors (README, "Writing rules that build") -------------------------
    def reduce(self, t: Any, op: str, dims: Sequence[int], keepdim: bool = False) -> Any:
        """IReduceLayer over ``dims`` (negative ones from the end): ``op`` is a ``trt.ReduceOperation`` name (SUM, AVG,
        MAX, MIN, PROD)."""
        layer = self.net.add_reduce(t, getattr(self.trt.ReduceOperation, op), self.axes_mask(dims, self.rank(t)), keepdim)
        return self.out(layer, f"reduce-{op.lower()}")

    def gather(self, t: Any, index: Any, axis: int, mode: str = "DEFAULT") -> Any:
        """IGatherLayer: ``t`` indexed along ``axis`` by an int32/int64 ``index`` tensor (``mode`` a ``trt.GatherMode``
        name: DEFAULT as ``index_select``, ELEMENT as ``torch.gather``, ND)."""
        layer = self.net.add_gather_v2(t, index, getattr(self.trt.GatherMode, mode))
        if mode != "ND":
            layer.axis = axis % self.rank(t)
        return self.out(layer, "gather")

    def scatter(self, t: Any, index: Any, updates: Any, axis: int) -> Any:
        """IScatterLayer in ELEMENT mode: ``t`` with ``updates`` written where ``index`` says along ``axis`` (as
        ``torch.scatter``; TensorRT overwrites, it never accumulates)."""
        layer = self.net.add_scatter(t, index, self.cast(updates, self.dtype(t)), self.trt.ScatterMode.ELEMENT)
        layer.axis = axis % self.rank(t)
        return self.out(layer, "scatter")

    def concat(self, ts: Sequence[Any], axis: int) -> Any:
        """IConcatenationLayer of equal-rank tensors along ``axis`` (negative from the end)."""
        layer = self.net.add_concatenation(list(ts))
        layer.axis = axis % self.rank(ts[0])
        return self.out(layer, "concat")

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        """ISelectLayer: ``a`` where ``condition`` (bool) holds, else ``b``; broadcast, ``b`` cast to ``a``'s dtype."""
        cond, a, b = self.broadcast(condition, a, self.cast(b, self.dtype(a)))
        return self.out(self.net.add_select(cond, a, b), "where")


class _Symbols(dict):
    """symbol -> its 1-element int64 tensor; an input dim's is emitted on first use (``pending``), so that a network
    whose strategies never read a dim carries no Shape/Gather layers for it."""

    def __init__(self, nb: "NetworkBuilder") -> None:
        super().__init__()
        self.nb = nb
        self.pending: dict[str, tuple[str, Any, int]] = {}

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.pending

    def __missing__(self, key: str) -> Any:
        if key not in self.pending:
            raise KeyError(key)
        value = self.nb._input_dim(*self.pending.pop(key))
        dict.__setitem__(self, key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            dict.__setitem__(self, key, default)
        return self[key]


class NetworkBuilder:
    def __init__(self, backend: BackendProfile, graph: Graph, plan: Plan, weights: dict[str, torch.Tensor], strategies: dict[str, Strategy],
                 precision: str = "fp32"):
        if backend.module is None:
            raise BuildError(f"backend {backend.name} is not installed here (pip install 'opmap[{'rtx' if backend.is_rtx else 'trt'}]')")
        self.backend = backend
        self.trt = backend.module
        self.graph = graph
        self.plan = plan
        self.weights = weights
        self.strategies = strategies
        if precision not in PRECISIONS:
            raise BuildError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
        # Precision is per node: the planner places a node in fp16/bf16 only where its measured accuracy fits the
        # budget; every other node computes in float32, with explicit casts where precision changes.
        self.compute_dtype = "float32"
        self.builder = self.trt.Builder(logger(self.trt))
        self.network = strongly_typed_network(self.trt, self.builder)
        self.values: dict[str, Any] = {}  # node/input name -> ITensor or list of ITensors (or python values)
        self.symbols = _Symbols(self)  # symbol -> 1-element int64 ITensor (input dims made on first use)
        self._points: dict[str, dict[str, int]] | None = None  # profile min/opt/max per symbol, made on first use
        self.layer_map: dict[str, dict[str, str]] = {}
        self.keep: list = []
        self.extra_outputs: dict[str, str] = {}
        self.extras: dict[str, list[tuple[str, Any]]] = {}  # node -> contract outputs the strategy added
        self.attention: dict[str, Any] = {}  # IAttention name -> IAttention
        self.counts: dict[str, Any] = {}  # data-dependent size symbol ("u0") -> its run-time value (int64 [1])
        self.padded: dict[str, int] = {}  # data-dependent size symbol -> the static bound its tensors are padded to (the API exposes no attention layer class)
        # (tensor name, what it became) -> the tensor: a node's input cast or quantized once, whichever nodes consume it
        self.conversions: dict[tuple, Any] = {}

    # -- conversions between nodes: one per tensor, not one per consumer ----------------------------
    def cast_once(self, ctx: EmitContext, t: Any, dtype: str) -> Any:
        """``t`` cast to ``dtype`` where precision changes between nodes: one Cast per tensor and dtype, named after the
        first node that needs it and reused by every later one (and by every later ``input()`` of the same node)."""
        key = (t.name, "cast", dtype)
        if key not in self.conversions:
            self.conversions[key] = ctx.cast(t, dtype)
        return self.conversions[key]

    def quantize_once(self, ctx: EmitContext, t: Any, scale: Any, axis: int | None, dtype: str) -> Any:
        """Explicit quantization of a node's input: one Quantize per tensor, dtype and scale, one Dequantize from it,
        both in the node's float dtype (``ctx.precision``; a tensor in another dtype is cast first, one Cast per tensor)
        and shared by every consumer. TensorRT fuses the Cast and the Quantize into the producer's kernel and the
        Dequantize into each consumer."""
        out = ctx.precision if ctx.dtype(t) in ("float32", "float16", "bfloat16") else ctx.dtype(t)
        t = self.cast_once(ctx, t, out)  # Q and DQ in one dtype; the Cast, one per tensor, runs in its producer's epilogue
        s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        per_channel = s.numel() > 1
        s = s if per_channel else s.reshape(())
        rank = len(t.shape)
        axis = axis % rank if per_channel else None
        code = (tuple(s.reshape(-1).tolist()), axis, dtype)
        qkey = (t.name, "quantize", code)
        if qkey not in self.conversions:
            q = self.network.add_quantize(t, ctx.const(s, ctx.dtype(t)), trt_dtype(self.trt, dtype))
            if per_channel:
                q.axis = axis
            self.conversions[qkey] = ctx.out(q, f"quantize-{dtype}")
        quantized = self.conversions[qkey]
        dkey = (quantized.name, "dequantize", code, out)
        if dkey not in self.conversions:
            d = self.network.add_dequantize(quantized, ctx.const(s, out), trt_dtype(self.trt, out))
            if per_channel:
                d.axis = axis
            self.conversions[dkey] = ctx.out(d, "dequantize")
        return self.conversions[dkey]

    # -- values ---------------------------------------------------------------------------------
    def tensor(self, ref: Ref) -> Any:
        name = ref.node
        if name not in self.values and name in self.weights:
            self.values[name] = self._weight(name)
        if name not in self.values:
            raise BuildError(f"tensor {name} was used before it was produced")
        value = self.values[name]
        if isinstance(value, list):
            return value[ref.index or 0]
        return value

    def _weight(self, name: str) -> Any:
        tensor = self.weights[name].detach()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype == "float64":
            raise BuildError(f"weight {name} is float64, which TensorRT cannot hold")
        arr = tensor.float() if dtype == "bfloat16" else tensor
        out = self.constant(np.array(arr.numpy(), order="C"), f"weight/{name}")
        if dtype == "bfloat16":
            cast = self.network.add_cast(out, self.trt.DataType.BF16)
            cast.name = f"weight/{name}/cast"
            out = cast.get_output(0)
        return out

    def constant(self, arr: np.ndarray, name: str) -> Any:
        """A Constant layer holding ``arr`` (kept alive for TensorRT's Weights). A Constant needs weights, so an empty
        array (a lifted ``torch.tensor([])``, the initial keys of a cache layer) is a zero-length Slice of a one-element
        Constant instead."""
        if arr.size == 0 and arr.ndim > 0:
            one = self.constant(np.zeros([1] * arr.ndim, arr.dtype), f"{name}/one")
            layer = self.network.add_slice(one, (0,) * arr.ndim, tuple(arr.shape), (1,) * arr.ndim)
            layer.name = f"{name}/empty"
            return layer.get_output(0)
        self.keep.append(arr)
        layer = self.network.add_constant(tuple(arr.shape), self.trt.Weights(arr))
        layer.name = name
        return layer.get_output(0)

    def pad(self, symbol: str, bound: int, count: Any) -> None:
        """A static-bound strategy padded the tensors sized ``symbol`` to ``bound`` rows; ``count`` is the true size."""
        self.padded[symbol] = bound
        self.counts.setdefault(symbol, count)
        arr = np.array([bound], np.int64)
        self.keep.append(arr)
        layer = self.network.add_constant((1,), self.trt.Weights(arr))
        layer.name = f"size/{symbol}/padded-bound"
        self.symbols.setdefault(symbol, layer.get_output(0))  # physical size: shapes use the bound

    def symbol(self, expr: str) -> Any:
        """A 1-element int64 tensor holding a symbolic size: an input dim, or arithmetic over input dims."""
        if expr not in self.symbols:
            self.symbols[expr] = self._symbolic(_size_expr(expr), expr)
        return self.symbols[expr]

    def _symbolic(self, e: Any, text: str) -> Any:
        """Integer size arithmetic over input dims as int64 [1] shape-tensor layers (sympy form of torch's sizes)."""
        import sympy

        def const(v: int) -> Any:
            arr = np.array([v], np.int64)
            self.keep.append(arr)
            layer = self.network.add_constant((1,), self.trt.Weights(arr))
            layer.name = f"size/{text}/{v}/{len(self.keep)}"
            return layer.get_output(0)

        def combine(op: str, parts: list[Any]) -> Any:
            if any(p.dtype == self.trt.DataType.FLOAT for p in parts):  # float size arithmetic stays in float32
                parts = [self._cast(p, "FLOAT", text) for p in parts]
            out = parts[0]
            for p in parts[1:]:
                layer = self.network.add_elementwise(out, p, getattr(self.trt.ElementWiseOperation, op))
                layer.name = f"size/{text}/{op.lower()}/{len(self.keep)}/{id(layer)}"
                out = layer.get_output(0)
            return out

        def floor_div(num: Any, den: Any) -> Any:
            return combine("FLOOR_DIV", [self._symbolic(num, text), self._symbolic(den, text)])

        if e.is_Integer:
            return const(int(e))
        if e.is_Number:  # a float factor (upsampling by 1.7): computed in float32, the only float a shape tensor takes
            arr = np.array([float(e)], np.float32)
            self.keep.append(arr)
            layer = self.network.add_constant((1,), self.trt.Weights(arr))
            layer.name = f"size/{text}/f{float(e)}/{len(self.keep)}"
            return layer.get_output(0)
        if e.is_Symbol:
            if str(e) not in self.symbols:
                raise BuildError(f"symbolic size {e} (in {text}) is not a dim of any input; opmap resolves sizes from input dims")
            return self.symbols[str(e)]
        if isinstance(e, sympy.Add):
            return combine("SUM", [self._symbolic(a, text) for a in e.args])
        if isinstance(e, sympy.Mul):
            num, den = sympy.fraction(e)
            if den != 1:  # an exact division torch proved (s0/2): sizes are integers
                return floor_div(num, den)
            return combine("PROD", [self._symbolic(a, text) for a in e.args])
        if isinstance(e, sympy.floor):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            return floor_div(num, den)
        if isinstance(e, sympy.ceiling):  # ceil(p/q) = -((-p) // q)
            num, den = sympy.fraction(sympy.together(e.args[0]))
            return self._symbolic(-sympy.floor(-num / den), text)
        name = type(e).__name__
        if name in ("ToFloat", "TruncToInt", "TruncToFloat", "FloorToInt", "CeilToInt", "RoundToInt"):
            inner = self._symbolic(e.args[0], text)
            if name == "ToFloat":
                return self._cast(inner, "FLOAT", text)
            if name in ("FloorToInt", "CeilToInt", "RoundToInt"):
                op = {"FloorToInt": "FLOOR", "CeilToInt": "CEIL", "RoundToInt": "ROUND"}[name]
                unary = self.network.add_unary(self._cast(inner, "FLOAT", text), getattr(self.trt.UnaryOperation, op))
                unary.name = f"size/{text}/{op.lower()}/{len(self.keep)}/{id(unary)}"
                inner = unary.get_output(0)
            return self._cast(inner, "INT64", text)  # a float-to-int cast truncates toward zero
        if name == "FloorDiv":
            return floor_div(*e.args)
        if name == "CeilDiv":
            return self._symbolic(-sympy.floor(-e.args[0] / e.args[1]), text)
        if name in ("Mod", "PythonMod"):  # sizes are non-negative: both are a - (a // b) * b
            a, b = e.args
            return self._symbolic(a - b * sympy.floor(a / b), text)
        if name in ("Max", "Min"):
            return combine("MAX" if name == "Max" else "MIN", [self._symbolic(a, text) for a in e.args])
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0:
            return combine("PROD", [self._symbolic(e.base, text)] * int(e.exp))
        raise BuildError(f"symbolic size {text}: {name} is not computed on shape tensors")

    def _cast(self, t: Any, to: str, text: str) -> Any:
        if t.dtype == getattr(self.trt.DataType, to):
            return t
        layer = self.network.add_cast(t, getattr(self.trt.DataType, to))
        layer.name = f"size/{text}/cast-{to.lower()}/{id(layer)}"
        return layer.get_output(0)

    # -- build ----------------------------------------------------------------------------------
    def add_inputs(self, shapes: dict[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None) -> Any:
        shapes = shapes or {}
        profile = self.builder.create_optimization_profile()
        dynamic = False
        for name, meta in self.graph.inputs.items():
            dims = tuple(-1 if isinstance(d, str) else d for d in meta.shape)
            t = self.network.add_input(name, trt_dtype(self.trt, meta.dtype), dims)
            self.values[name] = t
            if any(d == -1 for d in dims):
                dynamic = True
                lo, opt, hi = shapes.get(name) or self._profile_from_symbols(name, meta)
                profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
                for axis, d in enumerate(meta.shape):
                    if isinstance(d, str) and d not in self.symbols:
                        self.symbols.pending[d] = (name, t, axis)
        return profile if dynamic else None

    def _input_dim(self, name: str, t: Any, axis: int) -> Any:
        """An input dim as a 1-element int64 tensor, emitted when a strategy first needs it (an unused dim emits nothing)."""
        shape = self.network.add_shape(t)
        shape.name = f"input/{name}/shape"
        idx = self.network.add_constant((1,), self.trt.Weights(np.array([axis], np.int64)))
        idx.name = f"input/{name}/dim{axis}/index"
        g = self.network.add_gather(shape.get_output(0), idx.get_output(0), 0)
        g.name = f"input/{name}/dim{axis}"
        return g.get_output(0)

    def _profile_from_symbols(self, name: str, meta: TensorMeta):
        """The input's dims at the profile's min, opt and max (points satisfying the export's facts: shapefacts)."""
        if self._points is None:

            self._points = profile_points(self.graph)
        return tuple([d if isinstance(d, int) else self._points[label][d] for d in meta.shape]
                     for label in ("min", "opt", "max"))

    def emit_all(self) -> None:
        self.emit_plan(self.plan, prefix="")

    def emit_plan(self, plan: Plan, prefix: str) -> None:
        for np_ in plan.nodes:
            node = np_.as_node or np_.node  # an in-place / out= node is emitted as its functional op
            if np_.subplan is not None:
                self.values[node.name] = self._emit_expansion(np_, prefix)
                continue
            if np_.choice is None:
                raise BuildError(f"node {node.name} ({node.op}) has no mapping: {np_.why}", exit_code=1)
            strat = self.strategies.get(np_.choice.strategy)
            if strat is None or strat.emit_fn is None:
                raise BuildError(
                    f"node {node.name}: strategy {np_.choice.strategy} has no emit function yet"
                    + (f"; runner-up: {np_.runner_up.strategy}" if np_.runner_up else "")
                )
            ctx = EmitContext(self, node, strat, prefix, self._node_float(np_, node), np_.quant)
            try:
                result = strat.emit_fn(ctx, node)
            except BuildError:
                raise
            except Exception as exc:  # not a deliberate refusal: a bug in the emitter (or in opmap), exit 3
                hint = f"; try the runner-up {np_.runner_up.strategy}" if np_.runner_up else ""
                raise EmitterBug(f"node {node.name} ({node.op}) via {strat.id}: {type(exc).__name__}: {exc}{hint}") from exc
            self._check_shapes(node, strat, result)
            self.values[node.name] = result

    def _node_float(self, np_: Any, node: Node) -> str | None:
        """:func:`node_float`; a node placed in no precision that the program itself computes in float16/bfloat16
        computes in that type; an INT8 node whose activations arrive in float32 (its neighbours stayed fp32) keeps
        float32 around it (TensorRT-RTX's builder crashed on fp16 INT8 products between fp32 layers, dynamic shapes).
        (Not in ``__init__``'s comments: that method's text is part of every strategy's source hash.)"""
        precision = node_float(np_.precision, np_.quant)
        if precision is None:  # a node the program itself computes in half (a model cast to half, an autocast region)
            floats = {m.dtype for m in node.outputs if m is not None and m.dtype in ("float32", "float16", "bfloat16")}
            if len(floats) == 1 and floats <= {"float16", "bfloat16"}:  # computes in it, not round trips through float32
                return floats.pop()
        if np_.precision == "int8" and precision == "float16":
            for name, (_scale, axis, _dtype) in np_.quant.items():
                ref = node.arg(name)
                if axis is None and isinstance(ref, Ref) and ref.node not in self.weights:
                    t = self.tensor(ref)
                    if hasattr(t, "dtype") and dtype_name(t.dtype) == "float32":
                        return "float32"
        return precision

    def _check_shapes(self, node: Node, strat: Strategy, result: Any) -> None:
        """Every tensor an emitter returns has a shape TensorRT can infer. A layer given inputs it cannot take (a
        comparison of bools, a rank its operation refuses) is accepted by ``add_*`` and yields a tensor whose shape
        cannot be read; the error would surface at the next node's emitter and blame it ("Could not get tensor shape"
        in a transpose after attention). Checked here, it names the node and strategy that added the layer."""
        for t in result if isinstance(result, (list, tuple)) else [result]:
            if isinstance(t, self.trt.ITensor):
                try:
                    t.shape
                except RuntimeError as exc:
                    from opmap.building.backend import _relevant

                    said = _relevant(logger(self.trt).messages)  # TensorRT's reason ("`input` and `kernel` must be ...")
                    raise EmitterBug(f"node {node.name} ({node.op}) via {strat.id}: TensorRT cannot infer the shape of an "
                                     f"output it added ({said or exc}): a layer got inputs it cannot take, which the "
                                     "strategy's rule should refuse") from exc

    def _emit_expansion(self, np_, prefix: str) -> Any:
        """Emit a node's planned sub-graph in a scope of its own; its outputs become the node's value."""
        sub = np_.subplan.graph
        inputs = [self.tensor(ref) for ref in np_.sub_inputs]
        outer = self.values
        self.values = dict(zip(sub.inputs, inputs))
        try:
            self.emit_plan(np_.subplan, prefix=f"{prefix}{np_.node.name}/{np_.choice.strategy}/")
            outs = [self.tensor(ref) if ref is not None else None for ref in sub.outputs]
        finally:
            self.values = outer
        return outs[0] if len(outs) == 1 else outs

    def mark_outputs(self) -> tuple[list[str], list[str | None]]:
        names, nodes = [], []
        state = {s.output: s.output_name for s in self.graph.state}  # a mutated buffer's new value: named after it
        for i, ref in enumerate(self.graph.outputs):
            if ref is None:
                continue
            t = self.tensor(ref)
            if t is None:
                raise BuildError(f"graph output {ref} is not a tensor")
            meta = self.graph.meta_of(ref)
            if meta is not None and dtype_name(t.dtype) != meta.dtype:  # back to the model's dtype at the edge
                cast = self.network.add_cast(t, trt_dtype(self.trt, meta.dtype))
                cast.name = f"output/{i}/to-{meta.dtype}"
                t = cast.get_output(0)
            if t.is_network_input or t.is_network_output:  # an output must be a distinct tensor
                t = self._identity(t, f"output/{i}")
            t.name = state.get(i, f"output{i}")
            self.network.mark_output(t)
            names.append(t.name)
            nodes.append(ref.node)
            extras = list(self.extras.get(ref.node, []))
            meta = self.graph.meta_of(ref)
            for d in (meta.shape if meta is not None else ()):
                if isinstance(d, str) and d in self.counts and not any(label == "count" for label, _ in extras):
                    extras.append(("count", self.counts[d]))  # a padded output carries its valid count
            for label, extra in extras:
                if extra.is_network_output or extra.is_network_input:
                    extra = self._identity(extra, f"output/{i}/{label}")
                extra.name = f"output{i}.{label}"
                self.network.mark_output(extra)
                names.append(extra.name)
                nodes.append(ref.node)
                self.extra_outputs[extra.name] = label
        return names, nodes

    def mark_constant_outputs(self, program: Any) -> tuple[list[str], list[str | None]]:
        """The program's constant outputs (ints, floats, bools torch.export computed) as 0-d Constant outputs, for a
        model whose every output is one; the reference check then compares them with PyTorch's values."""
        (out_node,) = [n for n in program.graph_module.graph.nodes if n.op == "output"]
        flat = out_node.args[0] if isinstance(out_node.args[0], (list, tuple)) else [out_node.args[0]]
        names: list[str] = []
        for i, value in enumerate(flat):
            if isinstance(value, (bool, int, float)):
                dtype = "bool" if isinstance(value, bool) else "int64" if isinstance(value, int) else "float32"
                layer = self.network.add_constant((), self.trt.Weights(self._keep(np.array(value, dtype=NP_DTYPE[dtype]))))
                layer.name = f"output/{i}/constant"
                t = layer.get_output(0)
                t.name = f"output{i}"
                self.network.mark_output(t)
                names.append(t.name)
        if not names:
            raise BuildError("the model has no outputs an engine could compute (no tensor, size or number)")
        return names, [None] * len(names)

    def _keep(self, arr: Any) -> Any:
        self.keep.append(arr)
        return arr

    def _identity(self, t: Any, name: str) -> Any:
        layer = self.network.add_identity(t)
        layer.name = name
        return layer.get_output(0)


FP16_NORMAL = (2.0 ** -14, 65504.0)  # a Dequantize to float16 takes its scale in float16: normal numbers only


def float_side(quant: dict[str, tuple]) -> str:
    """The float dtype around an INT8 node (its Dequantize outputs, what it computes its epilogue in and returns):
    float16, as TensorRT's INT8 kernels write it, unless a scale is no normal float16 (then float32)."""
    for scale, _axis, _dtype in quant.values():
        values = [scale] if isinstance(scale, (int, float)) else list(scale)
        if any(not FP16_NORMAL[0] <= v <= FP16_NORMAL[1] for v in values):
            return "float32"
    return "float16"


def node_float(precision: str | None, quant: dict[str, tuple]) -> str | None:
    """The float dtype a node computes in: its precision's; an INT8 node's float side (:func:`float_side`)."""
    if precision == "int8":
        return float_side(quant)
    return PRECISIONS.get(precision) if precision else None


def broadcast_shape(*shapes: Sequence[int | str]) -> list[int | str]:
    """numpy broadcasting over ints and symbolic sizes: a dim that is not 1 wins (torch.export proved the others equal)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[int | str] = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        sized = [d for d in dims if d != 1]
        out.append(next((d for d in sized if isinstance(d, int)), sized[0]) if sized else 1)
    return out



def _size_expr(expr: str) -> Any:
    """A symbolic size as sympy, through the restricted parser (never sympify/eval)."""
    try:
        return symexpr.parse(expr)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


def weights_of(program: Any) -> dict[str, torch.Tensor]:
    """Placeholder name -> tensor for parameters, buffers and lifted constants of an ExportedProgram."""
    sig = program.graph_signature
    out: dict[str, torch.Tensor] = {}
    state = program.state_dict
    for ph, key in sig.inputs_to_parameters.items():
        out[ph] = state[key]
    for ph, key in sig.inputs_to_buffers.items():
        out[ph] = state[key] if key in state else program.constants[key]
    for ph, key in getattr(sig, "inputs_to_lifted_tensor_constants", {}).items():
        out[ph] = program.constants[key]
    return out


def build_network(plan: Plan, program: Any, strategies: dict[str, Strategy], shapes=None, precision: str = "fp32") -> Built:
    nb = NetworkBuilder(plan.backend, plan.graph, plan, weights_of(program), strategies, precision)
    profile = nb.add_inputs(shapes)
    nb.emit_all()
    outputs, output_nodes = nb.mark_outputs()
    if not outputs:  # every output is a constant of the program (x.numel() on a static x): TensorRT needs one output
        outputs, output_nodes = nb.mark_constant_outputs(program)
    config = nb.builder.create_builder_config()
    if profile is not None:
        config.add_optimization_profile(profile)
    return Built(trt=nb.trt, builder=nb.builder, network=nb.network, config=config, inputs=dict(plan.graph.inputs),
                 outputs=outputs, output_nodes=output_nodes, layer_map=nb.layer_map, extra_outputs=nb.extra_outputs, keep=nb.keep,
                 attention=nb.attention, graph_outputs=list(plan.graph.outputs), graph=plan.graph,
                 node_tensors={k: [t.name if hasattr(t, "is_network_input") else None for t in (v if isinstance(v, list) else [v])]
                               for k, v in nb.values.items()})


def serialize(built: Built) -> Built:
    """Build the engine for real (ahead-of-time; on TensorRT-RTX this works without a GPU)."""
    start = time.perf_counter()
    log = logger(built.trt)
    log.messages = []
    with native_stderr_silenced():
        engine = built.builder.build_serialized_network(built.network, built.config)
    built.build_seconds = time.perf_counter() - start
    if engine is None:
        from opmap.building.backend import _relevant

        message = _relevant(log.messages) or "build_serialized_network returned None"
        raise BuildError(f"TensorRT could not build the network: {message}{_blame(built, message)}")
    built.engine = bytes(memoryview(engine))
    return built


def _blame(built: Built, message: str) -> str:
    for layer_name, where in built.layer_map.items():
        if layer_name in message:
            return f" (layer {layer_name}: node {where['node']}, strategy {where['strategy']})"
    return ""


def write_engine(built: Built, plan: Plan, path: Path, precision: str) -> Path:
    """The engine and its JSON sidecar, written to temporary files beside them and renamed into place together: a
    failure or a Ctrl-C leaves neither a partial file nor one without the other (nor a stray temporary)."""
    from opmap import interrupt
    from opmap.atomic import write_atomic
    from opmap.nonfinite import dumps

    sidecar = path.with_suffix(path.suffix + ".json")
    text = dumps(built.sidecar(plan, plan.backend, precision), indent=2) + "\n"
    write_atomic({path: built.engine or b"", sidecar: text.encode()}, before_rename=interrupt.check)
    return sidecar
