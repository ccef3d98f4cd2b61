"""verify: the built network against PyTorch, output by output, through the reference interpreter.

The PyTorch side runs the exported program's flat graph (``program.graph_module``) through
``torch.fx.Interpreter`` with its lifted weights: the same placeholders whatever the calling convention
(positional, keyword, nested containers), and no code from the archive (``program.module()`` would compile and
run the program's guard code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from opmap.building.builder import Built
from opmap.loading.graph import Graph, Ref, TensorMeta
from opmap.checking.interpreter import run_network
from opmap.errors import OpmapError

class ReferenceFailed(OpmapError):
    """The exported program itself raised on the inputs: they are outside what the program accepts."""


# max |a-b| <= atol + rtol * |b|, per output dtype (the dtype the network computed in, for fp16/bf16 builds)
TOLERANCE = {
    "float32": (1e-4, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}
INT8_RANGE_TOLERANCE = 5e-2  # int8 builds: max |a-b| <= 5% of max |b| (INT8 error is relative to a tensor's range)


@dataclass
class OutputCheck:
    name: str
    node: str | None
    shape: tuple
    dtype: str
    max_abs: float
    max_rel: float
    mismatch: float  # fraction of elements outside the tolerance
    ok: bool
    note: str = ""
    scale: float = 0.0  # the largest finite magnitude PyTorch's output has (0 for non-float outputs)
    truncated: bool = False  # a padded output whose exact count exceeds its bound: cut off as built, the count says so

    @property
    def range_rel(self) -> float:
        """The worst error relative to the output's largest magnitude, ‖Δ‖∞ / ‖y‖∞: what a reduced-precision
        placement is judged by (an elementwise relative error explodes on outputs near zero, e.g. any matmul's)."""
        if self.max_abs == 0:
            return 0.0
        return self.max_abs / self.scale if self.scale > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "shape": list(self.shape), "dtype": self.dtype, "max_abs_err": self.max_abs,
                "max_rel_err": self.max_rel, "mismatch_frac": self.mismatch, "ok": self.ok, "note": self.note}


@dataclass
class Report:
    outputs: list[OutputCheck] = field(default_factory=list)
    expected: int = 0  # how many outputs the program has (every one must be compared)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> how its values were drawn / given
    shape: str = ""  # the input shapes this report is for (``input_ids=2x6``)
    discrete: list[dict[str, Any]] = field(default_factory=list)  # integer/bool outputs and valid counts: exact agreement

    def discrete_summary(self) -> dict[str, Any]:
        """Discrete outputs (indices, masks, argmax, counts) reported apart from float error: they must agree exactly."""
        return {"outputs": len(self.discrete), "agree": sum(1 for d in self.discrete if d["agree"]), "items": self.discrete}

    @property
    def compared(self) -> int:
        return len(self.outputs)

    @property
    def ok(self) -> bool:
        return self.compared == self.expected and self.expected > 0 and all(o.ok for o in self.outputs)


# -- drawing inputs ----------------------------------------------------------------------------------------------
# Ops through which an integer input passes unchanged in value (so its uses downstream still index the same table).
_VALUE_PRESERVING = {
    "aten.view.default", "aten.reshape.default", "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.default",
    "aten.expand.default", "aten.clone.default", "aten.contiguous.default", "aten.slice.Tensor", "aten.select.int",
    "aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.flatten.using_ints", "aten._to_copy.default",
    "aten.to.dtype", "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default", "aten.repeat.default",
}


def _index_uses(graph: Graph, name: str, dims: dict[str, int]) -> list[tuple[int, str]]:
    """(table size, description) for every place an integer value flowing from ``name`` is used as an index."""

    def size(meta: TensorMeta | None, axis: int) -> int | None:
        if meta is None or not -len(meta.shape) <= axis < len(meta.shape):
            return None
        d = meta.shape[axis]
        return d if isinstance(d, int) else dims.get(d)

    found: list[tuple[int, str]] = []
    seen: set[str] = set()
    frontier = [name]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in graph:
            uses = [k for k, v in node.args.items() if v == Ref(current) or (isinstance(v, list) and Ref(current) in v)]
            if not uses:
                continue
            if node.op in _VALUE_PRESERVING and uses[0] in ("self", "input"):
                frontier.append(node.name)
                continue
            n, op = None, (node.op.split(".") + [""])[1]
            if node.op in EMBEDDING_BAG and "indices" in uses:
                n, what = size(node.meta("weight"), 0), f"the rows of {node.arg('weight')} ({node.op.split('.')[1]} {node.name})"
            elif node.op == "aten.embedding.default" and "indices" in uses:
                n, what = size(node.meta("weight"), 0), f"the rows of {node.arg('weight')} (embedding {node.name})"
            elif op in _INDEX_ALONG_DIM and "index" in uses and isinstance(node.arg("dim"), int):
                axis = node.arg("dim")  # read or written at given positions (a static KV cache's cache_position)
                n, what = size(node.meta("self"), axis), f"dim {axis} of {node.arg('self')} ({op} {node.name})"
            elif op in ("index", "index_put", "index_put_", "_unsafe_index_put") and "indices" in uses:
                axis = node.arg("indices").index(Ref(current))
                n, what = size(node.meta("self"), axis), f"dim {axis} of {node.arg('self')} (index {node.name})"
            elif node.op == "aten.one_hot.default" and "self" in uses and isinstance(node.arg("num_classes"), int):
                n, what = node.arg("num_classes"), f"the classes of one_hot {node.name}"
            if n is not None and n > 0:
                found.append((n, what))
    return found


