"""Reductions, softmax, cumsum, argmax/argmin, max/min with indices, topk and sort."""

import math

import torch

from opmap.errors import BuildError
from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, out_dims, promoted_float_input, t, trt_checks
from opmap.rules.emitting import broadcast_select, in_float32, promoting, truth

MASKED = "mask/masked-reduce"


def no_padded_axis(node, bounds, graph, upstream=None, **_):
    """Reducing over a size known only at run time needs that size: a padded layout would count padding, so the
    producer must be planned as a masked rewrite (which the reduction then consumes)."""
    meta = node.meta("self")
    dims = node.arg("dim")
    axes = range(meta.rank) if dims in (None, []) else ([dims] if isinstance(dims, int) else dims)
    producer = node.arg("self").node if node.arg("self") is not None else None
    for d in axes:
        size = meta.shape[d % max(meta.rank, 1)] if meta.rank else 1
        if bounds.data_dependent(size):
            chosen = (upstream or {}).get(producer)
            assert chosen == MASKED, (
                f"reduces over dim {d} of data-dependent size {size}; its producer {producer} is planned as "
                f"{chosen or 'nothing yet'}, not as the masked rewrite {MASKED}"
            )


def static_k(node, **_):
    k = node.arg("k")
    assert isinstance(k, int), f"k={k!r} is not a constant; TensorRT TopK needs k at build time"
    assert k <= 3840, f"k={k} exceeds TensorRT TopK's limit of 3840"


def rank_two_or_more(node, backend, **_):
    meta = node.meta("self")
    assert meta.rank >= 2 or backend.builds("topk_1d").ok is not False, (
        f"{backend.name} TopK needs an input of rank >= 2 (probe: {backend.builds('topk_1d').message})"
    )


def reduce_axes(node, rank):
    dims = node.arg("dim")
    if dims is None or dims == []:
        return list(range(rank))
    return [d % rank for d in ([dims] if isinstance(dims, int) else dims)]


NEUTRAL = {"SUM": 0, "AVG": 0, "PROD": 1, "MAX": "-inf", "MIN": "inf"}


def _neutral(ctx, op, dtype):
    value = NEUTRAL[op]
    if isinstance(value, str):
        t = getattr(torch, dtype)
        big = float(value) if t.is_floating_point else (torch.iinfo(t).min if value == "-inf" else torch.iinfo(t).max)
        value = big
    return ctx.const(value, dtype, shape=())


def reduce_masked(ctx, node, sel, op):
    """A reduction over a masked selection: where(mask, rows, neutral) reduced instead — no data-dependent shape."""
    rows = sel.rows
    rank = ctx.rank(rows)
    axes = reduce_axes(node, len(node.meta("self").shape))
    if 0 not in axes:
        raise BuildError(f"{node.name} keeps the selected dim; a masked selection must be reduced over it")
    dtype = ctx.output_dtype()
    base = "SUM" if op == "AVG" else op
    if base in ("SUM", "PROD"):  # accumulated in the output dtype, and a half one in float32 (rounded once)
        rows = in_float32(ctx, ctx.cast(rows, dtype))[0]
    mask = ctx.reshape(sel.mask, [-1] + [1] * (rank - 1))
    kept = ctx.out(ctx.net.add_select(*ctx.broadcast(mask, rows, _neutral(ctx, base, ctx.dtype(rows)))), "masked")
    keep = bool(node.arg("keepdim", False))
    out = ctx.out(ctx.net.add_reduce(kept, getattr(ctx.trt.ReduceOperation, base), ctx.axes_mask(axes, rank), keep), "masked-reduce")
    if op == "AVG":
        acc = ctx.dtype(out)  # float32 for a half input (above)
        count = ctx.out(ctx.net.add_reduce(ctx.cast(sel.mask, acc), ctx.trt.ReduceOperation.SUM, 1, False), "count")
        for a in axes:
            if a != 0:
                count = ctx.elementwise(count, ctx.const(float(ctx.rank(rows) and rows.shape[a]), acc), "PROD")
        out = ctx.elementwise(out, ctx.reshape(count, [1] * ctx.rank(out)) if ctx.rank(out) else ctx.reshape(count, []), "DIV")
    return ctx.cast(out, dtype)


