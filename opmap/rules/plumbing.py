"""Graph plumbing: tuple unpacking, symbolic shape arithmetic, runtime asserts, eval-mode identities."""

import operator
import re

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject
from opmap.rules.common import define, emit_identity, eval_mode, t
from opmap.loading.graph import Ref

ns = globals()

SYM_OPS = ["operator.add", "operator.sub", "operator.mul", "operator.floordiv", "operator.mod", "operator.neg",
           "operator.ge", "operator.gt", "operator.le", "operator.lt", "operator.eq", "operator.ne",
           "torch.sym_max", "torch.sym_min", "torch.sym_not", "aten.sym_numel.default"]


_BOUND = re.compile(r"expression (?:(?P<sym>[a-z]\d+) (?P<op>>=|<=|>|<) (?P<value>-?\d+)"
                    r"|(?P<value2>-?\d+) (?P<op2>>=|<=|>|<) (?P<sym2>[a-z]\d+)) on node")
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}


def _asserted_bound(node):
    """(symbol, ">=" or "<=", value) when the assertion restates one bound of one size symbol, in any of the
    forms torch.export writes (``u0 >= 1``, ``0 < u0``, ``u0 <= 12``)."""
    m = _BOUND.search(str(node.arg("assert_msg") or ""))
    if not m:
        return None
    if m.group("sym"):
        sym, op, value = m.group("sym"), m.group("op"), int(m.group("value"))
    else:
        sym, op, value = m.group("sym2"), _FLIP[m.group("op2")], int(m.group("value2"))
    if op == ">":
        op, value = ">=", value + 1
    elif op == "<":
        op, value = "<=", value - 1
    return sym, op, value


def shape_condition(node, graph, **_):
    """TensorRT's Assertion layer checks shape tensors; a condition on a data-dependent size is not one
    where the size comes from a padded (static-bound) layout, so such conditions are refused here."""
    for sym in re.findall(r"\b[us]\d+\b", str(node.arg("assert_msg") or "")):
        rng = graph.symbols.get(sym)
        assert rng is None or not rng.data_dependent, (
            f"asserts on the data-dependent size {sym}: TensorRT's Assertion layer checks shape tensors only"
        )


def proven_range(node, graph, **_):
    """The assertion restates the range torch.export proved for a data-dependent size, which holds by construction."""
    bound = _asserted_bound(node)
    assert bound is not None, "the assertion is not a bound check of one size symbol"
    sym, op, value = bound
    rng = graph.symbols.get(sym)
    assert rng is not None and rng.data_dependent, f"{sym} is not a data-dependent size"
    expected = rng.lower if op == ">=" else rng.upper
    assert value == expected, f"asserts {sym} {op} {value}, but the proven range is [{rng.lower}, {rng.upper}]"


def integer_scalar(node, **_):
    for name in node.scalar_outputs:
        assert "." not in name, f"the symbolic scalar {name} is a float; TensorRT shape tensors are integers"


def _emit_getitem(ctx, node):
    source, index = node.arg("arg0"), node.arg("arg1")
    value = ctx.nb.values[source.node]
    if not isinstance(value, list):
        raise TypeError(f"{source.node} produced one tensor, not a tuple")
    return value[index]


def _emit_sym_size(ctx, node):
    sel = ctx.masked("self")
    if sel is not None and node.arg("dim") == 0:  # the size of a masked selection is its mask's count
        count = ctx.out(ctx.net.add_reduce(ctx.cast(sel.mask, "int32"), ctx.trt.ReduceOperation.SUM, 1, True), "count")
        return ctx.cast(count, "int64")
    symbol = node.scalar_outputs[0] if node.scalar_outputs else None
    if symbol in ctx.nb.counts:  # the true size of a padded (static-bound) dim, not the padded length
        return ctx.nb.counts[symbol]
    t = ctx.input("self")
    return ctx.dim_of(t, node.arg("dim") % ctx.rank(t))