# ops whose ``index`` argument holds positions along dim ``dim`` of ``self``
_INDEX_ALONG_DIM = ("index_select", "gather", "index_copy", "index_copy_", "index_add", "index_add_", "index_fill",
                    "index_fill_", "scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_")
EMBEDDING_BAG = ("aten.embedding_bag.default", "aten.embedding_bag.padding_idx", "aten._embedding_bag.default",
                 "aten._embedding_bag_forward_only.default")


def _bag_offsets(graph: Graph, name: str, dims: dict[str, int]) -> tuple[int, bool] | None:
    """(how many indices, include_last_offset) when input ``name`` is the offsets of an embedding bag, else None."""
    for node in graph:
        if node.op in EMBEDDING_BAG and node.arg("offsets") == Ref(name):
            k = node.meta("indices").shape[0]
            return (k if isinstance(k, int) else dims[k]), bool(node.arg("include_last_offset", False))
    return None


def _draw_offsets(shape: list[int], k: int, last: bool, g: torch.Generator) -> torch.Tensor:
    """Ascending offsets starting at 0 (bags of random length, some empty); the last is k with include_last_offset."""
    offsets = torch.randint(0, k + 1, shape, generator=g).sort().values
    if offsets.numel():
        offsets[0] = 0
        if last:
            offsets[-1] = k
    return offsets


def symbol_values(graph: Graph, point: dict[str, int] | None = None) -> dict[str, int]:
    """A value for every input-dim symbol: ``point``'s, else 2 clamped into the symbol's range; a dim that is an
    expression over other dims' symbols (``s15 + s70``) takes the value they give it where ``point`` has none."""
    from opmap.loading.shapefacts import derived_dims, with_derived

    derived = {d: e for d, e in derived_dims(graph).items() if d not in (point or {})}
    values: dict[str, int] = {}
    for meta in graph.inputs.values():
        for d in meta.shape:
            if isinstance(d, str) and d not in values and d not in derived:
                rng = graph.symbols.get(d)
                lo = rng.lower if rng and rng.lower is not None else 0
                hi = rng.upper if rng and rng.upper is not None else max(lo, 2)
                values[d] = (point or {}).get(d, min(max(2, lo), hi))
    return with_derived(derived, values)


def draw_inputs(graph: Graph, seed: int = 0, point: dict[str, int] | None = None,
                int_high: int = 10) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Seeded random inputs that are valid inputs, and how each was drawn.

    An integer input that indexes a table (embedding rows, a gathered or indexed dim) is drawn inside every table
    it indexes; embedding-bag offsets ascend from 0; an input named like a mask is a 0/1 (or boolean) padding mask; floats are standard normal."""
    g = torch.Generator().manual_seed(seed)
    dims = symbol_values(graph, point)
    values: dict[str, torch.Tensor] = {}
    how: dict[str, str] = {}
    for name, meta in graph.inputs.items():
        shape = [d if isinstance(d, int) else dims[d] for d in meta.shape]
        dtype = getattr(torch, meta.dtype)
        if (dtype == torch.bool or not dtype.is_floating_point) and "mask" in name.lower() and len(shape) >= 1:
            mask = torch.ones(shape, dtype=torch.int64)
            length = shape[-1]
            if length > 1:  # right padding of a random length per row, at least one position kept
                keep = torch.randint(1, length + 1, shape[:-1] or [1], generator=g).reshape(shape[:-1] + [1]) if shape[:-1] else \
                    torch.randint(1, length + 1, (1,), generator=g)
                mask = (torch.arange(length) < keep).to(torch.int64)
            values[name] = mask.to(dtype)
            how[name] = f"{meta.dtype} {shape}: a padding mask (ones, then zeros; at least one kept per row)"
        elif dtype == torch.bool:
            values[name] = torch.rand(shape, generator=g) > 0.5
            how[name] = f"bool {shape}: fair coin"
        elif dtype.is_floating_point:
            values[name] = torch.randn(shape, generator=g).to(dtype)
            how[name] = f"{meta.dtype} {shape}: standard normal"
        elif (bag := _bag_offsets(graph, name, dims)) is not None and len(shape) == 1:
            values[name] = _draw_offsets(shape, *bag, g).to(dtype)
            how[name] = f"{meta.dtype} {shape}: embedding-bag offsets, ascending from 0 within the {bag[0]} indices"
        else:
            uses = _index_uses(graph, name, dims)
            high = min((n for n, _ in uses), default=int_high)
            values[name] = torch.randint(0, high, shape, generator=g, dtype=dtype)
            how[name] = f"{meta.dtype} {shape}: uniform in [0, {high})" + (
                f", valid indices into {'; '.join(w for _, w in uses)}" if uses else "")
    return values, how


def random_inputs(inputs_or_graph: Any, seed: int = 0, int_high: int = 10) -> dict[str, torch.Tensor]:
    """Seeded random inputs (see :func:`draw_inputs`); a bare ``{name: TensorMeta}`` gets plain draws."""
    graph = inputs_or_graph if isinstance(inputs_or_graph, Graph) else Graph("inputs", {}, dict(inputs_or_graph), {}, [], {})
    return draw_inputs(graph, seed, int_high=int_high)[0]


# -- the PyTorch side --------------------------------------------------------------------------------------------
def lifted_inputs(program: Any, inputs: dict[str, torch.Tensor]) -> list[Any]:
    """The flat graph's placeholders in order: lifted weights, buffers and constants, then the user inputs by name."""
    from torch.export.graph_signature import InputKind

    state, constants = program.state_dict, program.constants
    flat = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            name = getattr(spec.arg, "name", None)
            if name not in inputs:
                raise OpmapError(f"no value for input {name}")
            flat.append(inputs[name])
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            name = getattr(spec.arg, "name", None)  # mutated state is an engine input: its value is given
            flat.append(inputs[name] if name in inputs else state[spec.target] if spec.target in state else constants[spec.target])
        elif spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            flat.append(constants[spec.target])
        else:
            raise OpmapError(f"exported program input {spec.arg} of kind {spec.kind.name} is not supported by verify")
    return flat


