"""Capture: a model file (or a callable) becomes a :class:`~opmap.loading.graph.Graph`.

The graph is taken as torch.export produced it, *before* any decomposition table
runs: expanding an op into core ATen is one strategy among others, chosen per
node by the planner, not a pre-pass that hides fused ops.

Accepted inputs
  * ``torch.export.save`` archives (``.pt2``, or any name holding one): checked by the
    gate (:mod:`opmap.loading.archive`) and loaded without running code from the file
    (:mod:`opmap.loading.safeload`), unless the caller trusts the file;
  * TorchScript archives (``torch.jit.save``), converted to ATen through PyTorch's
    TorchScript-to-ExportedProgram converter, only for trusted files: loading one runs
    its TorchScript code;
  * a pickled ``nn.Module`` (``torch.save(model)``), only for trusted files, since
    loading a pickle runs code.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import operator
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from opmap.loading.archive import Inspection, inspect_file, refusal
from opmap.errors import CaptureError, first_line
from opmap.loading.graph import Graph, Node, Ref, State, SymbolRange, TensorMeta, finite_int

_SHAPE_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)=(?P<dims>[0-9]+(?:x[0-9]+)*)(?::(?P<dtype>\w+))?$", re.ASCII)
MAX_EXAMPLE_NUMEL = 1 << 30  # elements of one --input-shape example tensor (4 GiB of float32)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        for line in record.getMessage().splitlines():
            if line.strip():
                self.lines.append(line.strip())
        if record.exc_info and record.exc_info[1] is not None:
            self.lines.append(f"{type(record.exc_info[1]).__name__}: {first_line(record.exc_info[1])}")


@contextmanager
def _quiet():
    """Keep torch's warnings and log lines off the terminal; collect them for error messages.

    torch configures handlers on several of its own loggers (torch.export, torch._export...),
    so each of them is redirected, not only the root "torch" logger.
    """
    handler = _Collect()
    manager = logging.root.manager
    loggers = [logging.getLogger("torch")] + [
        logger for name, logger in list(manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield handler
    finally:
        for lg, level, propagate, handlers in saved:
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers = handlers


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """``NAME=1x3x224x224[:dtype]``."""
        from opmap.grammar import bounded, dims, shown

        m = _SHAPE_RE.match(bounded(text, "--input-shape").strip())
        if not m:
            raise CaptureError(f"bad --input-shape {shown(text)}: expected NAME=1x3x224x224[:dtype]")
        dtype = m.group("dtype") or "float32"
        import torch

        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise CaptureError(f"bad --input-shape {shown(text)}: unknown dtype {shown(dtype, 24)}")
        shape = tuple(dims(m.group("dims"), "--input-shape", text))
        if math.prod(shape) > MAX_EXAMPLE_NUMEL:
            raise CaptureError(f"bad --input-shape {shown(text)}: {math.prod(shape):,} elements (at most {MAX_EXAMPLE_NUMEL:,})")
        return cls(m.group("name"), shape, dtype)

    def example(self):
        import torch

        dtype = getattr(torch, self.dtype)
        if dtype == torch.bool:
            return torch.zeros(self.shape, dtype=dtype)
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(self.shape, dtype=dtype)
        return torch.zeros(self.shape, dtype=dtype)


_DYNAMIC_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*):(?P<dim>[0-9]+)=(?P<lo>[0-9]+)\.\.(?P<hi>[0-9]+)$", re.ASCII)


@dataclass(frozen=True)
class DynamicSpec:
    """``--dynamic NAME:DIM=MIN..MAX``: make one dim of a TorchScript input dynamic, with its range."""

    name: str
    dim: int
    lower: int
    upper: int

    @classmethod
    def parse(cls, text: str) -> "DynamicSpec":
        from opmap.grammar import MAX_DIM, MAX_RANK, bounded, natural, shown

        m = _DYNAMIC_RE.match(bounded(text, "--dynamic").strip())
        if not m:
            raise CaptureError(f"bad --dynamic {shown(text)}: expected NAME:DIM=MIN..MAX (e.g. x:0=1..32)")
        dim = natural(m.group("dim"), "--dynamic", text, high=MAX_RANK - 1)
        lo, hi = (natural(m.group(g), "--dynamic", text, high=MAX_DIM) for g in ("lo", "hi"))
        if not 0 <= lo <= hi or hi < 2:
            raise CaptureError(f"bad --dynamic {shown(text)}: the range needs 0 <= MIN <= MAX and MAX >= 2")
        return cls(m.group("name"), dim, lo, hi)


@dataclass
class Captured:
    graph: Graph
    program: Any  # torch.export.ExportedProgram
    kind: str  # "export" | "torchscript" | "pickle" | "callable"
    sha256: str | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sniff(path: Path) -> str:
    """What kind of file this is: export | torchscript | pickle-zip | export-legacy | unknown (zip structure checked)."""
    return inspect_file(path).kind


def capture(
    path: str | Path,
    *,
    trust_model: bool = False,
    unsafe_pickle: bool = False,
    input_shapes: Sequence[InputSpec] = (),
    dynamic: Sequence[DynamicSpec] = (),
) -> Captured:
    """Load a model file and capture its ATen graph. Raises :class:`CaptureError`.

    Untrusted files (the default) go through the gate (:mod:`opmap.loading.archive`) and load
    without running code from the file; ``trust_model`` (alias ``unsafe_pickle``) lets a file
    that needs pickle, native code or TorchScript through to PyTorch's own loaders. ``dynamic`` makes dims of a
    TorchScript archive's inputs dynamic (other archives carry their own).
    """
    path = Path(path)
    trusted = trust_model or unsafe_pickle
    if not path.exists():
        raise CaptureError(f"{path}: no such file")
    if path.is_dir():
        raise CaptureError(f"{path}: is a directory, expected a model file")
    if path.stat().st_size == 0:
        raise CaptureError(f"{path}: empty file")
    insp = inspect_file(path)
    if insp.risks and not trusted:
        member, _, why = insp.risks[0].partition(": ")
        raise refusal(path, member, why)
    kind = insp.kind
    if kind in ("export", "export-legacy"):
        program = _load_export(path) if trusted else _load_export_safely(path, insp)
        kind = "export"
    elif kind == "torchscript":
        program = _load_torchscript(path, input_shapes, dynamic)
    else:
        program = _load_pickle(path, kind, trusted, input_shapes)
        kind = "pickle"
    if dynamic and kind != "torchscript":
        raise CaptureError(f"{path}: --dynamic applies to TorchScript archives; a torch.export archive carries its own dynamic dims "
                           "(export with dynamic_shapes=...)")
    return captured_from(program, path.stem, kind, sha256=file_sha256(path))


def captured_from(program: Any, name: str, kind: str, sha256: str | None = None) -> Captured:
    """The Captured of an ExportedProgram: functionalized first where it mutates state or views (:func:`functionalized`)."""
    program = functionalized(program)
    return Captured(graph=graph_from_program(program, name=name), program=program, kind=kind, sha256=sha256)


_INLINED_REGIONS = ("wrap_with_autocast", "wrap_with_set_grad_enabled")


def functionalized(program: Any) -> Any:
    """``program``, or its functional form where one of its in-place writes cannot be planned as the functional op on
    its own (opmap.loading.inplace): a write into a view of an intermediate, into a buffer, a parameter or a user input.
    ``run_decompositions({})`` (an empty table: functionalization only, no op is decomposed) turns a write into a view
    into ``select_scatter``/``slice_scatter``-style ops and a mutated buffer into an extra output (BUFFER_MUTATION),
    which :func:`graph_from_program` makes state in, state out. The same pass inlines the regions torch.export keeps
    as higher-order ops (``torch.autocast`` and ``torch.set_grad_enabled`` inside forward): an autocast region becomes
    its ops with the casts it implies, explicit ``_to_copy`` nodes. Where PyTorch cannot functionalize the program, it
    is kept as exported and the planner refuses the write (or the region) with its reason."""
    import torch

    from opmap.loading.inplace import refused

    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    regions = any(isinstance(n.target, torch._ops.HigherOrderOperator) and n.target.name() in _INLINED_REGIONS for n in calls)
    writes = any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable for n in calls)
    if not regions and (not writes or not refused(graph_from_fx(program.graph_module, "probe"))):
        return program
    try:
        with _quiet():
            return program.run_decompositions({})
    except Exception:  # PyTorch could not functionalize it: the planner gives the in-place reason
        return program


def capture_callable(fn: Callable | Any, *inputs: Any, name: str | None = None, dynamic_shapes: Any = None,
                     decompose: bool = False) -> Captured:
    """Export a module or a plain function on example inputs (used by rule examples and tests); ``decompose``
    lowers the export to Core ATen with PyTorch's default table, as ``ep.run_decompositions()`` does."""
    import torch

    module = fn if isinstance(fn, torch.nn.Module) else _FunctionModule(fn)
    if dynamic_shapes is not None and not isinstance(fn, torch.nn.Module):
        dynamic_shapes = (tuple(dynamic_shapes),)  # a plain function is wrapped as forward(*args)
    try:
        with _quiet():
            program = torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes, strict=False)
            if decompose:
                program = program.run_decompositions()
    except Exception as exc:  # torch.export raises many kinds; all mean "could not export"
        raise CaptureError(f"torch.export failed: {first_line(exc)}") from None
    return captured_from(program, name or getattr(fn, "__name__", type(fn).__name__), "callable")


