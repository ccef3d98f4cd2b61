"""``opmap compare``: the ONNX route (torch.onnx dynamo exporter -> the backend's ONNX parser -> build) beside opmap's,
on the same captured program in the same process, with every ONNX-route failure traced back to the ATen node(s) behind it.

The dynamo exporter writes each ONNX node's originating FX node into its ``metadata_props``
(``pkg.torch.onnx.fx_node`` = ``%name : ...``); TensorRT's ONNX parser names the ONNX node in its errors and tags each
layer it adds with ``[ONNX Layer: <onnx node>]`` in the layer's metadata. Those two links carry parse and build
failures back to FX nodes, which are opmap's graph nodes (same names)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from opmap.errors import OpmapError, first_line

STAGES = ("ok", "export", "parse", "build", "stopped")  # per node: where the ONNX route failed on it ("stopped": elsewhere)
INSTALL_HINT = "opmap compare needs the ONNX exporter's packages: pip install 'opmap[onnx]' (onnx and onnxscript)"


def require_onnx() -> None:
    """One line naming what to install when onnx/onnxscript are missing (exit 2)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise OpmapError(INSTALL_HINT) from None


@dataclass
class Route:
    """One route's whole-model outcome."""

    name: str  # "opmap" | "onnx"
    ok: bool = False
    stage: str = ""  # where it stopped ("" when it built): export | parse | build | plan
    message: str = ""
    seconds: float = 0.0  # the whole route, export/plan through build
    build_seconds: float | None = None  # the engine build alone
    layers: int | None = None
    engine_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the ONNX route: opset, exporter, onnx nodes

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stage": self.stage or None, "message": self.message or None, "seconds": round(self.seconds, 3),
                "build_seconds": None if self.build_seconds is None else round(self.build_seconds, 3), "layers": self.layers,
                "engine_bytes": self.engine_bytes, **self.details}


@dataclass
class NodeOutcome:
    stage: str = "ok"  # one of STAGES
    message: str = ""
    onnx_nodes: list[str] = field(default_factory=list)  # the ONNX nodes the exporter made of it


@dataclass
class Comparison:
    plan: Any  # opmap's Plan
    opmap: Route
    onnx: Route
    nodes: dict[str, NodeOutcome]  # ATen node name -> the ONNX route on it
    unattributed: list[str] = field(default_factory=list)  # ONNX-route failures no ATen node could be found for
    check: dict[str, Any] | None = None
    onnx_model: bytes | None = None  # the exported ONNX model, where export succeeded and parsing too
    estimates: list[dict[str, Any]] = field(default_factory=list)  # per precision and size: both routes' estimated latency

    @property
    def ok(self) -> bool:
        return self.plan.complete


# -- the ONNX route -----------------------------------------------------------------------------------------------
_FX_NAME = re.compile(r"^%(\w+)\s*:")