def reference(program: Any, inputs: dict[str, torch.Tensor]) -> list[Any]:
    """Every output of the exported program's flat graph (buffer mutations included), in graph output order."""
    with torch.no_grad():
        flat = torch.fx.Interpreter(program.graph_module).run(*lifted_inputs(program, inputs))
    return list(flat) if isinstance(flat, (list, tuple)) else [flat]


def node_values(program: Any, inputs: dict[str, torch.Tensor], names: set[str]) -> dict[str, Any]:
    """PyTorch's values of the named graph nodes (the flat graph, as :func:`reference` runs it)."""
    seen: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n.name in names:
                seen[n.name] = result
            return result

    with torch.no_grad():
        Recorder(program.graph_module).run(*lifted_inputs(program, inputs))
    return seen


_LOWER = {"float16": 1, "bfloat16": 2}  # float32 (0) < float16 < bfloat16 in tolerance


def _path_precision(graph: Graph | None, name: str | None, out_dtype: torch.dtype) -> str | None:
    """The lowest float precision on the way to a float output: an output the program computes through bfloat16 (an
    autocast region, a cast and back) is compared at bfloat16's tolerance, not float32's — PyTorch's and the network's
    rounding points differ by an ulp of the narrowest type they pass through. None where the output's own dtype is the
    narrowest (the usual case)."""
    if graph is None or name is None or not out_dtype.is_floating_point or name not in graph.nodes:
        return None
    worst, seen, todo = _LOWER.get(str(out_dtype).removeprefix("torch."), 0), set(), [name]
    lowest = None
    while todo:
        node = graph.nodes.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        for meta in node.outputs:
            rank = _LOWER.get(meta.dtype, 0) if meta is not None else 0
            if rank > worst:
                worst, lowest = rank, meta.dtype
        refs = [v for v in node.args.values() for v in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(v, Ref)]
        todo.extend(r.node for r in refs)
    return lowest


_ORDER_FREE = ("aten.topk.default", "aten.sort.default", "aten.sort.stable")


def _tie_order_only(graph: Graph, program: Any, inputs: dict[str, torch.Tensor], name: str | None, exp: torch.Tensor,
                    got: torch.Tensor) -> bool:
    """The indices output of a topk/sort that is not asked to be stable, differing from PyTorch's only in how equal
    elements are ordered: distinct indices along the dim, each pointing at the value PyTorch's index points at."""
    node = graph.nodes.get(name) if name else None
    if node is None or node.op != "operator.getitem" or node.arg("arg1") != 1 or not isinstance(node.arg("arg0"), Ref):
        return False
    src = graph.nodes.get(node.arg("arg0").node)
    if src is None or src.op not in _ORDER_FREE or src.arg("stable") or not isinstance(src.arg("self"), Ref):
        return False
    source = src.arg("self").node
    x = node_values(program, inputs, {source}).get(source)
    dim = src.arg("dim", -1)
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or got.shape != exp.shape:
        return False
    got = got.long()
    if bool((got < 0).any()) or bool((got >= x.shape[dim]).any()):
        return False
    distinct = got.sort(dim).values.diff(dim=dim) != 0 if got.shape[dim] > 1 else torch.ones(1, dtype=torch.bool)
    return bool(distinct.all()) and torch.equal(x.gather(dim, got), x.gather(dim, exp.long()))


def data_dependent_axes(graph: Graph, meta: TensorMeta | None) -> list[int]:
    """The dims of a value whose size is data-dependent (an unbacked size, alone or in an expression)."""
    import re

    return [axis for axis, d in enumerate(meta.shape if meta is not None else ())
            if isinstance(d, str) and any(graph.symbols.get(tok) is not None and graph.symbols[tok].data_dependent or tok.startswith("u")
                                          for tok in re.findall(r"[A-Za-z_]\w*", d))]


def padded_axis(graph: Graph, ref: Ref | None) -> int:
    """An output's first data-dependent dim (an unbacked size): where a padded layout pads. 0 when it has none."""
    axes = data_dependent_axes(graph, graph.meta_of(ref) if ref is not None else None)
    return axes[0] if axes else 0