def _function_module_class():
    import torch

    class FunctionModule(torch.nn.Module):
        def __init__(self, fn: Callable) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, *args):
            return self.fn(*args)

    return FunctionModule


def _FunctionModule(fn: Callable):
    return _function_module_class()(fn)


# -- loaders -------------------------------------------------------------------------------


# Libraries whose own custom ops appear in the exported graphs of their models, and the installed module that
# registers them. An archive only names the namespace; the module imported for it comes from this table, never from
# the file (importing installed library code runs nothing of the model's).
CUSTOM_OP_PROVIDERS = {"transformers": "transformers.integrations.moe"}


def _load_export_safely(path: Path, insp: Inspection):
    from opmap.loading.safeload import load_program

    tried: set[str] = set()
    while True:
        with _quiet() as log:
            try:
                return load_program(path, insp)
            except CaptureError:
                raise
            except Exception as exc:
                provider = _provider_for(exc, log, tried)
                if provider is not None:
                    continue
                reason = _export_failure(exc, log)
        raise CaptureError(f"{path}: cannot load torch.export archive: member {insp.member('models/model.json')}: {reason}")


def _provider_for(exc: Exception, log: "_Collect", tried: set[str]) -> str | None:
    """Import the known provider of a custom-op namespace the archive needs (once); its module name, or None."""
    import importlib
    import re

    text = " ".join([str(exc), *log.lines])
    for namespace in re.findall(r"torch\.ops\.(\w+)\.", text):
        module = CUSTOM_OP_PROVIDERS.get(namespace)
        if module is None or module in tried:
            continue
        tried.add(module)
        try:
            importlib.import_module(module)
        except Exception:  # not installed here: the load fails with its usual message
            return None
        return module
    return None