def emit_reduce(op):
    def emit(ctx, node):
        sel = ctx.masked("self")
        if sel is not None:
            return reduce_masked(ctx, node, sel, op)
        x = ctx.input("self")
        rank = ctx.rank(x)
        dtype = ctx.output_dtype()
        if op in ("SUM", "PROD", "AVG"):  # bool/int sums accumulate in the output dtype and half ones in float32
            x, _ = in_float32(ctx, ctx.cast(x, dtype))  # (rounded once), as PyTorch's do
        if ctx.dtype(x) == "bool":  # Reduce takes numbers: max/min of bools is OR/AND over 0/1
            x = ctx.cast(x, "int32")
        if rank == 0:
            return ctx.cast(x, dtype)
        keep = bool(node.arg("keepdim", False))
        layer = ctx.net.add_reduce(x, getattr(ctx.trt.ReduceOperation, op), ctx.axes_mask(reduce_axes(node, rank), rank), keep)
        return ctx.cast(ctx.out(layer, op.lower()), dtype)

    return emit


REDUCE = [  # (id, ops, layers, example, the whole-tensor overload's example, Reduce op)
    ("reduce/sum", ["aten.sum.default", "aten.sum.dim_IntList"], "Reduce SUM", lambda a: a.sum(-1, keepdim=True), lambda a: a.sum(), "SUM"),
    ("reduce/mean", ["aten.mean.default", "aten.mean.dim"], "Reduce AVG", lambda a: a.mean((0, 1)), lambda a: a.mean(), "AVG"),
    ("reduce/amax", ["aten.amax.default", "aten.max.default"], "Reduce MAX", lambda a: a.amax(-1), lambda a: a.max(), "MAX"),
    ("reduce/amin", ["aten.amin.default", "aten.min.default"], "Reduce MIN", lambda a: a.amin(0), lambda a: a.min(), "MIN"),
    ("reduce/prod", ["aten.prod.default", "aten.prod.dim_int"], "Reduce PROD", lambda a: a.prod(1), lambda a: a.prod(), "PROD"),
]

rule_reduce = [strategy(id, op=ops, kind="direct", layers=layers, checks=trt_checks(no_padded_axis), emit=emit_reduce(op),
                        examples=cases((fn, t(3, 4)), (whole, t(3, 4)), *([(whole, t(2, 3, dtype=torch.int32))] if op != "AVG" else [])))
               for id, ops, layers, fn, whole, op in REDUCE]


def emit_bool_reduce(op):
    def emit(ctx, node):
        sel = ctx.masked("self")
        if sel is not None:
            from opmap.building.builder import Masked

            as_int = Masked(ctx.cast(truth(ctx, sel.rows), "int32"), sel.mask, sel.source)
            counted = reduce_masked(ctx, node, as_int, op)
            return ctx.elementwise(ctx.cast(counted, "int32"), ctx.const(0, "int32"), "GREATER")
        x = ctx.cast(truth(ctx, ctx.input("self")), "int32")  # "true" is "!= 0", as PyTorch reads floats and ints
        rank = ctx.rank(x)
        if rank == 0:
            return ctx.cast(x, "bool")
        keep = bool(node.arg("keepdim", False))
        layer = ctx.net.add_reduce(x, getattr(ctx.trt.ReduceOperation, op), ctx.axes_mask(reduce_axes(node, rank), rank), keep)
        return ctx.elementwise(ctx.out(layer, op.lower()), ctx.const(0, "int32"), "GREATER")

    return emit