def compare(expected: torch.Tensor, got: torch.Tensor, compute: str | None = None) -> tuple[float, float, float, bool]:
    """max abs, max rel, mismatch fraction, ok. ``compute``: the float dtype the network computed in, if not float32."""
    dtype = str(expected.dtype).removeprefix("torch.")
    if compute and expected.is_floating_point():
        dtype = compute
    if expected.shape != got.shape:
        return float("inf"), float("inf"), 1.0, False
    if not expected.is_floating_point():
        bad = (expected != got.to(expected.dtype)).float()
        frac = float(bad.mean()) if bad.numel() else 0.0
        return (float(bad.max()) if bad.numel() else 0.0), frac, frac, frac == 0
    atol, rtol = TOLERANCE.get(dtype, (1e-4, 1e-4))
    e, g = expected.double(), got.double()
    if dtype == "int8" and e.numel():
        atol, rtol = INT8_RANGE_TOLERANCE * float(e.abs().max()), 0.0
    diff = (e - g).abs()
    same = (e == g) | (torch.isnan(e) & torch.isnan(g))  # equal infinities and NaN against NaN agree
    diff = torch.where(same, torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)  # NaN on one side only: a mismatch
    if diff.numel() == 0:
        return 0.0, 0.0, 0.0, True
    rel = torch.where(same, torch.zeros_like(diff), diff / e.abs().clamp_min(1e-12))
    bad = (diff > atol + rtol * e.abs()) | (~same & ~torch.isfinite(e))  # a non-finite expected value must be matched exactly
    return float(diff.max()), float(rel.max()), float(bad.double().mean()), not bool(bad.any())


def _check_scalar(name: str, node: str | None, expected: Any, got: Any) -> OutputCheck:
    """A SymInt/scalar output: the network's 1-element tensor against PyTorch's value, exactly."""
    if got is None:
        return OutputCheck(name, node, (), type(expected).__name__, float("inf"), float("inf"), 1.0, False, "missing from the network")
    value = got.reshape(-1)[0].item() if isinstance(got, torch.Tensor) and got.numel() == 1 else None
    exp = expected.item() if isinstance(expected, torch.Tensor) else expected
    ok = value is not None and value == exp
    diff = abs(value - exp) if ok is False and value is not None else (0.0 if ok else float("inf"))
    return OutputCheck(name, node, (), type(exp).__name__, float(diff), float(diff), 0.0 if ok else 1.0, ok,
                       f"scalar: PyTorch {exp}, network {value}")


def contract_violation(graph: Graph, inputs: dict[str, torch.Tensor], flat: list[Any]) -> str | None:
    """Where PyTorch's own result contradicts the shapes the export promised at these input sizes, the export is not
    valid there (torch.export fixed a structure, e.g. the number of ``split`` pieces, without guarding it): say so."""
    from opmap.building.builder import _size_expr

    values: dict[str, int] = {}
    for name, meta in graph.inputs.items():
        for d, n in zip(meta.shape, inputs[name].shape):
            if isinstance(d, str) and d.isidentifier():
                values[d] = int(n)
    for ref, value in zip(graph.outputs, flat):
        meta = graph.meta_of(ref) if ref is not None else None
        if meta is None or not isinstance(value, torch.Tensor) or len(meta.shape) != value.dim():
            continue
        for axis, (d, n) in enumerate(zip(meta.shape, value.shape)):
            if isinstance(d, int):
                promised = d
            else:
                expr = _size_expr(d)
                if any(str(sym) not in values for sym in expr.free_symbols):
                    continue  # a data-dependent size: not promised
                promised = int(expr.subs({sym: values[str(sym)] for sym in expr.free_symbols}))
            if promised != n:
                return (f"PyTorch's output {ref} has {n} in dim {axis} where the export promises {d} = {promised} at "
                        f"{', '.join(f'{k}={v}' for k, v in values.items())}: the exported program is not valid at these sizes")
    return None


def engine_buffer(value: Any) -> Any:
    """An input as an engine receives it: a dense buffer bound at its first element. A view with a storage offset or
    strides is copied, so PyTorch's reference sees what the engine sees (``x.storage_offset()`` is 0 in both)."""
    if isinstance(value, torch.Tensor) and (value.storage_offset() or not value.is_contiguous()):
        return value.clone(memory_format=torch.contiguous_format)
    return value