def _export_failure(exc: Exception, log: _Collect) -> str:
    reason = first_line(exc)
    detail = next((line for line in reversed(log.lines) if "Ran into the following" not in line), None)
    if "deserializ" in reason.lower() or isinstance(exc, (ImportError, AttributeError, KeyError)):
        reason = (detail or reason) + " (the archive refers to output types or custom ops that are not importable here; import their module first: for a custom op, a rule file in the catalog that imports it)"
    return reason


def _load_export(path: Path):
    """PyTorch's own loader: for trusted files only (it may unpickle, dlopen and sympify)."""
    import torch

    with _quiet() as log:
        try:
            return torch.export.load(str(path))
        except Exception as exc:
            reason = _export_failure(exc, log)
    raise CaptureError(f"{path}: cannot load torch.export archive: {reason}")


def _load_torchscript(path: Path, input_shapes: Sequence[InputSpec], dynamic: Sequence[DynamicSpec] = ()):
    import torch

    try:
        with _quiet():
            from opmap.native import native_stderr_silenced

            with native_stderr_silenced():  # a scripted module has no traced shapes: torch's C++ warns on fd 2
                module = torch.jit.load(str(path), map_location="cpu", _restore_shapes=True)
    except Exception as exc:
        raise CaptureError(f"{path}: cannot load TorchScript archive: {first_line(exc)}") from None
    names = [a.name for a in module.forward.schema.arguments][1:]  # drop self
    if input_shapes:
        example = _order_inputs(path, names, input_shapes)
    else:
        example = []
        for value in list(module.forward.graph.inputs())[1:]:
            t = value.type()
            sizes = t.sizes() if hasattr(t, "sizes") else None
            if sizes is None or t.scalarType() is None:
                raise CaptureError(
                    f"{path}: TorchScript module records no input shapes (it was scripted, not traced); "
                    f"pass --input-shape for {', '.join(names)} (e.g. {names[0] if names else 'x'}=1x3x224x224)"
                )
            dtype = {"Float": "float32", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64", "Int": "int32", "Bool": "bool"}.get(
                t.scalarType(), "float32"
            )
            example.append(InputSpec(value.debugName(), tuple(sizes), dtype).example())
    shapes = _dynamic_shapes(path, names, example, dynamic)
    try:
        with _quiet():
            return _converter(module, tuple(example), shapes).convert()
    except CaptureError:
        raise
    except Exception as exc:
        raise CaptureError(f"{path}: cannot convert TorchScript to an ATen graph: {first_line(exc)}") from None