def fx_origin(onnx_node: Any) -> str | None:
    """The FX node an ONNX node came from, from the dynamo exporter's metadata."""
    for prop in onnx_node.metadata_props:
        if prop.key == "pkg.torch.onnx.fx_node":
            m = _FX_NAME.match(prop.value)
            if m:
                return m.group(1)
    return None


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and registry warnings; compare reports its own outcome."""
    logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _export_failure(exc: BaseException) -> tuple[str | None, str]:
    """(the FX node the exporter failed on, the exporter's own reason) from its exception text."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the exporter colours its text for terminals
    node = re.search(r"Error when translating node %(\w+)", text)
    reason = None
    for m in re.finditer(r"<class '(?:[\w.]+\.)?(\w+)'>: (.+)", text):  # a builtin exception's class has no module
        if m.group(1) != "ConversionError":
            reason = m.group(2).strip()
            break
    if reason is None:
        reason = next((ln.strip() for ln in text.splitlines() if ln.strip() and "step" not in ln), type(exc).__name__)
    reason = re.sub(r"<OpOverload\(op='([\w.]+)', overload='(\w+)'\)>", r"\1.\2", reason)
    return (node.group(1) if node else None), reason


def decomposed_origins(program: Any, graph: Any) -> dict[str, str]:
    """The exporter decomposes the program before translating it: its FX node -> the graph node it came from, by the
    ``from_node`` provenance torch.fx keeps through decompositions."""
    found: dict[str, str] = {}
    for node in getattr(getattr(program, "graph", None), "nodes", ()):
        frontier = list(node.meta.get("from_node") or ())
        while frontier:
            source = frontier.pop(0)
            if getattr(source, "name", None) in graph.nodes:
                found[node.name] = source.name
                break
            frontier.extend(getattr(source, "from_node", None) or ())
    return found


def _parse_message(error: Any, messages: list[str]) -> str:
    """The parser's error for a node, with the logger's fuller line about that node where the description is terse."""
    desc = error.desc()
    if len(desc) > 40:
        return desc
    detail = next((m for m in reversed(messages) if "ERROR" in m), None)
    detail = detail.split("ERROR:", 1)[-1].strip() if detail else f"in {error.func()}"
    return f"{desc} ({detail})"


def _onnx_layer(layer: Any) -> str | None:
    m = re.search(r"\[ONNX Layer: ([^\]]+)\]", getattr(layer, "metadata", "") or "")
    return m.group(1) if m else None


def parse_onnx(trt: Any, data: bytes) -> tuple[Any, Any, Any, Any, bool]:
    """The backend's ONNX parser on a serialized model, into a strongly typed network: (log, builder, network, parser, ok)."""
    from opmap.building.backend import logger, strongly_typed_network
    from opmap.native import native_stderr_silenced

    log = logger(trt)
    log.messages = []
    builder = trt.Builder(log)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, log)
    with native_stderr_silenced():
        ok = parser.parse(data)
    return log, builder, network, parser, ok


def onnx_profile(builder: Any, config: Any, network: Any, graph: Any) -> None:
    """A dynamic export's ONNX network has -1 dims: one optimization profile at opmap's own min/opt/max points (the
    export's proven ranges, :func:`opmap.building.profile.profile_points`), by input name. Static: nothing."""
    from opmap.building.profile import profile_points

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if all(d >= 0 for t in inputs for d in t.shape):
        return
    try:
        points = profile_points(graph)
    except OpmapError:  # no proven range: the build fails and says so
        return
    profile = builder.create_optimization_profile()
    for t in inputs:
        meta = graph.inputs.get(t.name)
        if meta is None:
            continue
        shapes = [[d if isinstance(d, int) else points[k][d] for d in meta.shape] for k in ("min", "opt", "max")]
        profile.set_shape(t.name, *shapes)
    config.add_optimization_profile(profile)