def verify_built(built: Built, program: Any, inputs: dict[str, torch.Tensor], runtime: str = "reference", seed: int = 0,
                 precision: str = "fp32", drawn: dict[str, str] | None = None) -> Report:
    """Compare every user output of the network with PyTorch's, by the reference interpreter or (``trt``) the real engine.

    Both runs start from the same torch seed, so random ops draw the same samples in the interpreter. An output the
    network does not produce is a failure, never a skip."""
    from torch.export.graph_signature import OutputKind

    inputs = {name: engine_buffer(value) for name, value in inputs.items()}
    torch.manual_seed(seed)
    try:
        flat = reference(program, inputs)
    except OpmapError:
        raise
    except Exception as exc:  # the program itself fails on these inputs (a shape its export did not guard against)
        from opmap.errors import first_line

        raise ReferenceFailed(f"PyTorch itself fails on these inputs ({type(exc).__name__}: {first_line(exc)})") from None
    kinds = [spec.kind for spec in program.graph_signature.output_specs]
    if built.graph is not None:
        broken = contract_violation(built.graph, inputs, flat)
        if broken:
            raise ReferenceFailed(broken)
    torch.manual_seed(seed)
    got = run_engine(built, inputs) if runtime == "trt" else run_network(built.network, built.trt, inputs, built.attention)
    report = Report(inputs=dict(drawn or {}), shape=", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in inputs.items()))
    compute = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}.get(precision)
    state = {s.output: s.output_name for s in (built.graph.state if built.graph is not None else ())}
    for i, (exp, kind) in enumerate(zip(flat, kinds)):
        if kind != OutputKind.USER_OUTPUT and i not in state:
            continue  # no other output kind is an engine output
        report.expected += 1
        name = state.get(i, f"output{i}")  # the returned state is compared like any output
        node = built.output_nodes[built.outputs.index(name)] if name in built.outputs else None
        value = got.get(name)
        if not isinstance(exp, torch.Tensor):
            if value is None and i < len(built.graph_outputs) and built.graph_outputs[i] is None:
                report.outputs.append(OutputCheck(name, None, (), type(exp).__name__, 0.0, 0.0, 0.0, True,
                                                  f"constant {exp!r}: part of the program, not computed"))
            else:
                report.outputs.append(_check_scalar(name, node, exp, value))
            continue
        if value is None:
            report.outputs.append(OutputCheck(name, node, tuple(exp.shape), str(exp.dtype).removeprefix("torch."), float("inf"),
                                              float("inf"), 1.0, False, "the network has no such output"))
            continue
        note = ""
        count_name = next((k for k, label in built.extra_outputs.items() if k.startswith(name + ".") and label == "count"), None)
        if count_name is not None:
            count = int(got[count_name].reshape(-1)[0])
            axis = padded_axis(built.graph, built.graph_outputs[i]) if built.graph is not None else 0
            note = (f"padded output: compared the first {count} of {value.shape[axis]} rows"
                    f"{f' along dim {axis}' if axis else ''}; count {'exact' if count == exp.shape[axis] else 'WRONG'}")
            report.discrete.append({"name": count_name, "node": node, "kind": "count", "expected": int(exp.shape[axis]),
                                    "got": count, "agree": count == exp.shape[axis]})
            if count != exp.shape[axis] or count > value.shape[axis]:
                if count > value.shape[axis]:
                    note += f" (true count {count} exceeds the bound {value.shape[axis]}: the result was truncated)"
                report.outputs.append(OutputCheck(name, node, tuple(value.shape), str(exp.dtype).removeprefix("torch."),
                                                  float("inf"), float("inf"), 1.0, False, note,
                                                  truncated=count == exp.shape[axis] > value.shape[axis]))
                continue
            value = value.narrow(axis, 0, count)
        max_abs, max_rel, mismatch, ok = compare(exp, value, compute or _path_precision(built.graph, node, exp.dtype))
        if not exp.is_floating_point():
            kind = "mask" if exp.dtype == torch.bool else "indices/values"
            wrong = int((exp != value.to(exp.dtype)).sum()) if exp.shape == value.shape else exp.numel()
            if wrong and built.graph is not None and _tie_order_only(built.graph, program, inputs, node, exp, value):
                wrong, ok = 0, True
                max_abs, max_rel, mismatch = 0.0, 0.0, 0.0
                note = ("indices of equal elements in another order than PyTorch's (sort/topk without stable=True leave "
                        "it unspecified); every index points at an equal value")
            report.discrete.append({"name": name, "node": node, "kind": kind, "elements": exp.numel(), "mismatched": wrong,
                                    "agree": wrong == 0})
        finite = exp[torch.isfinite(exp)] if exp.is_floating_point() else None
        scale = float(finite.abs().max()) if finite is not None and finite.numel() else 0.0
        report.outputs.append(OutputCheck(name, node, tuple(exp.shape), str(exp.dtype).removeprefix("torch."), max_abs, max_rel,
                                          mismatch, ok, note, scale))
    return report