def _dynamic_shapes(path: Path, names: list[str], example: list[Any], dynamic: Sequence[DynamicSpec]) -> tuple:
    """The export's dynamic_shapes for a TorchScript module: static, except the dims ``--dynamic`` names."""
    import torch

    given: dict[str, dict[int, Any]] = {}
    for spec in dynamic:
        if spec.name not in names:
            raise CaptureError(f"{path}: --dynamic names {spec.name}, but forward takes ({', '.join(names)})")
        rank = example[names.index(spec.name)].dim()
        if not 0 <= spec.dim < rank:
            raise CaptureError(f"{path}: --dynamic {spec.name}:{spec.dim}: {spec.name} has {rank} dims")
        # a hint, not a named Dim: torch.export then infers which dynamic dims are equal (a batch shared by two inputs)
        given.setdefault(spec.name, {})[spec.dim] = torch.export.Dim.DYNAMIC(min=spec.lower, max=spec.upper)
    return tuple(given.get(n) for n in names)


def _converter(module: Any, example: tuple, dynamic_shapes: tuple):
    """PyTorch's TorchScript-to-ExportedProgram converter, retracing with ``dynamic_shapes``.

    Left alone, the converter marks every input dim ``Dim.AUTO`` (each dim it cannot prove static becomes dynamic and
    unbounded, so a traced batch of 2 turns into a symbol with no range). A trace was made at one shape, so opmap keeps
    the traced shapes static unless the user asks for a dynamic dim; the converter's own retrace is reused with the
    dynamic_shapes swapped in."""
    import torch
    import torch.export._trace as export_trace
    from torch._export.converter import TS2EPConverter

    class Converter(TS2EPConverter):
        def retrace_as_exported_program(self, gm, name_to_constant):
            real = export_trace._export

            def export(*args, **kwargs):
                kwargs["dynamic_shapes"] = dynamic_shapes
                return real(*args, **kwargs)

            export_trace._export = export
            try:
                return super().retrace_as_exported_program(gm, name_to_constant)
            finally:
                export_trace._export = real

    return Converter(module, example)