def _emit_softmax(ctx, node, log=False):
    """SoftMax on one axis (TensorRT's layer wants rank >= 2: a 0-d or 1-d input is viewed as [1, n]). log_softmax is
    x - max - log(sum(exp(x - max))), never log(softmax): that underflows to -inf where PyTorch's stays finite."""
    x = ctx.cast(ctx.input("self"), ctx.output_dtype())
    rank = ctx.rank(x)
    shape = list(node.meta("self").shape)
    if rank < 2:
        x = ctx.reshape(x, [1, shape[0] if shape else 1])
    axis = 1 if rank < 2 else node.arg("dim") % rank
    if log:
        bit = 1 << axis
        peak = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.MAX, bit, True), "max")
        shifted = ctx.elementwise(x, peak, "SUB")
        total = ctx.out(ctx.net.add_reduce(ctx.unary(shifted, "EXP"), ctx.trt.ReduceOperation.SUM, bit, True), "sum")
        out = ctx.elementwise(shifted, ctx.unary(total, "LOG"), "SUB")
    else:
        layer = ctx.net.add_softmax(x)
        layer.axes = 1 << axis
        out = ctx.out(layer, "softmax")
    return ctx.reshape(out, shape) if rank < 2 else out


def _emit_var(ctx, node):
    x, own = in_float32(ctx, ctx.input("self"))
    rank = ctx.rank(x)
    axes = ctx.axes_mask(reduce_axes(node, rank), rank)
    keep = bool(node.arg("keepdim", False))
    mean = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.AVG, axes, True), "mean")
    centered = ctx.elementwise(x, mean, "SUB")
    sq = ctx.out(ctx.net.add_reduce(ctx.elementwise(centered, centered, "PROD"), ctx.trt.ReduceOperation.SUM, axes, keep), "sumsq")
    sizes = [node.meta("self").shape[d] for d in reduce_axes(node, rank)]
    correction = node.arg("correction", 1)
    if correction is None:
        correction = 1 if node.arg("unbiased", True) else 0
    if all(isinstance(d, int) for d in sizes):
        divisor = ctx.const(float(max(math.prod(sizes) - correction, 0)), ctx.dtype(x))
    else:  # a dynamic reduced dim: n - correction from the shape tensor, clamped at 0 as PyTorch does
        n = ctx.size("*".join(f"({d})" for d in sizes))
        n = ctx.elementwise(ctx.elementwise(n, ctx.const([correction], "int64"), "SUB"), ctx.const([0], "int64"), "MAX")
        divisor = ctx.reshape(ctx.cast(n, ctx.dtype(x)), [1] * ctx.rank(sq)) if ctx.rank(sq) else ctx.scalar(ctx.cast(n, ctx.dtype(x)))
    var = ctx.elementwise(sq, divisor, "DIV")
    if node.op.startswith("aten.std"):
        return ctx.cast(ctx.unary(var, "SQRT"), own)
    if node.op.startswith("aten.var_mean"):
        m = mean if keep else ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.AVG, axes, False), "mean-out")
        return [ctx.cast(var, own), ctx.cast(m, own)]
    return ctx.cast(var, own)


def _topk(ctx, x, k, axis, largest):
    """TopK on one axis; a symbolic k (sorting a dynamic axis) travels as a 0-d int32 shape tensor."""
    op = ctx.trt.TopKOperation.MAX if largest else ctx.trt.TopKOperation.MIN
    dtype = ctx.dtype(x)
    if dtype == "bool":  # TopK orders numbers: bools as 0/1, the values cast back
        x = ctx.cast(x, "int32")
    layer = ctx.net.add_topk(x, op, k if isinstance(k, int) else 1, 1 << axis)
    if not isinstance(k, int):
        layer.set_input(1, ctx.scalar(ctx.cast(ctx.size(k), "int32")))
    ctx.layer(layer, "topk")
    return ctx.cast(layer.get_output(0), dtype), ctx.cast(layer.get_output(1), "int64")