def load_inputs(path: str, graph: Graph, program: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``--inputs``: a torch.save'd dict (loaded without running code) of input name -> tensor.

    Names are the exported program's input names: the forward's parameter names for positional and keyword inputs
    (``input_ids``), flattened names for nested containers (``x_0``, ``batch_image``). Shapes must fit the export's
    static dims and ranges, dtypes must match."""
    from pathlib import Path

    from opmap.loading.archive import inspect_file

    if not Path(path).is_file():
        raise OpmapError(f"{path}: no such file")
    inspect_file(Path(path))  # the same zip structure limits as model files (sizes, ratios, names) before torch reads it
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from opmap.errors import load_failure

        raise OpmapError(f"{path}: cannot load inputs: {load_failure(exc)} (expected torch.save of {{name: tensor}})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise OpmapError(f"{path}: expected a dict of input name -> tensor, got {type(data).__name__}")
    values = check_inputs(data, graph, path)
    return values, {k: f"{graph.inputs[k].dtype} {list(values[k].shape)}: from {path}" for k in graph.inputs}


def check_inputs(data: dict[str, torch.Tensor], graph: Graph, path: str) -> dict[str, torch.Tensor]:
    """Input values checked against the export (names, dtypes, static dims, dynamic ranges and ties); ``path`` names
    where they came from in the one-line error."""
    expected = graph.inputs
    missing = sorted(set(expected) - set(data))
    if missing:
        raise OpmapError(f"{path}: no tensor for input(s) {', '.join(missing)} (the model takes {', '.join(expected)})")
    unknown = sorted(set(data) - set(expected))
    if unknown:
        raise OpmapError(f"{path}: unknown input(s) {', '.join(unknown)} (the model takes {', '.join(expected)})")
    seen: dict[str, int] = {}
    for name, meta in expected.items():
        value = data[name]
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype != meta.dtype:
            raise OpmapError(f"{path}: input {name} is {dtype}, the model takes {meta.dtype}")
        if value.dim() != len(meta.shape):
            raise OpmapError(f"{path}: input {name} has {value.dim()} dims {list(value.shape)}, the model takes {meta}")
        for axis, (d, n) in enumerate(zip(meta.shape, value.shape)):
            if isinstance(d, int):
                if d != n:
                    raise OpmapError(f"{path}: input {name} dim {axis} is {n}, the model was exported with {d} there")
                continue
            lo, hi = graph.dim_range(d)
            if n < lo or (hi is not None and n > hi):
                raise OpmapError(f"{path}: input {name} dim {axis} is {n}, outside the export's range {d} in [{lo}, {hi if hi is not None else 'inf'}]")
            if seen.setdefault(d, n) != n:
                raise OpmapError(f"{path}: input {name} dim {axis} is {n}, but {d} is {seen[d]} in another input (the export ties them)")
    return {k: data[k] for k in expected}


def run_engine(built: Built, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Execute the serialized engine on the GPU with full TensorRT (``verify --runtime trt``)."""
    from opmap.building.backend import logger
    from opmap.building.builder import torch_dtype_of
    from opmap.errors import OpmapError

    trt = built.trt
    if not torch.cuda.is_available():
        raise OpmapError("--runtime trt needs a CUDA GPU; none is visible here (engines are built ahead-of-time only)")
    runtime = trt.Runtime(logger(trt))
    engine = runtime.deserialize_cuda_engine(built.engine)
    if engine is None:
        raise OpmapError(f"{built.trt.__name__} cannot run this engine on this GPU: {logger(trt).messages[-1:]}")
    context = engine.create_execution_context()
    buffers: dict[str, torch.Tensor] = {}
    for name, value in inputs.items():
        buffers[name] = value.cuda().contiguous()
        context.set_input_shape(name, tuple(value.shape))
        context.set_tensor_address(name, buffers[name].data_ptr())
    for name in built.outputs:
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise OpmapError(f"output {name} has a data-dependent shape; its runtime needs an output allocator")
        buffers[name] = torch.empty(shape, dtype=torch_dtype_of(engine.get_tensor_dtype(name)), device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise OpmapError("TensorRT failed to execute the engine")
    stream.synchronize()
    return {name: buffers[name].cpu() for name in built.outputs}


# -- points of a dynamic range -----------------------------------------------------------------------------------
def resize_inputs(inputs: dict[str, torch.Tensor], graph: Graph, point: dict[str, int]) -> dict[str, torch.Tensor]:
    """Given inputs redrawn at the shapes of ``point``, of the same kind: masks stay masks (with their density), integers
    stay in their range, an integer input that indexes a table is taken modulo the table's size at that point, and
    embedding-bag offsets are drawn again ascending from 0."""
    dims = symbol_values(graph, point)
    g = torch.Generator().manual_seed(sum(dims.values()))
    out = {}
    for name, meta in graph.inputs.items():
        value = inputs[name]
        shape = [d if isinstance(d, int) else dims[d] for d in meta.shape]
        bag = _bag_offsets(graph, name, dims) if not value.is_floating_point() and len(shape) == 1 else None
        if bag is not None:  # offsets must stay ascending from 0 within the indices drawn at this point
            value = _draw_offsets(shape, *bag, g).to(value.dtype)
        elif list(value.shape) != shape:  # fresh draws of the same kind (tiling would repeat values and make ties)
            if value.dtype == torch.bool:
                value = torch.rand(shape, generator=g) < (value.float().mean() if value.numel() else 0.5)
            elif value.is_floating_point():
                value = torch.randn(shape, generator=g).to(value.dtype)
            else:
                lo, hi = (int(value.min()), int(value.max())) if value.numel() else (0, 9)
                value = torch.randint(lo, hi + 1, shape, generator=g, dtype=value.dtype)
        if not value.is_floating_point() and value.dtype != torch.bool:
            high = min((n for n, _ in _index_uses(graph, name, dims)), default=None)
            if high is not None:
                value = value.remainder(high)
        out[name] = value.contiguous()
    return out


# -- locating a mismatch -----------------------------------------------------------------------------------------
def tolerance_ratio(expected: torch.Tensor, got: torch.Tensor, compute: str | None = None) -> float:
    """How far ``got`` is from ``expected`` in units of :func:`compare`'s tolerance: max |a-b| / (atol + rtol*|b|) over
    the elements (above 1 is a mismatch); a differing shape, a one-sided NaN or a wrong discrete value is infinite."""
    if expected.shape != got.shape:
        return float("inf")
    if not expected.is_floating_point():
        return 0.0 if bool((expected == got.to(expected.dtype)).all()) else float("inf")
    dtype = compute or str(expected.dtype).removeprefix("torch.")
    atol, rtol = TOLERANCE.get(dtype, (1e-4, 1e-4))
    e, g = expected.double(), got.double()
    if e.numel() == 0:
        return 0.0
    if dtype == "int8":
        atol, rtol = INT8_RANGE_TOLERANCE * float(e.abs().max()), 0.0
    same = (e == g) | (torch.isnan(e) & torch.isnan(g))
    diff = torch.where(same, torch.zeros_like(e), (e - g).abs())
    if bool((~same & ~torch.isfinite(diff)).any()) or bool((~same & ~torch.isfinite(e)).any()):
        return float("inf")
    return float((diff / (atol + rtol * e.abs()).clamp_min(1e-30)).max())


@dataclass
class NodeCheck:
    """One graph node's value in the network against PyTorch's: end to end (from the same model inputs), and locally
    (PyTorch's op run on the network's own values of the node's inputs: what the node's strategy alone adds)."""

    name: str
    op: str
    strategy: str | None
    kind: str | None
    precision: str | None
    contract: str | None
    args: dict[str, Any]
    outputs: list[str]
    max_abs: float
    max_rel: float
    mismatch: float
    ratio: float  # end-to-end error in units of the tolerance
    ok: bool
    local: dict[str, Any] | None  # {"max_abs_err", "max_rel_err", "mismatch_frac", "tolerance_ratio", "ok"}
    stack: str | None = None
    inputs_not_compared: list[str] = field(default_factory=list)

    @property
    def local_ratio(self) -> float:
        return self.local["tolerance_ratio"] if self.local is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "strategy": self.strategy, "kind": self.kind, "precision": self.precision,
                "contract": self.contract, "stack": self.stack, "args": self.args, "outputs": self.outputs,
                "max_abs_err": self.max_abs, "max_rel_err": self.max_rel, "mismatch_frac": self.mismatch,
                "tolerance_ratio": self.ratio, "ok": self.ok, "local": self.local,
                "inputs_not_compared": self.inputs_not_compared}


@dataclass
class Located:
    """``verify --locate``: every node of the network compared with PyTorch's at one point, in graph order, and the
    node to blame. ``node``: the first node whose own strategy computes something else (beyond tolerance from the
    network's own inputs); where no node is, the node with the largest own error upstream of ``first_beyond``, the first
    node whose output is beyond tolerance."""

    point: str
    shape: str
    compared: int
    node: NodeCheck | None
    first_beyond: NodeCheck | None
    why: str
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> nodes not compared
    runtime: str = "reference"

    @property
    def ok(self) -> bool:
        return self.first_beyond is None

    def to_dict(self) -> dict[str, Any]:
        return {"point": self.point, "shape": self.shape, "runtime": self.runtime, "ok": self.ok, "compared": self.compared,
                "node": self.node.to_dict() if self.node else None,
                "first_beyond": self.first_beyond.to_dict() if self.first_beyond else None, "why": self.why,
                "skipped": {reason: names[:10] + ([f"... {len(names) - 10} more"] if len(names) > 10 else [])
                            for reason, names in self.skipped.items()}}


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value]


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _describe_args(node: Any, shapes: dict[str, list[Any]]) -> dict[str, Any]:
    """A node's arguments as the report shows them: a tensor as ``producer dtype[concrete dims]``, scalars as they are."""

    def one(value: Any) -> Any:
        if isinstance(value, Ref):
            meta = node._graph.meta_of(value) if node._graph is not None else None
            got = shapes.get(value.node)
            got = got[value.index or 0] if got is not None and len(got) > (value.index or 0) else None
            dims = list(got.shape) if isinstance(got, torch.Tensor) else (list(meta.shape) if meta else "?")
            return f"{value} {meta.dtype if meta else '?'}{dims}"
        if isinstance(value, (list, tuple)):
            return [one(v) for v in value]
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

    return {k: one(v) for k, v in node.args.items()}