def _load_pickle(path: Path, kind: str, unsafe_pickle: bool, input_shapes: Sequence[InputSpec]):
    import torch

    # weights_only loading never runs code: use it to recognise state dicts first.
    try:
        with _quiet():
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        obj = None  # not loadable without running code (or not a torch file at all)
    if obj is not None:
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CaptureError(
                f"{path}: this is a state dict ({len(obj)} tensors), not a model: load it into its nn.Module "
                "and save the module with torch.export.save (preferred) or torch.jit.save"
            )
        raise CaptureError(f"{path}: holds a {type(obj).__name__}, not a model")
    if kind == "unknown" and not _looks_like_legacy_pickle(path):
        raise CaptureError(f"{path}: not a model file (expected a torch.export .pt2, a TorchScript or a torch.save archive)")
    if not unsafe_pickle:
        raise CaptureError(
            f"{path}: holds a pickled Python object and loading it runs code; if you trust the file, "
            "pass --trust-model (or --unsafe-pickle) together with --input-shape NAME=DIMS for each input"
        )
    try:
        with _quiet():
            module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CaptureError(f"{path}: cannot unpickle: {first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise CaptureError(f"{path}: holds a {type(module).__name__}, not an nn.Module")
    if not input_shapes:
        raise CaptureError(f"{path}: a pickled module needs --input-shape NAME=DIMS[:dtype] for each forward input")
    names = [
        p.name
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    example = _order_inputs(path, names, input_shapes)
    module.eval()
    try:
        with _quiet():
            return torch.export.export(module, tuple(example), strict=False)
    except Exception as exc:
        raise CaptureError(f"{path}: torch.export failed on the unpickled module: {first_line(exc)}") from None


def _looks_like_legacy_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] in range(2, 6)  # pickle protocol 2-5


def _order_inputs(path: Path, names: list[str], specs: Sequence[InputSpec]) -> list[Any]:
    given = {s.name: s for s in specs}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise CaptureError(f"{path}: --input-shape names {', '.join(unknown)} but forward takes ({', '.join(names)})")
    missing = [n for n in names if n not in given]
    if missing:
        raise CaptureError(f"{path}: missing --input-shape for {', '.join(missing)}")
    return [given[n].example() for n in names]


# -- ExportedProgram -> Graph ----------------------------------------------------------------


def op_name(target: Any) -> str:
    """A stable string key for an FX call target."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)  # "aten.add.Tensor"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if module in ("builtins",) or target in (operator.getitem,):
        return f"builtins.{name}"
    return f"{module}.{name}" if module else name


def _convert_literal(value: Any) -> Any:
    import torch
    from torch import fx

    if isinstance(value, fx.Node):
        return Ref(value.name)
    if isinstance(value, (list, tuple)):
        return [_convert_literal(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (torch.device, torch.memory_format, torch.layout)):
        return str(value)
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return str(value)
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return repr(value)


def _schema_args(node) -> dict[str, Any]:
    import torch

    target = node.target
    args: dict[str, Any] = {}
    if isinstance(target, torch._ops.OpOverload):
        params = target._schema.arguments
        positional = [p for p in params if not p.kwarg_only]
        for p, value in zip(positional, node.args):
            args[p.name] = _convert_literal(value)
        for key, value in node.kwargs.items():
            args[key] = _convert_literal(value)
        for p in params:
            if p.name not in args and p.has_default_value():
                args[p.name] = _convert_literal(p.default_value)
        return args
    # Plumbing (operator.getitem, sym ops) and higher-order ops have no schema: name positions.
    for i, value in enumerate(node.args):
        args[f"arg{i}"] = _convert_literal(value)
    for key, value in node.kwargs.items():
        args[key] = _convert_literal(value)
    return args


def _meta(value: Any) -> TensorMeta | None:
    import torch

    if isinstance(value, torch.Tensor):
        shape = tuple(_dim(d) for d in value.shape)
        return TensorMeta(shape=shape, dtype=str(value.dtype).removeprefix("torch."))
    return None


def _dim(d: Any) -> int | str:
    """A static dim as an int; a symbolic one as its expression ("s0", "u0", "2*s0")."""
    if isinstance(d, int):
        return d
    text = str(d)
    return int(text) if text.lstrip("-").isdigit() else text


def _outputs(val: Any) -> tuple[list[TensorMeta | None], list[str]]:
    import torch

    if isinstance(val, (list, tuple)):
        metas, scalars = [], []
        for v in val:
            m, s = _outputs(v)
            metas.extend(m or [None])
            scalars.extend(s)
        return metas, scalars
    if isinstance(val, torch.Tensor):
        return [_meta(val)], []
    if isinstance(val, (torch.SymInt, torch.SymBool, torch.SymFloat)):
        return [], [str(val)]
    return [], []


def _stack(node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        return path or None
    return None


def graph_from_program(program: Any, name: str = "model") -> Graph:
    from torch.export.graph_signature import InputKind

    from opmap.loading.shapefacts import facts_of

    user = {spec.arg.name for spec in program.graph_signature.input_specs
            if hasattr(spec.arg, "name") and spec.kind == InputKind.USER_INPUT}
    state = _state(program)
    user |= {s.input for s in state}  # a mutated buffer or weight is state the caller carries: an engine input
    graph = graph_from_fx(program.graph_module, name, is_input=lambda n: n in user, symbols=_symbols(program))
    asserts = [str(n.arg("assert_msg") or "") for n in graph if n.op == "aten._assert_scalar.default"]
    graph.facts = facts_of(program, graph.inputs, asserts)
    graph.state = state
    return graph


_STATE_KINDS = ("BUFFER_MUTATION", "PARAMETER_MUTATION", "USER_INPUT_MUTATION")


def _state(program: Any) -> tuple[State, ...]:
    """The program's mutation outputs (a functionalized program returns each mutated buffer's new value) as State."""
    sig = program.graph_signature
    placeholder = {spec.target: spec.arg.name for spec in sig.input_specs if spec.target is not None}
    found = []
    for i, spec in enumerate(sig.output_specs):
        if spec.kind.name in _STATE_KINDS:
            name = spec.target if spec.kind.name == "USER_INPUT_MUTATION" else placeholder.get(spec.target)
            if name is not None:
                found.append(State(name, i, spec.target, spec.kind.name))
    return tuple(found)


def graph_from_fx(gm: Any, name: str, is_input: Callable[[str], bool] = lambda _n: True,
                  symbols: dict[str, SymbolRange] | None = None) -> Graph:
    """A Graph from an FX GraphModule whose nodes carry ``meta['val']`` (torch.export or make_fx)."""
    inputs: dict[str, TensorMeta] = {}
    params: dict[str, TensorMeta] = {}
    nodes: dict[str, Node] = {}
    outputs: list[Ref | None] = []
    for fx_node in gm.graph.nodes:
        if fx_node.op == "placeholder":
            meta = _meta(fx_node.meta.get("val"))
            if meta is None:
                continue
            (inputs if is_input(fx_node.name) else params)[fx_node.name] = meta
        elif fx_node.op == "call_function":
            metas, scalars = _outputs(fx_node.meta.get("val"))
            nodes[fx_node.name] = Node(
                name=fx_node.name,
                op=op_name(fx_node.target),
                args=_schema_args(fx_node),
                outputs=metas,
                users=[u.name for u in fx_node.users if u.op == "call_function"],
                scalar_outputs=scalars,
                stack=_stack(fx_node),
            )
        elif fx_node.op == "output":
            flat = fx_node.args[0]
            for item in flat if isinstance(flat, (list, tuple)) else [flat]:
                outputs.append(Ref(item.name) if hasattr(item, "name") else None)
    return Graph(name=name, nodes=nodes, inputs=inputs, params=params, outputs=outputs, symbols=symbols or {})


def _symbols(program: Any) -> dict[str, SymbolRange]:
    symbols: dict[str, SymbolRange] = {}
    for sym, vr in program.range_constraints.items():
        symbols[str(sym)] = SymbolRange(
            lower=finite_int(vr.lower),
            upper=finite_int(vr.upper),
            data_dependent=str(sym).startswith("u"),
        )
    return symbols