def _emit_argmax(ctx, node):
    """The first index of the extreme, as PyTorch defines argmax/argmin on ties: Reduce MAX/MIN, EQUAL, the axis'
    indices where equal (else a sentinel), Reduce MIN. TopK with k=1 leaves ties to the implementation, and integer
    inputs (token ids: CLIP pools its text at ``input_ids.argmax(-1)``) tie all the time. A flattened (dim=None)
    input is viewed as [1, n]."""
    x = ctx.input("self")
    dim = node.arg("dim")
    scalar = ctx.rank(x) == 0
    n = node.meta("self").shape[dim % max(ctx.rank(x), 1)] if dim is not None and ctx.rank(x) else None
    if dim is None or ctx.rank(x) == 0:
        x, dim = ctx.reshape(x, [1, -1]), 1
        n = -1
    if ctx.dtype(x) == "bool":
        x = ctx.cast(x, "int32")
    axis = dim % ctx.rank(x)
    extreme = ctx.reduce(x, "MAX" if node.op == "aten.argmax.default" else "MIN", [axis], keepdim=True)
    hit = ctx.elementwise(x, extreme, "EQUAL")
    length = ctx.dims_of(x)[axis] if n == -1 else ctx.size(n)
    positions = ctx.arange(length, dtype="int32")
    positions = ctx.reshape(positions, [1] * axis + [-1] + [1] * (ctx.rank(x) - axis - 1))
    sentinel = ctx.const([2**31 - 1], "int32")
    first = ctx.reduce(ctx.where(hit, positions, sentinel), "MIN", [axis], keepdim=True)
    first = ctx.cast(first, "int64")
    if node.arg("keepdim", False) and node.arg("dim") is not None and not scalar:
        return first
    return ctx.reshape(first, list(node.out.shape))


