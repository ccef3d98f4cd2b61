"""Checks shared by the built-in rules, and the helpers that fill in a table-form ``strategy(...)`` row.

Every check is a plain function that rejects with ``assert cond, "reason"`` (this
module is assertion-rewritten like the rules, so the audit shows the values). A
family module declares each op as ``rule_x = strategy(id, op=..., kind=..., layers=...,
checks=trt_checks(...), examples=cases(...), emit=...)``; emit helpers live in
:mod:`opmap.rules.emitting`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch

from opmap.planning.fixtures import FLOAT_DTYPES, MAX_RANK, TRT_DTYPES
from opmap.planning.strategy import Example, accept, reject

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


# -- node shapes (for checks and emit functions alike) ---------------------------------------------
def out_dims(node, index: int = 0) -> list:
    """The node's output shape as the builder understands it (ints, or input-dim symbols)."""
    meta = node.outputs[index]
    return list(meta.shape)


def static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


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


# -- declaring a built-in strategy (the table form of opmap.strategy) -------------------------------
BASE_CHECKS: tuple[Check, ...] = (trt_types, max_rank)


def trt_checks(*checks: Check) -> tuple[Check, ...]:
    """A table-form rule's checks: TensorRT's dtypes and rank first (:data:`BASE_CHECKS`), then ``checks``. A float layer
    lists :func:`promoted_float_input` and wraps its emit function in :func:`opmap.rules.emitting.promoting`."""
    return tuple(BASE_CHECKS) + tuple(checks)


def cases(
    example: tuple,
    *more: tuple | Example,
    bad: tuple | None | bool = True,
    match: str = "float64",
    dynamic: tuple | None = None,
) -> list[Example]:
    """A built-in strategy's examples: ``example`` is ``(fn, *inputs)``, a call the rule must accept; ``more`` more of
    them, each a tuple or an ``accept(...)`` (e.g. ``decompose=True`` for an overload only Core ATen lowering produces),
    so that every overload the strategy lists is exercised (every one built and verified; the all-dynamic test samples
    them). ``bad`` is one it must reject (default: the first call with float inputs made float64, which TensorRT cannot
    hold, refused by :func:`trt_types`; ``None`` where the rule refuses nothing a graph can hold and says why in
    ``no_reject``). ``dynamic``: ``({axis: "name"}, ...)`` per input, torch.export Dims made when the example is
    exported (``"auto"`` asks for ``Dim.AUTO``)."""
    fn, *inputs = example
    if bad is True:
        bad = (fn, *as_f64(inputs))
    dynamic_shapes = None
    if dynamic is not None:  # ({axis: "name"}, ...) per input -> torch.export Dims
        dynamic_shapes = _dims(dynamic)
    extra = [dataclasses.replace(e if isinstance(e, Example) else accept(*e), extra=True) for e in more]
    found = [accept(fn, *inputs, dynamic_shapes=dynamic_shapes), *extra]
    if bad is not None:
        found.append(reject(bad[0], *bad[1:], match=match, dynamic_shapes=dynamic_shapes if bad[0] is fn else None))
    return found


def _dims(dynamic: tuple) -> Callable[[], tuple]:
    """torch.export Dims, made when an example is exported (importing torch.export is slow; listing rules needs none);
    the name ``"auto"`` asks for ``Dim.AUTO`` (torch.export names the symbol; a dim it may specialise stays static)."""

    def dim(name: str):
        return torch.export.Dim.AUTO(max=64) if name == "auto" else torch.export.Dim(name, min=1, max=64)

    def make() -> tuple:
        return tuple({axis: dim(name) for axis, name in spec.items()} if spec else None for spec in dynamic)

    return make
