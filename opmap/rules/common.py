"""Checks shared by the built-in rules, and the factory for table-driven op families.

Every check is a plain function that rejects with ``assert cond, "reason"`` (this
module is assertion-rewritten like the rules, so the audit shows the values). A
family module lists its ops in a table; :func:`define` turns each row into a real
``rule_*`` strategy with its own accept/reject examples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch

from opmap.planning.fixtures import FLOAT_DTYPES, MAX_RANK, TRT_DTYPES
from opmap.loading.graph import Ref
from opmap.planning.strategy import Example, accept, reject, strategy
from opmap.planning.sourcetext import function_source

Check = Callable[..., None]


# -- checks ---------------------------------------------------------------------------------------
def trt_types(node, **_):
    """Every tensor in and out has a dtype TensorRT can hold (no float64, complex, int16...)."""
    metas = dict(node.tensor_args())
    metas.update({f"output{i}": m for i, m in enumerate(node.outputs) if m is not None})
    for name, meta in metas.items():
        assert meta.dtype in TRT_DTYPES, f"{name} is {meta.dtype}: TensorRT has no {meta.dtype} tensors; cast it in the model"


def max_rank(node, **_):
    """TensorRT tensors have at most 8 dims."""
    metas = list(node.tensor_args().values()) + [m for m in node.outputs if m is not None]
    rank = max((m.rank for m in metas), default=0)
    assert rank <= MAX_RANK, f"rank {rank} exceeds TensorRT's {MAX_RANK} dims"


def float_input(node, **_):
    """The layer computes in floating point only (fp32/fp16/bf16)."""
    meta = node.meta("self") or node.meta("input")
    assert meta is not None and meta.dtype in FLOAT_DTYPES, f"input is {meta.dtype if meta else 'missing'}; the layer takes float types only"


INTEGRAL_DTYPES = frozenset({"int32", "int64", "int8", "uint8", "bool"})


def _promoted_name(node) -> str | None:
    """The argument PyTorch promoted: ``self``/``input`` when it is an integer or bool tensor and the node's first
    output is float (the op computed in that float dtype, as its output meta records); else None."""
    name = "self" if node.meta("self") is not None else "input"
    meta, out = node.meta(name), node.out
    if meta is not None and meta.dtype in INTEGRAL_DTYPES and out is not None and out.dtype in FLOAT_DTYPES:
        return name
    return None


def promoted_float_input(node, **_):
    """The layer computes in floating point (fp32/fp16/bf16). An integer or bool input is taken where PyTorch promoted
    it, i.e. where the node's output is float: it is cast to the output's dtype first (:func:`promoting`)."""
    meta = node.meta("self") or node.meta("input")
    out = node.out
    assert meta is not None and (meta.dtype in FLOAT_DTYPES or _promoted_name(node) is not None), (
        f"input is {meta.dtype if meta else 'missing'} and the output {out.dtype if out else 'missing'}; the layer takes "
        "float types only (an integer input is promoted only where PyTorch's output is float)")


class _Promoted:
    """An emit context whose promoted argument reads as the cast tensor; everything else is the real context's."""

    def __init__(self, ctx, name: str, tensor) -> None:
        self._ctx, self._name, self._tensor = ctx, name, tensor

    def __getattr__(self, attr: str):
        return getattr(self._ctx, attr)

    def input(self, name: str):
        return self._tensor if name == self._name else self._ctx.input(name)


def promoting(emit: Callable) -> Callable:
    """``emit`` behind PyTorch's integer -> float promotion: an int/bool ``self``/``input`` whose node outputs float is
    cast to the output dtype (under the node's precision) once, and the emitter sees the float tensor."""

    def promoted(ctx, node):
        name = _promoted_name(node)
        if name is None:
            return emit(ctx, node)
        return emit(_Promoted(ctx, name, ctx.cast(ctx.input(name), ctx.output_dtype())), node)

    promoted.__qualname__ = f"promoting({getattr(emit, '__qualname__', emit)})"
    promoted.__wrapped__ = emit
    return promoted