SYM_EW = {"operator.add": "SUM", "operator.sub": "SUB", "operator.mul": "PROD", "operator.floordiv": "FLOOR_DIV",
          "operator.ge": ("GREATER", "EQUAL"), "operator.gt": ("GREATER",), "operator.le": ("LESS", "EQUAL"),
          "operator.lt": ("LESS",), "operator.eq": ("EQUAL",), "torch.sym_max": "MAX", "torch.sym_min": "MIN"}


def _sym_value(ctx, value):
    if isinstance(value, Ref):
        return ctx.cast(ctx.tensor(value), "int64")
    return ctx.const([int(value)], "int64")


def _emit_sym_unary(ctx, node):
    if node.op == "aten.sym_numel.default":
        t = ctx.input("self")
        if ctx.rank(t) == 0:
            return ctx.const([1], "int64")
        return ctx.out(ctx.net.add_reduce(ctx.shape_of(t), ctx.trt.ReduceOperation.PROD, 1, True), "numel")
    a = ctx.tensor(node.arg("arg0")) if isinstance(node.arg("arg0"), Ref) else ctx.const([node.arg("arg0")], "bool")
    if node.op == "torch.sym_not":
        return ctx.unary(ctx.cast(a, "bool"), "NOT")
    return ctx.elementwise(ctx.const([0], "int64"), ctx.cast(a, "int64"), "SUB")  # operator.neg


def _emit_sym_arith(ctx, node):
    if node.op in ("aten.sym_numel.default", "torch.sym_not", "operator.neg"):
        return _emit_sym_unary(ctx, node)
    a, b = _sym_value(ctx, node.arg("arg0")), _sym_value(ctx, node.arg("arg1"))
    if node.op == "operator.mod":  # Python's modulo takes the divisor's sign: a - (a // b) * b
        return ctx.elementwise(a, ctx.elementwise(ctx.elementwise(a, b, "FLOOR_DIV"), b, "PROD"), "SUB")
    if node.op == "operator.ne":
        return ctx.unary(ctx.elementwise(a, b, "EQUAL"), "NOT")
    op = SYM_EW[node.op]
    if isinstance(op, str):
        return ctx.elementwise(a, b, op)
    out = None
    for o in op:
        r = ctx.elementwise(a, b, o)
        out = r if out is None else ctx.elementwise(out, r, "OR")
    return out


def _emit_assert(ctx, node):
    cond = ctx.cast(ctx.input("self"), "bool")
    layer = ctx.net.add_assertion(cond, str(node.arg("assert_msg") or node.arg("msg") or "runtime assertion failed"))
    ctx.layer(layer, "assert")
    return None


define(ns, "core/getitem", "operator.getitem", "direct",
       layers="no layer: picks output i of a multi-output layer", example=(lambda a: a.split(2)[1], t(4, 3)), emit=_emit_getitem)
define(ns, "shape/sym-size", "aten.sym_size.int", "direct", layers="Shape, then Gather of one dim (an int64 shape tensor)",
       example=(lambda a: a.new_zeros(a.shape[0]) + a.sum(-1), t(3, 4)), dynamic=({0: "batch"},),
       no_reject="a size of a TensorRT tensor is always readable with a Shape layer", emit=_emit_sym_size)
def _batch(lo: int = 4):
    """dynamic_shapes for one input with a dynamic first dim (at least ``lo``: sizes derived from it stay above 1, which
    torch.export would specialise)."""
    return lambda: ({0: torch.export.Dim("batch", min=lo, max=64)},)


def _sym(fn):
    return accept(fn, t(6, 4), dynamic_shapes=_batch())