def _emit_topk(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    return list(_topk(ctx, x, node.arg("k"), node.arg("dim", -1) % rank, node.arg("largest", True)))


def _emit_sort(ctx, node):
    """TopK over the whole axis; a 1-D input is viewed as [1, n] (TopK takes rank >= 2) and its results viewed back."""
    x = ctx.input("self")
    rank = ctx.rank(x)
    axis = node.arg("dim", -1) % max(rank, 1)
    n = node.meta("self").shape[axis] if rank else 1
    if rank >= 2:
        return list(_topk(ctx, x, n, axis, bool(node.arg("descending", False))))
    values, indices = _topk(ctx, ctx.reshape(x, [1, n]), n, 1, bool(node.arg("descending", False)))
    return [ctx.reshape(values, [n]), ctx.reshape(indices, [n])]


def _emit_cumsum_layer(ctx, node):
    """A float16/bfloat16 running sum is accumulated in float32 and each output rounded once, as PyTorch does (summed in
    bf16, 600 terms drifted 14% off)."""
    x = ctx.cast(ctx.input("self"), ctx.output_dtype())
    if ctx.rank(x) == 0:  # the running sum of one element is the element
        return x
    x, own = in_float32(ctx, x)
    axis = ctx.const(node.arg("dim") % ctx.rank(x), "int32", shape=())
    layer = ctx.net.add_cumulative(x, axis, ctx.trt.CumulativeOperation.SUM, False, False)
    return ctx.cast(ctx.out(layer, "cumsum"), own)


rule_any = strategy(
    "reduce/any", op=["aten.any.default", "aten.any.dim", "aten.any.dims"], kind="decompose",
    layers="Cast bool to int32, Reduce MAX, compare with 0 (Reduce has no boolean OR)",
    checks=trt_checks(no_padded_axis), emit=emit_bool_reduce("MAX"),
    examples=cases((lambda m: m.any(-1), t(3, 4, dtype=torch.bool)),
                   (lambda m: m.any((0, 2)), t(3, 4, 2, dtype=torch.bool)),
                   bad=(lambda m: m.double().any(-1), t(3, 4, dtype=torch.bool))))

rule_all = strategy(
    "reduce/all", op=["aten.all.default", "aten.all.dim", "aten.all.dims"], kind="decompose",
    layers="Cast bool to int32, Reduce MIN, compare with 0", checks=trt_checks(no_padded_axis),
    emit=emit_bool_reduce("MIN"),
    examples=cases((lambda m: m.all(-1), t(3, 4, dtype=torch.bool)),
                   (lambda m: torch.ops.aten.all.dims(m, [0, 2]), t(3, 4, 2, dtype=torch.bool)),
                   bad=(lambda m: m.double().all(-1), t(3, 4, dtype=torch.bool))))

rule_var_mean = strategy(
    "reduce/var-mean",
    op=["aten.var.correction", "aten.var_mean.correction", "aten.std.correction", "aten.var.dim", "aten.std.dim", "aten.var_mean.dim"],
    kind="decompose",
    layers="Reduce AVG, ElementWise SUB/PROD, Reduce SUM, DIV by n - correction",
    checks=trt_checks(promoted_float_input, no_padded_axis), emit=promoting(_emit_var),
    examples=cases((lambda a: a.var(-1), t(3, 4)), (lambda a: a.var(), t(3, 4)), (lambda a: a.std(), t(3, 4)),
                   (lambda a: a.std(1, keepdim=True), t(3, 4)), (lambda a: torch.var_mean(a, 1), t(3, 4)),
                   (lambda a: torch.var_mean(a, (0, 1), correction=0), t(3, 4))))

rule_softmax = strategy(
    "reduce/softmax", op=["aten.softmax.int", "aten._softmax.default"], kind="direct",
    layers="SoftMax on one axis", checks=trt_checks(promoted_float_input, no_padded_axis),
    emit=promoting(_emit_softmax),
    examples=cases((lambda a: a.softmax(-1), t(2, 5)), accept(lambda a: a.softmax(1), t(2, 5, 3), decompose=True)))

rule_log_softmax = strategy(
    "reduce/log-softmax", op=["aten.log_softmax.int", "aten._log_softmax.default"], kind="decompose",
    layers="Reduce MAX, SUB, Unary EXP, Reduce SUM, Unary LOG, SUB (x - max - log Σ exp(x - max))",
    checks=trt_checks(promoted_float_input, no_padded_axis),
    emit=promoting(lambda ctx, node: _emit_softmax(ctx, node, log=True)),
    examples=cases((lambda a: a.log_softmax(-1), t(2, 5)),
                   accept(lambda a: a.log_softmax(0), t(2, 5, 3), decompose=True)))

rule_argmax = strategy(
    "reduce/argmax", op=["aten.argmax.default", "aten.argmin.default"], kind="decompose",
    layers="Reduce MAX/MIN, ElementWise EQUAL, Select over the axis' indices, Reduce MIN (the first index on ties, "
           "as PyTorch); a flattened input viewed as [1, n]",
    checks=trt_checks(), emit=_emit_argmax,
    examples=cases((lambda a: a.argmax(-1), t(3, 4))))

rule_topk = strategy(
    "reduce/topk", op="aten.topk.default", kind="direct",
    layers="TopK (k constant, k <= 3840)", checks=trt_checks(static_k, rank_two_or_more), emit=_emit_topk,
    examples=cases((lambda a: a.topk(2, -1), t(3, 6)), bad=(lambda a: a.topk(2, -1), t(6)), match="rank >= 2"))


def sort_length_fits_topk(node, bounds, **_):
    """TopK sorts at most 3840 elements along its axis; a dynamic axis is judged by its upper bound."""
    meta = node.meta("self")
    n = meta.shape[node.arg("dim", -1) % meta.rank]
    upper = bounds.upper(n)
    assert upper is not None and upper <= 3840, f"sorts an axis of up to {upper if upper is not None else 'unbounded'} elements; TopK takes k <= 3840"


rule_sort_topk = strategy(
    "reduce/sort-topk", op="aten.sort.default", kind="decompose",
    layers="TopK with k = the full axis length (<= 3840)", checks=trt_checks(sort_length_fits_topk), emit=_emit_sort,
    examples=cases((lambda a: a.sort(-1), t(3, 6)), bad=(lambda a: a.double().sort(-1), t(3, 6))))

rule_cumsum_layer = strategy(
    "scan/cumsum-layer", op="aten.cumsum.default", kind="direct",
    layers="Cumulative SUM (inclusive, forward)", checks=trt_checks(no_padded_axis), emit=_emit_cumsum_layer,
    examples=cases((lambda a: a.cumsum(-1), t(3, 5))))


def _emit_cumsum_loop(ctx, node):
    """ILoop over the axis: an iterator yields each slice, a recurrence carries the running sum (in float32 for a
    float16/bfloat16 input, as PyTorch accumulates it; each output rounded once)."""
    x, own = in_float32(ctx, ctx.cast(ctx.input("self"), ctx.output_dtype()))
    rank = ctx.rank(x)
    axis = node.arg("dim") % rank
    length = node.meta("self").shape[axis]
    loop = ctx.net.add_loop()
    trips = ctx.const(length, "int32", shape=())
    ctx.layer(loop.add_trip_limit(trips, ctx.trt.TripLimit.COUNT), "trips")
    it = ctx.layer(loop.add_iterator(x, axis, False), "iterator")
    zero_shape = [d for i, d in enumerate(node.meta("self").shape) if i != axis]
    rec = ctx.layer(loop.add_recurrence(ctx.const(torch.zeros(zero_shape), ctx.dtype(x))), "running-sum")
    total = ctx.elementwise(rec.get_output(0), it.get_output(0), "SUM")
    rec.set_input(1, total)
    out = loop.add_loop_output(total, ctx.trt.LoopOutput.CONCATENATE, axis)
    out.set_input(1, trips)
    return ctx.cast(ctx.out(out, "stack"), own)


def static_scan_axis(node, **_):
    meta = node.meta("self")
    size = meta.shape[node.arg("dim") % max(meta.rank, 1)]
    assert isinstance(size, int), f"the scanned dim is dynamic ({size}); the loop's trip count is fixed at build time"
    assert meta.rank >= 1, "cumsum of a 0-d tensor needs no loop"
    others = [d for i, d in enumerate(meta.shape) if i != node.arg("dim") % meta.rank and not isinstance(d, int)]
    assert not others, f"dims {others} are dynamic; the running sum's zero start is sized at build time"


rule_cumsum_loop = strategy(
    "scan/cumsum-loop", op="aten.cumsum.default", kind="decompose",
    layers="ILoop over the axis with a recurrence accumulating the running sum", checks=trt_checks(no_padded_axis,
                                                                                                   static_scan_axis),
    emit=_emit_cumsum_loop,
    examples=cases((lambda a: a.cumsum(1), t(3, 5))))


def vector_norm(ctx, x, ord, axes, keep):
    """sum(|x|^p)^(1/p) over ``axes`` (a bit mask): p = 2 as SQRT of a sum of squares, 1 a sum of ABS, inf/-inf a
    MAX/MIN of ABS, 0 a count of non-zeros, any other p through POW. A float16/bfloat16 x is summed in float32 and the
    norm rounded once, as PyTorch does (in fp16 the squares of values past 256 overflow: the norm of [300, 301, 302,
    303] came out inf)."""
    x, own = in_float32(ctx, x)
    return ctx.cast(_vector_norm(ctx, x, ord, axes, keep), own)


def _vector_norm(ctx, x, ord, axes, keep):
    dtype = ctx.dtype(x)
    ones = [1] * ctx.rank(x)
    reduce = lambda t, op: ctx.out(ctx.net.add_reduce(t, getattr(ctx.trt.ReduceOperation, op), axes, keep), op.lower())  # noqa: E731
    if ord == 2:
        return ctx.unary(reduce(ctx.elementwise(x, x, "PROD"), "SUM"), "SQRT")
    a = ctx.unary(x, "ABS")
    if ord == 1:
        return reduce(a, "SUM")
    if ord in (float("inf"), float("-inf")):
        return reduce(a, "MAX" if ord > 0 else "MIN")
    if ord == 0:
        return reduce(ctx.cast(truth(ctx, x), dtype), "SUM")
    powered = ctx.elementwise(a, ctx.const(float(ord), dtype, shape=ones), "POW")
    total = reduce(powered, "SUM")
    return ctx.elementwise(total, ctx.const(1.0 / ord, dtype, shape=[1] * ctx.rank(total)), "POW")


def _emit_vector_norm(ctx, node):
    x = ctx.cast(ctx.input("self"), ctx.output_dtype())
    rank = ctx.rank(x)
    if rank == 0:
        return ctx.unary(x, "ABS")
    ord = float(node.arg("ord", 2) if node.arg("ord") is not None else 2)
    return vector_norm(ctx, x, ord, ctx.axes_mask(reduce_axes(node, rank), rank), bool(node.arg("keepdim", False)))


rule_vector_norm = strategy(
    "reduce/vector-norm", op=["aten.linalg_vector_norm.default"], kind="decompose",
    layers="Reduce SUM of squares then SQRT (ord 2); SUM of ABS (1); MAX/MIN of ABS (inf/-inf); SUM of != 0 (0); "
           "else POW, SUM, POW 1/p",
    checks=trt_checks(promoted_float_input, no_padded_axis), emit=promoting(_emit_vector_norm),
    examples=cases((lambda a: torch.linalg.vector_norm(a, dim=-1), t(3, 4))))


def _emit_prims_sum(ctx, node):
    """prims.sum(inp, dims, output_dtype): Reduce SUM over ``dims`` (no keepdim), accumulated in the output dtype."""
    x = ctx.cast(ctx.input("inp"), ctx.output_dtype())
    rank = ctx.rank(x)
    dims = [d % rank for d in node.arg("dims") or []] if rank else []
    if not dims:
        return x
    return ctx.reduce(x, "SUM", dims)


def prims_sum_axes(node, **_):
    """The reduced dims are a list of ints (prims.sum's meta rejects None) and none is data-dependent."""
    dims = node.arg("dims")
    assert isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims), f"dims={dims!r} is not a list of ints"
    assert node.meta("inp").dtype != "bool", ("prims.sum of bool: the export's meta says bool, PyTorch's kernel returns "
                                              "int64 counts; the output's dtype is not known; sum a cast to int")