def not_bool(node, **_):
    """PyTorch has no kernel for this op on bool tensors (its export traces one anyway)."""
    meta = node.meta("self")
    assert meta is not None and meta.dtype != "bool", f"{node.op} on a bool tensor: PyTorch has no bool kernel for it"


def static_arg(*names: str) -> Check:
    def static_args(node, **_):
        for name in names:
            meta = node.meta(name)
            if meta is not None:
                assert meta.is_static, f"{name} has dynamic dims {meta.shape}; TensorRT needs its shape at build time"

    static_args.__qualname__ = f"static_arg{names}"
    return static_args


def int_arg(*names: str) -> Check:
    """The named arguments are Python ints at export time (not tensors or symbols)."""

    def int_args(node, **_):
        for name in names:
            value = node.arg(name)
            assert value is None or isinstance(value, int), f"{name}={value!r} is not a constant int"

    int_args.__qualname__ = f"int_arg{names}"
    return int_args


def eval_mode(node, **_):
    """Dropout-like ops are identities only in eval mode."""
    train, p = node.arg("train"), node.arg("p", 0.0)
    if train is None and node.op == "aten.native_dropout.default":
        train = True  # native_dropout(train=None) trains
    assert not train or p == 0, f"dropout runs in training mode (p={p}); export the model with model.eval()"


def not_mutating_inputs(node, graph, **_):
    """An in-place op on a graph input or weight would change state across calls; TensorRT has none."""
    target = node.arg("self")
    name = getattr(target, "node", None)
    assert name not in graph.inputs and name not in graph.params, f"in-place op mutates {name}, a graph input or weight"


def outputs_unused(node, graph, names: dict[int, str]) -> None:
    """The node's extra outputs ``{index: name}`` are read by nothing (the strategy computes the others only)."""
    for user in graph.consumers(node):
        index = user.arg("arg1") if user.op == "operator.getitem" else None
        if index in names:
            assert not user.users and not graph.is_output(user), (
                f"output {index} ({names[index]}) is used by {', '.join(user.users) or 'the graph output'}; this strategy "
                "does not compute it")


def bool_or_int_only(node, **_):
    for name, meta in node.tensor_args().items():
        assert meta.dtype == "bool", f"{name} is {meta.dtype}: TensorRT's AND/OR/XOR take bool tensors only"