def run_onnx_route(program: Any, trt: Any, graph: Any) -> tuple[Route, dict[str, NodeOutcome], list[str], Any]:
    """Export, parse, build. Returns the route, per-node outcomes (only nodes with something to say, plus the ONNX
    nodes each produced), failures no node was found for, and the parsed network (None unless it parsed)."""
    import torch

    from opmap.building.backend import _relevant
    from opmap.native import native_stderr_silenced

    route = Route("onnx")
    nodes: dict[str, NodeOutcome] = {}
    unattributed: list[str] = []
    start = time.perf_counter()
    try:
        with _quiet():
            exported = torch.onnx.export(program, dynamo=True, verbose=False)
        model = exported.model_proto
    except Exception as exc:
        route.seconds = time.perf_counter() - start
        node, reason = _export_failure(exc)
        route.stage, route.message = "export", (f"{node}: " if node else "") + reason
        route.details = {"exporter": f"torch.onnx dynamo (torch {torch.__version__})", "opset": None, "onnx_nodes": None}
        op = re.search(r"\b(aten\.\w+\.\w+)", reason)
        named = [node] if node in graph.nodes else [n.name for n in graph if op and n.op == op.group(1)]
        for name in named:  # the exporter's node, else every graph node of the op it names
            nodes[name] = NodeOutcome("export", reason)
        if not named:
            unattributed.append(route.message)
        return route, nodes, unattributed, None
    route.details = {
        "exporter": f"torch.onnx dynamo ({model.producer_name} {model.producer_version})",
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "onnx_nodes": len(model.graph.node),
    }
    provenance = decomposed_origins(getattr(exported, "exported_program", None), graph)
    origin: dict[str, str | None] = {}  # onnx node name -> the graph node it came from (else the exporter's FX node)
    for n in model.graph.node:
        fx = fx_origin(n)
        fx = provenance.get(fx, fx) if fx else None
        origin[n.name] = fx
        if fx in graph.nodes:
            nodes.setdefault(fx, NodeOutcome()).onnx_nodes.append(n.name)

    def blame(onnx_name: str | None, op_type: str, stage: str, message: str) -> None:
        fx = origin.get(onnx_name or "")
        if fx in graph.nodes:
            outcome = nodes.setdefault(fx, NodeOutcome())
            if outcome.stage == "ok":
                outcome.stage, outcome.message = stage, message
        else:
            unattributed.append(f"{stage}: ONNX node {onnx_name or '?'} ({op_type}"
                                + (f", from FX node {fx}" if fx else ", no FX origin recorded") + f"): {message}")

    data = model.SerializeToString()
    log, builder, network, parser, parsed = parse_onnx(trt, data)
    if not parsed:
        route.seconds = time.perf_counter() - start
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        said = [_parse_message(e, log.messages) for e in errors]
        for e, text in zip(errors, said):
            blame(e.node_name() or None, e.node_operator() or "?", "parse", text)
        route.stage = "parse"
        route.message = "; ".join(f"{e.node_name() or '?'} ({e.node_operator()}): {t}" for e, t in zip(errors, said)) or "the parser failed"
        return route, nodes, unattributed, None
    route.layers = network.num_layers
    config = builder.create_builder_config()
    onnx_profile(builder, config, network, graph)
    b0 = time.perf_counter()
    with native_stderr_silenced():
        engine = builder.build_serialized_network(network, config)
    route.build_seconds = time.perf_counter() - b0
    route.seconds = time.perf_counter() - start
    if engine is None:
        message = _relevant(log.messages) or "build_serialized_network returned None"
        route.stage, route.message = "build", message
        layers = sorted((network.get_layer(i) for i in range(network.num_layers)), key=lambda layer: -len(layer.name))
        hit = next((layer for layer in layers if layer.name and layer.name in message), None)
        onnx_name = _onnx_layer(hit) if hit is not None else None
        if hit is not None and onnx_name:
            blame(onnx_name, hit.type.name, "build", message)
        else:
            unattributed.append(f"build: {message}")
        return route, nodes, unattributed, (network, builder, parser, data)
    route.ok = True
    route.engine_bytes = len(bytes(memoryview(engine)))
    return route, nodes, unattributed, (network, builder, parser, data)


# -- estimated latency, both routes, one estimator ------------------------------------------------------------------
PRECISIONS = ("fp32", "fp16")
SERVED = ({"batch": 8, "sequence": 128, "image": 224}, {"batch": 32, "sequence": 512, "image": 640})


def _role(meta: Any, axis: int) -> str:
    """What a dynamic input dim is, for the served sizes: axis 0 the batch, the last two axes of a 4-d float input an
    image's height and width, any other dim a sequence (tokens, frames)."""
    if axis == 0:
        return "batch"
    if len(meta.shape) == 4 and axis >= 2 and "float" in meta.dtype:
        return "image"
    return "sequence"