# every listed symbolic operator, as size arithmetic a model does (comparisons yield SymBools used as values)
SYM_EXAMPLES = [_sym(lambda a: a.new_zeros(a.shape[0] + 1)), _sym(lambda a: a.new_zeros(a.shape[0] - 1)),
                _sym(lambda a: a.new_zeros(a.shape[0] // 2)), _sym(lambda a: a.new_zeros(a.shape[0] % 3 + 2)),
                _sym(lambda a: a.new_zeros(a.numel())), _sym(lambda a: a[-a.shape[0] + 1:] * 2)]
SYM_EXAMPLES += [accept(lambda a, b, f=f: a.new_zeros(f(a.shape[0], b.shape[0])), t(3, 4), t(5),
                        dynamic_shapes=lambda: ({0: torch.export.Dim("n", max=64)}, {0: torch.export.Dim("m", max=64)}))
                 for f in (torch.sym_max, torch.sym_min)]
SYM_EXAMPLES += [_sym(lambda a, c=c: a * c(a.shape[0], 3)) for c in
                 (operator.eq, operator.ne, operator.ge, operator.gt, operator.le, operator.lt)]
SYM_EXAMPLES += [accept(lambda a: a * torch.sym_not(a.shape[0] == 3), t(6, 4), dynamic_shapes=_batch(), node="sym_not")]
define(ns, "shape/sym-arith", SYM_OPS, "direct", layers="ElementWise on int64 shape tensors",
       example=(lambda a: a.new_zeros(a.shape[0] * 2), t(3, 4)), examples=SYM_EXAMPLES, dynamic=({0: "batch"},), checks=[integer_scalar],
       no_reject="graphs exported from models hold integer size arithmetic only", emit=_emit_sym_arith)
def _offset_of_input(node, graph, **_):
    """An engine input is a dense buffer bound at its first element, so its storage offset is 0. Inside the graph an
    offset is a PyTorch memory-layout fact (a view shares its base's storage) that an engine's tensors do not have."""
    src = node.arg("self")
    assert isinstance(src, Ref) and src.node in graph.inputs, (
        f"asks for the storage offset of {src}, a tensor computed inside the graph: only a graph input's offset is "
        "known (0: the engine's inputs are dense buffers); make the model not depend on memory layout")


# torch.export keeps the query only where an input's own offset is a symbol: a view with an offset, exported with
# Dim.AUTO (the offsets of views made inside the graph are computed from sizes). The input is fed as the dense buffer
# the engine receives, where the offset is 0.
_OFFSET_INPUT = t(7, 4)[1:]
define(ns, "shape/storage-offset", "aten.sym_storage_offset.default", "direct",
       layers="Constant 0 (int64): an engine input is a dense buffer bound at its first element (its offset is the "
              "buffer's, not that of a view the caller copied it from)",
       example=(lambda a: a + a.storage_offset(), _OFFSET_INPUT), dynamic=({0: "auto", 1: "auto"},),
       checks=[_offset_of_input],
       contract="answers the offset of the engine's dense input buffer (0); PyTorch answers a view's offset into its "
                "base when the caller passes a view",
       no_reject="torch.export emits the query only on a graph input (offsets of views made inside the graph are "
                 "computed from sizes); the rule still refuses any other tensor",
       emit=lambda ctx, node: ctx.const([0], "int64"))
define(ns, "core/runtime-assert", ["aten._assert_scalar.default", "aten._assert_async.msg"], "direct",
       layers="Assertion on the shape-tensor condition (checked when the engine runs)",
       example=(lambda m: torch.nonzero(m), t(4, 4, dtype=torch.bool)), bad=(lambda m: torch.nonzero(m), t(4, 4, dtype=torch.bool)),
       match="data-dependent size", checks=[shape_condition], emit=_emit_assert, expect_accept=False,
       doc="direct: an Assertion layer. torch.export (2.13) emits runtime asserts only on data-dependent sizes, which this "
           "rule refuses; it serves shape-tensor conditions from other producers.")
define(ns, "core/proven-range", ["aten._assert_scalar.default"], "direct",
       layers="no layer: the assertion restates the range torch.export proved for a data-dependent size "
              "(0 <= u0 <= numel), which the size's producer guarantees by construction",
       example=(lambda m: torch.nonzero(m), t(4, 4, dtype=torch.bool)),
       checks=[proven_range], emit=lambda ctx, node: None, no_reject="every runtime assert torch.export emits restates a proven range")
define(ns, "core/build-time-check", ["aten._assert_tensor_metadata.default", "aten.sym_constrain_range_for_size.default",
                                     "aten.sym_constrain_range.default"], "direct",
       layers="no layer: TensorRT's own type and shape inference checks the same facts when the engine is built",
       example=(lambda a: a.to(torch.float16), t(2, 3)), no_reject="the check is metadata TensorRT re-derives itself",
       emit=lambda ctx, node: None)
def _answered_at_export(node, **_):
    """torch.export answered the query already: its graph uses the value as a constant and keeps only this dead node."""
    assert not node.users, (f"{node.op}'s value feeds {', '.join(node.users)}: it asks about PyTorch strides, "
                            "and an engine's tensors have none; make the model not depend on memory layout")


define(ns, "core/layout-query", ["aten.sym_is_contiguous.default"], "direct",
       layers="no layer: a memory-layout query torch.export answered at export time (the graph uses its value as a "
              "constant; only the unused query node remains)",
       example=(lambda a: a * int(torch.ops.aten.sym_is_contiguous.default(a.t())), t(4, 3)),
       no_reject="torch.export specializes a layout query to a constant, so the node it leaves is never used",
       checks=[_answered_at_export], emit=lambda ctx, node: None)
def _emit_dropout(ctx, node):
    """The input itself; native_dropout's second output, the keep mask, is all true (every element kept)."""
    x = emit_identity(ctx, node)
    if node.op != "aten.native_dropout.default":
        return x
    shape = list(node.meta("input").shape)
    return [x, ctx.expand_to(ctx.const(True, "bool", shape=[1] * len(shape)), shape)]


def _dropout_inplace(a):
    y = a * 2
    torch.ops.aten.dropout_(y, 0.1, False)  # in eval mode it writes nothing
    return y


define(ns, "core/dropout-eval", ["aten.dropout.default", "aten.feature_dropout.default", "aten.native_dropout.default",
                                 "aten.alpha_dropout.default", "aten.feature_alpha_dropout.default", "aten.dropout_.default",
                                 "aten.feature_dropout_.default", "aten.alpha_dropout_.default", "aten.feature_alpha_dropout_.default"],
       "direct", layers="no layer: dropout is the identity in eval mode (native_dropout's mask: a constant true broadcast "
                        "to the input's shape; the in-place forms write nothing, so any tensor, a graph input too)",
       example=(lambda a: F.dropout(a, 0.1, training=False), t(2, 3)),
       examples=[(lambda a: torch.feature_dropout(a, 0.1, False) * 2, t(2, 3, 4)), (lambda a: torch.alpha_dropout(a, 0.1, False) * 2, t(2, 3)),
                 (lambda a: torch.ops.aten.native_dropout(a, 0.1, False)[0] * 2, t(2, 3)),
                 (lambda a: torch.ops.aten.native_dropout(a, 0.1, False), t(2, 3, 4)),  # the mask read
                 (lambda a: torch.ops.aten.native_dropout(a, 0.0, True)[1], t(3)),  # p = 0 in training mode: all kept
                 (lambda a: torch.feature_alpha_dropout(a, 0.1, False) * 2, t(2, 3, 4)),
                 (lambda a: torch.ops.aten.dropout_(a, 0.1, False), t(2, 3)), (_dropout_inplace, t(2, 3)),
                 (lambda a: torch.ops.aten.feature_dropout_(a, 0.1, False), t(2, 3, 4)),
                 (lambda a: torch.ops.aten.alpha_dropout_(a, 0.1, False), t(2, 3)),
                 (lambda a: torch.ops.aten.feature_alpha_dropout_(a, 0.1, False), t(2, 3, 4))],
       bad=(lambda a: F.dropout(a, 0.1, training=True), t(2, 3)), match="training mode", checks=[eval_mode], emit=_emit_dropout)
rule_dropout_eval.examples += (  # noqa: F821 (define made it)
    # train=None trains; an in-place dropout in training mode writes, so capture functionalizes it (PyTorch turns it
    # into bernoulli draws, which the random rules judge): no dropout_ node is left for this rule to refuse
    reject(lambda a: torch.ops.aten.native_dropout(a, 0.1, None)[0], t(2, 3), match="training mode"),)