rule_prims_sum = strategy(
    "reduce/prims-sum", op="prims.sum.default", kind="direct",
    layers="Reduce SUM over dims (as aten.sum.dim_IntList, keepdim false)", checks=trt_checks(prims_sum_axes),
    emit=_emit_prims_sum,
    examples=cases((lambda a: torch.ops.prims.sum.default(a, [1]) * 2, t(2, 3, 4)),
                   (lambda a: torch.ops.prims.sum.default(a, [0, 2]), t(2, 3, 4)),
                   (lambda a: torch.ops.prims.sum.default(a, [0, 1]), t(3, 4, dtype=torch.int32)),
                   (lambda a: torch.ops.prims.sum.default(a, [0]), t(5)), dynamic=({0: "batch"},)))


def _emit_max_min_dim(ctx, node):
    """Reduce MAX/MIN along ``dim`` for the value; its index is the first position holding it (PyTorch's choice
    among ties): Reduce MIN over Select(x == value, position, n)."""
    x = ctx.input("self")
    rank = ctx.rank(x)
    if rank == 0:  # a 0-d input is its own extreme, at index 0 (dim 0 or -1, keepdim or not)
        return [x, ctx.const(0, "int64")]
    dim = node.arg("dim") % rank
    op = "MAX" if node.op == "aten.max.dim" else "MIN"
    values = ctx.out(ctx.net.add_reduce(x, getattr(ctx.trt.ReduceOperation, op), 1 << dim, True), op.lower())
    n = ctx.dims_of(x)[dim]
    positions = ctx.reshape(ctx.arange(n, dtype="int32"), [1] * dim + [n] + [1] * (rank - dim - 1))
    length = ctx.cast(n, "int32") if not isinstance(n, int) else ctx.const(n, "int32")
    candidates = broadcast_select(ctx, ctx.elementwise(x, values, "EQUAL"), positions, length)
    indices = ctx.cast(ctx.out(ctx.net.add_reduce(candidates, ctx.trt.ReduceOperation.MIN, 1 << dim, True), "first"), "int64")
    if not node.arg("keepdim", False):
        values, indices = ctx.reshape(values, out_dims(node, 0)), ctx.reshape(indices, out_dims(node, 1))
    return [values, indices]


rule_max_min_dim = strategy(
    "reduce/max-min-dim", op=["aten.max.dim", "aten.min.dim"], kind="direct",
    layers="Reduce MAX/MIN (the value), Reduce MIN over Select(x == value, position, n) (its first index)",
    checks=trt_checks(promoted_float_input), emit=promoting(_emit_max_min_dim),
    examples=cases((lambda a: a.max(1), t(2, 5, 3)))
    + [accept(lambda a: a.min(-1, keepdim=True), t(3, 4)),
       reject(lambda a: a.max(1), t(2, 5, dtype=torch.int32), match="promoted only where")])  # int in, int out: no promotion