def served_points(graph: Any, count: int = len(SERVED)) -> list[tuple[str, dict[str, int]]]:
    """(label, symbol -> value) for the first ``count`` served sizes, each dim clamped into its proven range (the
    label names what was used); none for a static graph (it is estimated at its own size)."""
    points = []
    for sizes in SERVED[:count]:
        point: dict[str, int] = {}
        for meta in graph.inputs.values():
            for axis, d in enumerate(meta.shape):
                if isinstance(d, str) and d not in point and d in graph.symbols:
                    rng = graph.symbols[d]
                    lo = max(1, rng.lower or 1)
                    point[d] = max(lo, min(sizes[_role(meta, axis)], rng.upper if rng.upper is not None else sizes[_role(meta, axis)]))
        if point and point not in [p for _, p in points]:
            points.append(("served", point))
    return points


def example_point(program: Any, graph: Any) -> dict[str, int]:
    """symbol -> its size in the export's example inputs (the sizes the program was exported at)."""
    from torch.export.graph_signature import InputKind

    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    point: dict[str, int] = {}
    examples = getattr(program, "example_inputs", None)
    if not examples:  # a loaded archive may not keep them
        return point
    import torch.utils._pytree as pytree

    flat = [t for t in pytree.tree_leaves(examples) if hasattr(t, "shape")]
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    for name, example in zip(users, flat):
        meta = graph.inputs.get(name)
        if meta is None or vals.get(name) is None:
            continue
        for d, size in zip(meta.shape, example.shape):
            if isinstance(d, str):
                point.setdefault(d, int(size))
    return point


def half_program(program: Any, graph: Any) -> Any:
    """The program as users make an fp16 ONNX model, from the archive alone: its module cast to half (``model.half()``:
    float weights, buffers and lifted constants), float example inputs cast too, exported again with the same dims
    dynamic. The trace keeps the dtypes it saw (a ``.to(x.dtype)`` became a float32 cast), so a program that casts
    explicitly may not re-export: the caller gets the error (the ONNX route's fp16 outcome). Where the nn.Module is at
    hand, ``compare(half=...)`` takes an export of the module itself cast to half instead."""
    import copy
    import inspect

    import torch
    import torch.utils._pytree as pytree
    from torch.export import Dim
    from torch.export.graph_signature import InputKind

    from opmap.checking.verify import draw_inputs

    module = copy.deepcopy(program.module())  # program.module() shares the archive's tensors: .half() would cast them
    module.half()
    for sub in module.modules():  # the program's lifted tensor constants are plain attributes, which .half() skips
        for key, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not isinstance(value, torch.nn.Parameter):
                setattr(sub, key, value.half())
    graph_module = getattr(module, "graph", None)
    if graph_module is not None:  # the trace's dtype assertions (``.to(device)`` on a float32 trace) would refuse half
        for node in list(graph_module.nodes):
            if node.op == "call_function" and "_assert_tensor_metadata" in str(node.target) and not node.users:
                graph_module.erase_node(node)
        module.recompile()
    examples = getattr(program, "example_inputs", None)
    if not examples:  # a loaded archive may not keep them: inputs drawn at the export's dims, in its call structure
        drawn, _ = draw_inputs(graph, 0)
        users = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        examples = pytree.tree_unflatten([drawn[u] for u in users], program.call_spec.in_spec)
    args, kwargs = examples
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    def hint(u, i):  # the dim dynamic within the archive's proven range (an unbounded one has no profile to build)
        symbol = graph.inputs[u].shape[i] if u in graph.inputs else None
        rng = graph.symbols.get(symbol) if isinstance(symbol, str) else None
        return Dim.AUTO(min=rng.lower or 0, max=rng.upper) if rng is not None and rng.upper is not None else Dim.AUTO
    flat = [({i: hint(u, i) for i, d in enumerate(vals[u].shape) if not isinstance(d, int)} or None)
            if hasattr(vals.get(u), "shape") else None for u in users]
    spec_args, spec_kwargs = pytree.tree_unflatten(flat, program.call_spec.in_spec)
    names = list(inspect.signature(module.forward).parameters)
    dynamic = {**dict(zip(names, spec_args)), **spec_kwargs} if all(n not in ("args", "kwargs") for n in names) else None
    def cast(t):  # noqa: E306
        return t.half() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
    if dynamic is not None and not any(v for v in dynamic.values()):
        dynamic = None
    with _quiet():
        return torch.export.export(module, tuple(pytree.tree_map(cast, args)), pytree.tree_map(cast, kwargs),
                                   dynamic_shapes=dynamic, strict=False)