def locate(built: Built, plan: Any, program: Any, inputs: dict[str, torch.Tensor], seed: int = 0, precision: str = "fp32",
           point: str = "static") -> Located:
    """Run the network through the reference interpreter keeping every tensor (all at once: the interpreter holds them
    anyway), and PyTorch's exported program keeping every node's value, then compare node by node in graph order with
    :func:`compare`'s tolerance. Each node is also run alone in PyTorch on the network's own values of its inputs, so a
    node that computes the wrong thing is told apart from one that passes on (or amplifies) an error from upstream.

    A real engine would need its intermediate tensors marked as outputs (which changes what TensorRT fuses) or a
    bisection over rebuilt engines; locating always runs the reference interpreter."""
    inputs = {name: engine_buffer(value) for name, value in inputs.items()}
    torch.manual_seed(seed)
    values = run_network(built.network, built.trt, inputs, built.attention, every=True)
    tensors = built.node_tensors
    compute = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}.get(precision)

    def network_value(name: str, like: Any) -> Any:
        """The network's value of node ``name`` shaped like PyTorch's ``like`` (PyTorch's where the network has none
        of the same shape: a padded layout, a masked selection, a non-tensor result)."""
        names = tensors.get(name)
        if names is None:
            return like
        items = list(like) if isinstance(like, (list, tuple)) else [like]
        out = []
        for i, item in enumerate(items):
            got = values.get(names[i]) if i < len(names) and names[i] is not None else None
            ok = isinstance(item, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == item.shape
            out.append(got.to(item.dtype) if ok else item)
        return type(like)(out) if isinstance(like, (list, tuple)) else out[0]

    seen: dict[str, Any] = {}
    local: dict[str, Any] = {}

    class Walker(torch.fx.Interpreter):
        def run_node(self, n):
            if n.op == "call_function" and n.name in tensors:
                state = torch.get_rng_state()  # the op alone draws what it draws in the full run
                args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), lambda a: _clone(
                    self.env[a] if a.op == "placeholder" else network_value(a.name, self.env[a])))
                try:
                    local[n.name] = n.target(*args, **kwargs)
                except Exception:  # noqa: BLE001 - the op refuses the network's values (e.g. an index out of range)
                    local[n.name] = None
                torch.set_rng_state(state)
            result = super().run_node(n)
            if n.op == "call_function":
                seen[n.name] = _clone(result)  # as produced: a later in-place op must not change it
            return result

    torch.manual_seed(seed)
    with torch.no_grad():
        Walker(program.graph_module).run(*lifted_inputs(program, inputs))

    graph = built.graph
    produced = {k: _flat(v) for k, v in seen.items()}
    checks: dict[str, NodeCheck] = {}
    skipped: dict[str, list[str]] = {}
    order = []
    for np_ in plan.nodes:
        node = np_.node
        name = node.name
        if name not in seen or name not in tensors:
            skipped.setdefault("not a value of both the network and PyTorch (plumbing, scalars, asserts)", []).append(name)
            continue
        expected, names = produced[name], tensors[name]
        own = _flat(local.get(name)) if local.get(name) is not None else None
        worst = (0.0, 0.0, 0.0, True, 0.0)
        lworst = (0.0, 0.0, 0.0, True, 0.0)
        outs, reason = [], None
        node_compute = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}.get(np_.precision or "")
        for i, exp in enumerate(expected):
            if not isinstance(exp, torch.Tensor) or i >= len(names) or names[i] is None:
                continue
            got = values.get(names[i])
            if got is None:
                continue
            if got.shape != exp.shape:
                meta = node.outputs[i] if i < len(node.outputs) else None
                if np_.contract or data_dependent_axes(graph, meta):
                    reason = f"a changed output contract ({np_.contract or 'a padded layout'}): not comparable element by element"
                    continue
            outs.append(f"{exp.dtype}".removeprefix("torch.") + str(list(exp.shape)))
            max_abs, max_rel, mismatch, ok = compare(exp, got, compute)
            ratio = tolerance_ratio(exp, got, compute)
            worst = (max(worst[0], max_abs), max(worst[1], max_rel), max(worst[2], mismatch), worst[3] and ok, max(worst[4], ratio))
            if own is not None and i < len(own) and isinstance(own[i], torch.Tensor):
                ref = own[i]
                alone = compare(ref, got, node_compute) if ref.shape == got.shape else (float("inf"),) * 3 + (False,)
                lworst = (max(lworst[0], alone[0]), max(lworst[1], alone[1]), max(lworst[2], alone[2]), lworst[3] and alone[3],
                          max(lworst[4], tolerance_ratio(ref, got, node_compute)))
        if not outs:
            skipped.setdefault(reason or "no tensor output", []).append(name)
            continue
        checks[name] = NodeCheck(
            name, node.op, np_.choice.strategy if np_.choice else None, np_.choice.kind if np_.choice else None, np_.precision,
            np_.contract, _describe_args(node, produced), outs, worst[0], worst[1], worst[2],
            worst[4], worst[3],
            {"max_abs_err": lworst[0], "max_rel_err": lworst[1], "mismatch_frac": lworst[2], "tolerance_ratio": lworst[4],
             "ok": lworst[3]} if own is not None else None, node.stack)
        order.append(name)
    shape = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in inputs.items())
    first = next((checks[n] for n in order if not checks[n].ok), None)
    if first is None:
        return Located(point, shape, len(checks), None, None, f"no node diverges: {len(checks)} nodes agree with PyTorch "
                       "within tolerance", skipped)
    first.inputs_not_compared = sorted({r.node for r in graph[first.name].tensor_refs()
                                        if r.node in graph.nodes and r.node not in checks})
    upstream = _ancestors(graph, first.name)
    suspects = [checks[n] for n in order if n in upstream and checks[n].local is not None]
    own_wrong = next((c for c in suspects if not c.local["ok"]), None)
    if first.local is None or not first.local["ok"]:
        culprit = first
        why = f"{first.name} is the first node beyond tolerance ({_ratio(first.ratio)} of it); its inputs agree with PyTorch's"
        if first.inputs_not_compared:
            why += f" where compared (not compared: {', '.join(first.inputs_not_compared)})"
        if first.local is not None:
            why += (f", and PyTorch's {first.op} on the network's own values of its inputs gives something else "
                    f"({_ratio(first.local_ratio)} of tolerance): its strategy {first.strategy} computes the wrong thing")
        else:
            why += f": the network and PyTorch part at its strategy {first.strategy} (PyTorch cannot run the op alone here)"
    elif own_wrong is not None:  # an upstream node computes the wrong thing, yet stays within tolerance end to end
        culprit = own_wrong
        why = (f"{first.name} is the first node beyond tolerance, but computes what PyTorch computes from its inputs; upstream, "
               f"{own_wrong.name}'s strategy {own_wrong.strategy} computes something else from its own inputs "
               f"({_ratio(own_wrong.local_ratio)} of tolerance) though its output stays within tolerance")
    else:
        culprit = max(suspects, key=lambda c: c.local_ratio, default=first)
        if culprit.local_ratio == 0:  # every node upstream computes exactly what PyTorch does from its inputs
            culprit = first
        why = (f"{first.name} is the first node beyond tolerance ({_ratio(first.ratio)} of it), but from the network's own "
               f"values of its inputs it computes what PyTorch computes ({_ratio(first.local_ratio)} of tolerance): it "
               f"amplifies an error that comes in from upstream, where {culprit.name} (strategy {culprit.strategy}) adds the "
               f"largest error of its own ({_ratio(culprit.local_ratio)} of tolerance, max abs "
               f"{culprit.local['max_abs_err']:.3g}), within tolerance alone" if culprit is not first else
               f"{first.name} is the first node beyond tolerance, yet computes what PyTorch computes from its inputs, and "
               "no node upstream adds an error of its own")
    return Located(point, shape, len(checks), culprit, first, why, skipped)


def _ratio(r: float) -> str:
    return "infinitely far" if r == float("inf") else f"{r:.3g}x"


def _ancestors(graph: Graph, name: str) -> set[str]:
    seen: set[str] = set()
    frontier = [name]
    while frontier:
        node = graph.nodes.get(frontier.pop())
        if node is None:
            continue
        for ref in node.tensor_refs():
            if ref.node not in seen and ref.node in graph.nodes:
                seen.add(ref.node)
                frontier.append(ref.node)
    return seen