# -- examples --------------------------------------------------------------------------------------
def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded random example tensor."""
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(0, 8, shape, generator=g, dtype=dtype)


def as_f64(inputs: Sequence[Any]) -> tuple:
    return tuple(x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)


# -- the factory -----------------------------------------------------------------------------------
BASE_CHECKS: tuple[Check, ...] = (trt_types, max_rank)


def define(
    namespace: dict[str, Any],
    id: str,
    op: str | Sequence[str],
    kind: str,
    *,
    layers: str,
    example: tuple,
    examples: Sequence[tuple | Example] = (),
    bad: tuple | None = None,
    match: str = "float64",
    checks: Sequence[Check] = (),
    version: int = 1,
    tags: Sequence[str] = (),
    contract: str | None = None,
    doc: str | None = None,
    no_reject: str | None = None,
    emit: Callable | None = None,
    dynamic: tuple | None = None,
    expect_accept: bool = True,
) -> None:
    """Define ``rule_<slug>`` in ``namespace`` (a family module's globals).

    ``example`` is ``(fn, *inputs)``, a call the rule must accept; ``examples`` more of them, each a tuple or an
    ``accept(...)`` (e.g. ``decompose=True`` for an overload only Core ATen lowering produces), so that every
    overload the strategy lists is exercised (every one built and verified; the all-dynamic test samples them).
    ``bad`` is one it must reject
    (default: the first call with float inputs made float64, which TensorRT cannot hold).
    A rule with no input it could refuse says why in ``no_reject`` instead of a ``bad`` example.
    """
    if float_input in checks:  # every float op PyTorch promotes integer inputs for: cast, then the layer
        checks = [promoted_float_input if c is float_input else c for c in checks]
        emit = promoting(emit) if emit is not None else None
    all_checks = tuple(BASE_CHECKS) + tuple(checks)

    def rule(node, graph, backend, bounds, settings, upstream):
        for check in all_checks:
            check(node=node, graph=graph, backend=backend, bounds=bounds, settings=settings, upstream=upstream)

    fn, *inputs = example
    if bad is None and no_reject is None:
        bad = (fn, *as_f64(inputs))
    slug = id.split("/", 1)[1]
    rule.__name__ = rule.__qualname__ = "rule_" + slug.replace("-", "_").replace(".", "_")
    rule.__doc__ = doc or f"{kind}: {layers}."
    rule.__module__ = namespace["__name__"]
    spec = repr((layers, [(c.__qualname__, _src(c)) for c in all_checks]))
    dynamic_shapes = None
    if dynamic is not None:  # ({axis: "name"}, ...) per input -> torch.export Dims
        dynamic_shapes = _dims(dynamic)
    more = [dataclasses.replace(e if isinstance(e, Example) else accept(*e), extra=True) for e in examples]
    cases = [accept(fn, *inputs, dynamic_shapes=dynamic_shapes), *more] if expect_accept else []
    if bad is not None:
        cases.append(reject(bad[0], *bad[1:], match=match, dynamic_shapes=dynamic_shapes if bad[0] is fn else None))
    no_accept = None if expect_accept else (doc or "no exported graph holds a case it accepts")
    s = strategy(id, op=op, kind=kind, version=version, tags=tags, examples=cases, contract=contract, spec=spec,
                 no_reject=no_reject, no_accept=no_accept)(rule)
    if emit is not None:
        s.emit(emit)
    namespace[rule.__name__] = s


def _dims(dynamic: tuple) -> Callable[[], tuple]:
    """torch.export Dims, made when an example is exported (importing torch.export is slow; listing rules needs none);
    the name ``"auto"`` asks for ``Dim.AUTO`` (torch.export names the symbol; a dim it may specialise stays static)."""

    def dim(name: str):
        return torch.export.Dim.AUTO(max=64) if name == "auto" else torch.export.Dim(name, min=1, max=64)

    def make() -> tuple:
        return tuple({axis: dim(name) for axis, name in spec.items()} if spec else None for spec in dynamic)

    return make


def _src(fn: Callable) -> str:
    try:
        return function_source(fn)
    except (OSError, TypeError):
        return fn.__qualname__


# -- emit helpers (shared by the family modules' emit functions) ------------------------------------
def scalar_kind(value: Any) -> str:
    return "float32" if isinstance(value, float) else "bool" if isinstance(value, bool) else "int64"


def compute_dtype(node, *names: str) -> str:
    """PyTorch's type promotion over the named arguments (tensors and Python scalars)."""
    tensor_types = [node.meta(n).dtype for n in names if node.meta(n) is not None]
    scalars = [node.arg(n) for n in names if node.meta(n) is None and node.arg(n) is not None]
    result = tensor_types[0] if tensor_types else scalar_kind(scalars[0])
    for dt in tensor_types[1:]:
        result = str(torch.promote_types(getattr(torch, result), getattr(torch, dt))).removeprefix("torch.")
    for value in scalars:
        if isinstance(value, float) and not getattr(torch, result).is_floating_point:
            result = "float32"
    return result


def emit_binary(op: str, first: str = "self", second: str = "other"):
    """ElementWise ``op`` on two arguments in PyTorch's promoted dtype; ``alpha`` folded in."""

    def emit(ctx, node):
        # PyTorch computes arithmetic in the result dtype (int / int is a float division)
        dtype = ctx.output_dtype() if node.out is not None and node.out.dtype != "bool" else ctx.compute(compute_dtype(node, first, second))
        if dtype == "bool":  # bool + bool is OR, bool * bool AND: computed in int32 (no arithmetic on bool), then != 0
            dtype = "int32"
        a = ctx.cast(ctx.input(first) if node.meta(first) else ctx.const(node.arg(first), dtype), dtype)
        b = ctx.cast(ctx.operand(second, a), dtype)
        if node.op == "aten.rsub.Scalar":  # other - alpha * self: alpha scales self
            a, b = b, a
        alpha = node.arg("alpha", 1)
        if alpha not in (1, None):
            b = ctx.elementwise(b, ctx.const(alpha, dtype), "PROD")
        return ctx.cast(ctx.elementwise(a, b, op), ctx.output_dtype())

    emit.__qualname__ = f"emit_binary({op})"
    return emit


def emit_compare(*ops: str, negate: bool = False):
    """Comparisons: OR of ElementWise comparisons (NaN-correct), optionally negated (for ``ne``)."""

    def emit(ctx, node):
        dtype = ctx.compute(compute_dtype(node, "self", "other"))
        if dtype == "bool":  # PyTorch orders False < True; TensorRT compares numbers only
            dtype = "int32"
        a = ctx.cast(ctx.input("self"), dtype)
        b = ctx.cast(ctx.operand("other", a), dtype)
        out = None
        for op in ops:
            r = ctx.elementwise(a, b, op)
            out = r if out is None else ctx.elementwise(out, r, "OR")
        return ctx.unary(out, "NOT") if negate else out

    emit.__qualname__ = f"emit_compare({ops}, negate={negate})"
    return emit


def emit_unary(op: str):
    def emit(ctx, node):
        x = ctx.input("self")
        dtype = ctx.output_dtype()
        if ctx.dtype(x) not in FLOAT_DTYPES:
            if op in ("FLOOR", "CEIL", "ROUND") or (op == "SIGN" and ctx.dtype(x) == "bool"):
                return x  # an integer is its own floor/ceil/round; a bool its own sign
            if op in ("ISNAN", "ISINF"):
                x = ctx.cast(x, "float32")  # every integer is finite (and the layer takes floats only)
        if op not in ("ABS", "NEG", "SIGN", "NOT") and dtype in FLOAT_DTYPES:
            x = ctx.cast(x, dtype)
        return ctx.cast(ctx.unary(x, op), dtype)

    emit.__qualname__ = f"emit_unary({op})"
    return emit


def emit_activation(kind: str, alpha: Callable | None = None, beta: Callable | None = None):
    def emit(ctx, node):
        return ctx.activation(ctx.input("self"), kind, alpha(node) if alpha else None, beta(node) if beta else None)

    emit.__qualname__ = f"emit_activation({kind})"
    return emit


def truth(ctx, x, negate=False):
    """A tensor as bool the way PyTorch's logical ops read it: x != 0 (NaN is true; a float cast to int would truncate
    0.5 to 0), or x == 0 with ``negate``. A bool stays itself (NOT with ``negate``)."""
    if ctx.dtype(x) == "bool":
        return ctx.unary(x, "NOT") if negate else x
    zero = ctx.elementwise(x, ctx.const(0, ctx.dtype(x), shape=[1] * ctx.rank(x)), "EQUAL")
    return zero if negate else ctx.unary(zero, "NOT")


def emit_identity(ctx, node):
    """No layer: the node's value is its input's tensor."""
    first = next(iter(node.args.values()))
    return ctx.tensor(first) if isinstance(first, Ref) else ctx.input("self")


def out_dims(node, index: int = 0) -> list:
    """The node's output shape as the builder understands it (ints, or input-dim symbols)."""
    meta = node.outputs[index]
    return list(meta.shape)


def static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)