def onnx_network(program: Any, trt: Any) -> tuple[Any, dict[str, str]]:
    """Export and parse (no build): the ONNX route's network and, per ONNX node, the FX node it came from."""
    import torch

    with _quiet():
        exported = torch.onnx.export(program, dynamo=True, verbose=False)
    model = exported.model_proto
    data = model.SerializeToString()
    _, builder, network, parser, ok = parse_onnx(trt, data)
    if not ok:
        raise OpmapError("the ONNX route does not parse: " + "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors)))
    decomposed = getattr(exported, "exported_program", None)
    op_of = {n.name: str(n.target) for n in decomposed.graph.nodes if n.op == "call_function"} if decomposed is not None else {}
    origins = {n.name: op_of.get(fx_origin(n) or "", fx_origin(n) or "") for n in model.graph.node}
    return (network, builder, parser, data), origins


def unreadable_constants(network: Any, trt: Any, data: bytes) -> dict[str, Any]:
    """The values of the parser's constant layers whose weights the bindings cannot hand back (BF16: numpy has no such
    type), from the ONNX model: the initializer (or Constant node) the layer was folded from, cast to BF16 where the
    layer's ONNX node is the Cast the parser folded. By the layer's output name, as the interpreter takes them."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    wanted = []
    for layer in layers:
        if layer.type.name == "CONSTANT":
            layer.__class__ = trt.IConstantLayer
            if layer.weights.dtype == trt.DataType.BF16:
                wanted.append(layer)
    if not wanted:
        return {}
    graph = onnx.load_from_string(data).graph
    tensors = {i.name: i for i in graph.initializer}
    tensors.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    nodes = {n.name: n for n in graph.node}

    def value(proto):
        if proto.data_type == onnx.TensorProto.BFLOAT16:  # stored as the upper 16 bits of each float32
            raw = proto.raw_data or np.array(proto.int32_data, dtype=np.uint16).tobytes()
            return torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(list(proto.dims))
        return torch.from_numpy(numpy_helper.to_array(proto).copy())

    found = {}
    for layer in wanted:
        node = nodes.get(layer.name)
        source = tensors.get(layer.name) or tensors.get(layer.get_output(0).name)
        if source is None and node is not None and node.op_type == "Cast" and node.input[0] in tensors:
            source = tensors[node.input[0]]
        if source is not None:
            found[layer.get_output(0).name] = value(source).to(torch.bfloat16).reshape(tuple(layer.shape))
    return found


def _onnx_origins(data: bytes) -> dict[str, str]:
    import onnx

    return {n.name: fx_origin(n) or "" for n in onnx.load_from_string(data).graph.node}


def _breakdown(est: Any, owner: Any) -> dict[str, float]:
    """Estimated ms per owner (a strategy, an ATen op), largest first."""
    totals: dict[str, float] = {}
    for layer, _, ms in est.by_layer:
        key = owner(layer)
        totals[key] = totals.get(key, 0.0) + ms
    return {k: round(v, 4) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _estimate_one(network: Any, trt: Any, attention: dict, layer_map: dict, inputs: dict, device: Any, seed: int,
                  owner, constants: dict | None = None) -> dict[str, Any]:
    from types import SimpleNamespace

    from opmap.checking.costmodel import estimate

    names = {network.get_input(i).name for i in range(network.num_inputs)}
    est = estimate(SimpleNamespace(network=network, trt=trt, attention=attention, layer_map=layer_map),
                   {**{k: v for k, v in inputs.items() if k in names}, **(constants or {})}, device, seed)
    return {"ms": round(est.ms, 4), "kernels": est.kernels, "fused": est.fused, "by_op": _breakdown(est, owner)}


def estimate_routes(captured: Any, catalog: Any, ruleset: Any, backend: Any, settings: Any, built: Any, parsed: Any,
                    precisions: tuple[str, ...] = PRECISIONS, served: int = len(SERVED), device: Any = None,
                    seed: int = 0, half: Any = None) -> list[dict[str, Any]]:
    """Both routes' networks through the same cost model (:mod:`opmap.checking.costmodel`) on the same drawn inputs:
    at the export's own sizes and at each served size its dynamic dims allow, per precision. fp16: both routes start
    from one half program, the module cast to half as users make an fp16 ONNX model (``half()``, an ExportedProgram of
    the nn.Module cast to half, where given, else :func:`half_program` from the archive), so both networks take and
    return fp16 and are estimated at that program's sizes; opmap plans it with every node it can in fp16 and no
    accuracy budget (the half model has none). Where the half program does not export, the ONNX route has no fp16
    network (the reason) and opmap's is its fp16 plan of the archive itself (fp32 inputs and outputs). A route that
    does not build (or, at fp16, export and parse) has ``None``, with the reason."""
    from dataclasses import replace

    from opmap import service as svc
    from opmap.building.builder import build_network
    from opmap.checking.costmodel import DeviceProfile
    from opmap.checking.verify import draw_inputs
    from opmap.loading.capture import captured_from

    device = device or DeviceProfile.load()
    trt = backend.module
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        ours, theirs, why, source = None, None, {}, captured
        if precision == "fp32":
            ours = built
            if built is None:
                why["opmap"] = "opmap's route does not build"
            if parsed is None:
                why["onnx"] = "the ONNX route does not build"
            else:
                theirs = (parsed[0], _onnx_origins(parsed[3]), unreadable_constants(parsed[0], trt, parsed[3]))
        else:
            program = None
            if parsed is None:
                why["onnx"] = "the ONNX route does not build"
            try:
                program = half() if half is not None else half_program(captured.program, captured.graph)
                source = captured_from(program, "half", "export")
            except Exception as exc:  # the half export failing is the ONNX route's fp16 outcome, reported
                why.setdefault("onnx", f"fp16: the model cast to half does not export: {first_line(exc)[:200]}")
            if parsed is not None and program is not None:
                try:
                    network, origins = onnx_network(program, trt)
                    theirs = (network[0], origins, unreadable_constants(network[0], trt, network[3]), network)
                except Exception as exc:
                    why["onnx"] = f"fp16 {first_line(exc)[:200]}"
            try:
                plan = svc.make_plan(source, catalog, ruleset, backend, replace(settings, precision=precision, tolerance=1e9),
                                     for_build=True)
                ours = build_network(plan, source.program, ruleset.strategies, precision=precision) if plan.complete else None
            except OpmapError as exc:
                why["opmap"] = first_line(exc)
            except Exception as exc:  # the re-exported half program may not even run in PyTorch (planning runs it)
                if source is captured:
                    raise
                why["opmap"] = f"fp16: the half program does not run in PyTorch: {first_line(exc)[:200]}"
            if ours is None:
                why.setdefault("opmap", "opmap's route does not build")
        graph = source.graph
        static = all(isinstance(d, int) for meta in graph.inputs.values() for d in meta.shape)
        example = example_point(captured.program, captured.graph)  # the archive's (a loaded one may keep none)
        points = ([("export", example)] if static or example else []) + served_points(graph, served)
        ops = {n.name: n.op for n in graph}
        for label, point in points:
            inputs, _ = draw_inputs(graph, seed, point or None)
            row: dict[str, Any] = {"precision": precision, "at": label, "io": "fp16" if source is not captured else "program",
                                   "sizes": {k: list(v.shape) for k, v in inputs.items()}, "opmap": None, "onnx": None,
                                   "why": dict(why)}
            if ours is not None:
                lm = ours.layer_map
                def mine(layer, lm=lm):  # noqa: E306
                    entry = lm.get(layer.removesuffix("_AttentionOutput"))
                    if entry is None:
                        return "(inputs and outputs) [builder]"
                    return f"{ops.get(entry.get('node'), entry.get('node', '?'))} [{entry.get('via') or entry.get('strategy', '?')}]"
                try:
                    row["opmap"] = _estimate_one(ours.network, ours.trt, ours.attention, lm, inputs, device, seed, mine)
                except OpmapError as exc:
                    row["why"]["opmap"] = f"estimate: {first_line(exc)}"
            if theirs is not None:
                network, origins = theirs[0], theirs[1]
                layer_node = {}
                for i in range(network.num_layers):
                    layer = network.get_layer(i)
                    m = re.search(r"\[ONNX Layer: ([^\]]+)\]", getattr(layer, "metadata", "") or "")
                    layer_node[layer.name] = m.group(1) if m else ""
                def yours(layer):  # noqa: E306
                    fx = origins.get(layer_node.get(layer, ""), "")
                    return ops.get(fx) or fx or f"(no ATen node: {layer_node.get(layer) or layer})"
                try:
                    row["onnx"] = _estimate_one(network, trt, {}, {}, inputs, device, seed, yours, theirs[2])
                except OpmapError as exc:
                    row["why"]["onnx"] = f"estimate: {first_line(exc)}"
            if row["opmap"] and row["onnx"]:
                row["ratio"] = round(row["opmap"]["ms"] / row["onnx"]["ms"], 3)
            rows.append(row)
    return rows


# -- both routes --------------------------------------------------------------------------------------------------
def compare(captured: Any, catalog: Any, ruleset: Any, backend: Any, settings: Any, *, check: bool = False, seed: int = 0,
            on_node=None, estimate: bool = False, precisions: tuple[str, ...] = PRECISIONS, served: int = len(SERVED),
            device: Any = None, half: Any = None) -> Comparison:
    """Plan and build opmap's route, run the ONNX route on the same program; with ``check``, run both networks through
    the reference interpreter on the same inputs and compare their outputs."""
    from opmap import service as svc
    from opmap.building.builder import build_network, serialize

    require_onnx()
    ours = Route("opmap")
    start = time.perf_counter()
    plan = svc.make_plan(captured, catalog, ruleset, backend, settings, on_node=on_node, for_build=True)
    built = None
    if not plan.complete:
        ours.stage = "plan"
        ours.message = "; ".join(f"{n.node.name} ({n.node.op}): no mapping" for n in plan.nodes if not n.mapped)
    else:
        try:
            built = build_network(plan, captured.program, ruleset.strategies)
            ours.layers = built.network.num_layers
            serialize(built)
            ours.ok, ours.engine_bytes, ours.build_seconds = True, len(built.engine), built.build_seconds
        except OpmapError as exc:
            ours.stage, ours.message = "build", first_line(exc)
    ours.seconds = time.perf_counter() - start
    theirs, nodes, unattributed, parsed = run_onnx_route(captured.program, backend.module, captured.graph)
    if not theirs.ok:  # nodes the failure did not name: the route stopped before judging them
        for name in captured.graph.nodes:
            outcome = nodes.setdefault(name, NodeOutcome())
            if outcome.stage == "ok":
                outcome.stage = "stopped"
    result = Comparison(plan, ours, theirs, {name: nodes.get(name, NodeOutcome()) for name in captured.graph.nodes}, unattributed,
                        onnx_model=parsed[3] if parsed is not None else None)
    if estimate:
        result.estimates = estimate_routes(captured, catalog, ruleset, backend, settings, built, parsed if theirs.ok else None,
                                           precisions, served, device, seed, half)
    if check:
        result.check = check_outputs(captured, built, parsed, backend.module, seed) if built is not None and theirs.ok else \
            {"ran": False, "why": "both routes must build for --check"}
    return result


def check_outputs(captured: Any, built: Any, parsed: Any, trt: Any, seed: int) -> dict[str, Any]:
    """Both networks through the reference interpreter on the same drawn inputs; per graph output, how far apart.
    opmap's padded outputs are cut to their count first. An uninterpretable layer fails the check (never skipped)."""
    import torch

    from opmap.checking.interpreter import run_network
    from opmap.checking.verify import compare as close, draw_inputs, padded_axis

    network = parsed[0]
    values, drawn = draw_inputs(captured.graph, seed)
    outputs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"ran": True, "inputs": drawn, "outputs": outputs}
    try:
        torch.manual_seed(seed)
        ours = run_network(built.network, built.trt, values, built.attention)
        torch.manual_seed(seed)
        names = {network.get_input(i).name for i in range(network.num_inputs)}
        theirs = run_network(network, trt, {**{k: v for k, v in values.items() if k in names},
                                            **unreadable_constants(network, trt, parsed[3])})
    except OpmapError as exc:
        return {"ran": False, "why": f"the reference interpreter: {first_line(exc)}", "inputs": drawn, "outputs": []}
    onnx_names = [network.get_output(i).name for i in range(network.num_outputs)]
    for i, ref in enumerate(built.graph_outputs):
        name = f"output{i}"
        mine = ours.get(name)
        other = theirs.get(onnx_names[i]) if i < len(onnx_names) else None
        row: dict[str, Any] = {"output": name, "node": ref.node if ref is not None else None, "onnx_output": onnx_names[i] if
                               i < len(onnx_names) else None, "note": ""}
        if mine is None or other is None:
            row.update(ok=False, max_abs_err=None, note="missing from " + ("opmap's network" if mine is None else "the ONNX network"))
            outputs.append(row)
            continue
        count = next((k for k, label in built.extra_outputs.items() if k.startswith(name + ".") and label == "count"), None)
        if count is not None:
            axis = padded_axis(built.graph, ref)
            n = int(ours[count].reshape(-1)[0])
            mine = mine.narrow(axis, 0, min(n, mine.shape[axis]))
            row["note"] = f"opmap's padded output cut to its count {n}"
        max_abs, _, mismatch, ok = close(other.to(mine.dtype) if other.dtype != mine.dtype and other.is_floating_point() ==
                                         mine.is_floating_point() else other, mine)
        row.update(ok=ok, max_abs_err=max_abs, mismatch_frac=mismatch)
        outputs.append(row)
    result["ok"] = bool(outputs) and all(o["ok"] for o in outputs)
    return result


def comparison_json(c: Comparison, model: str) -> dict[str, Any]:
    """The stable ``compare --json`` schema (documented in the README)."""
    nodes = []
    for np_ in c.plan.nodes:
        o = c.nodes.get(np_.node.name, NodeOutcome())
        nodes.append({
            "name": np_.node.name, "op": np_.node.op,
            "opmap": {"strategy": np_.choice.strategy if np_.choice else None, "kind": np_.choice.kind if np_.choice else None,
                      "why": np_.why},
            "onnx": {"stage": o.stage, "message": o.message or None, "onnx_nodes": o.onnx_nodes},
        })
    routes = {"opmap": c.opmap.to_dict(), "onnx": c.onnx.to_dict()}
    if c.estimates:  # the cost model's estimate per precision and size (ESTIMATED: nothing here runs an engine)
        for name, route in routes.items():
            route["estimated_latency_ms"] = [
                {"precision": e["precision"], "at": e["at"], "sizes": e["sizes"], "ms": e[name]["ms"] if e[name] else None,
                 "kernels": e[name]["kernels"] if e[name] else None, "why": e["why"].get(name)} for e in c.estimates]
    return {
        "model": model,
        "backend": {"name": c.plan.backend.name, "version": c.plan.backend.version},
        "routes": routes,
        "estimates": c.estimates,
        "summary": {**c.plan.summary(), "onnx": {s: sum(1 for o in c.nodes.values() if o.stage == s) for s in STAGES}},
        "nodes": nodes,
        "unattributed": c.unattributed,
        "check": c.check,
    }
