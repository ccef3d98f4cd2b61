"""Scatters: IScatterLayer where it overwrites (scatter, index_put, index_copy, masked_scatter, select/slice scatter),
one-hot sums where PyTorch reduces (scatter_add, scatter_reduce, index_put(accumulate=True), histc).

Ops whose natural TensorRT form would need a reducing scatter, mapped to exact alternatives:
``index_put(accumulate=True)`` and ``histc`` through one-hot sums (TensorRT's Scatter overwrites, it never adds).

Scatters TensorRT's Scatter layer cannot do alone: reducing ones (``scatter_add``, ``scatter_reduce.two``) through a
one-hot table along the scattered dim, and two overwriting ones it can, once their index is made explicit
(``index_copy``: the index broadcast over the source; ``masked_scatter``: a running count of the mask picks the
source element of each selected position).
"""

import math

import torch

from opmap.building.builder import broadcast_shape
from opmap.loading.graph import Ref
from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, float_input, out_dims, t, trt_checks, trt_types
from opmap.rules.indexing import put_indices
from opmap.rules.shape import _in_range


def no_reduce(node, **_):
    reduce = node.arg("reduce")
    assert reduce in (None, "none"), f"scatter with reduce={reduce!r}: TensorRT's Scatter overwrites, it cannot accumulate"


def _emit_scatter(ctx, node):
    x = ctx.input("self")
    src = ctx.input("src") if isinstance(node.arg("src"), Ref) else None
    idx = ctx.input("index")
    if src is None:
        shape = list(node.meta("index").shape)  # ints, or symbols: the scalar broadcast to the index's run-time shape
        src = ctx.expand_to(ctx.const(node.arg("value"), ctx.dtype(x), shape=[1] * len(shape)), shape)
    layer = ctx.net.add_scatter(x, idx, ctx.cast(src, ctx.dtype(x)), ctx.trt.ScatterMode.ELEMENT)
    layer.axis = node.arg("dim") % ctx.rank(x)
    return ctx.out(layer, "scatter")


def _emit_index_put(ctx, node):
    """ScatterND: the index tensors stacked on a last axis address the leading dims; values broadcast to S + rest."""
    x = ctx.input("self")
    idx, shape = put_indices(ctx, node)
    if len(shape) == 0:
        idx, shape = [ctx.reshape(i, [1]) for i in idx], [1]
    layer = ctx.net.add_concatenation([ctx.reshape(i, shape + [1]) for i in idx])
    layer.axis = len(shape)
    stacked = ctx.out(layer, "stack-indices")
    rest = list(node.meta("self").shape[len(idx):])
    values = ctx.expand_to(ctx.cast(ctx.input("values"), ctx.dtype(x)), shape + rest)
    return ctx.out(ctx.net.add_scatter(x, stacked, values, ctx.trt.ScatterMode.ND), "index-put")


def put_indices_static(node, graph, **_):
    """Integer index tensors on the leading dims, all static (the one-hot accumulation is sized at build time)."""
    put_indices_dynamic(node, graph)
    for r in node.arg("indices"):
        assert graph.meta_of(r).is_static, f"index {graph.meta_of(r)} has dynamic dims; the one-hot table is sized at build time"
    assert node.meta("self").is_static, "self has dynamic dims; the one-hot table is sized at build time"


def put_indices_dynamic(node, graph, **_):
    """Integer index tensors on the leading dims; their broadcast shape may have one dynamic dim (the stacked indices
    are reshaped with TensorRT's -1 there); self and values may be dynamic (ScatterND takes any shape)."""
    refs = node.arg("indices") or []
    assert refs and all(r is not None for r in refs), "index_put with a skipped dim (x[:, i] = v) is not decomposed"
    for r in refs:
        meta = graph.meta_of(r)
        assert meta.dtype in ("int32", "int64", "int8", "uint8"), f"index is {meta}; boolean-mask assignment is not decomposed"
    shape = broadcast_shape(*[graph.meta_of(r).shape for r in refs])
    dynamic = [d for d in shape if not isinstance(d, int)]
    assert len(dynamic) <= 1, f"the index tensors broadcast to {shape}, with more than one dynamic dim"


rule_scatter = strategy(
    "scatter/scatter",
    op=["aten.scatter.src", "aten.scatter.value", "aten.scatter.reduce", "aten.scatter.value_reduce"], kind="direct",
    layers="Scatter in ELEMENT mode", checks=trt_checks(no_reduce), emit=_emit_scatter,
    examples=cases((lambda a, i, s: a.scatter(1, i, s), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
                   (lambda a, i: a.scatter(0, i, -2.5), t(3, 5), torch.tensor([[2, 0, 1, 1, 0]])),
                   bad=(lambda a, i, s: a.scatter(1, i, s, reduce="add"), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
                   match="cannot accumulate"))

rule_index_put = strategy(
    "scatter/index-put", op=["aten.index_put.default"], kind="direct",
    layers="Scatter in ND mode (overwrite) over the index tensors, broadcast and stacked",
    checks=trt_checks(lambda node, **_: _no_accumulate(node), put_indices_dynamic), emit=_emit_index_put,
    examples=cases((lambda a, i, v: a.index_put((i,), v), t(5, 3), torch.tensor([0, 3]), t(2, 3)),
                   bad=(lambda a, i, v: a.index_put((i,), v, accumulate=True), t(5, 3), torch.tensor([0, 3]), t(2, 3)),
                   match="accumulate"))


def _no_accumulate(node):
    acc = node.arg("accumulate", False)
    assert not acc, "index_put with accumulate=True: Scatter overwrites duplicates instead of summing them (see scatter/index-put-accumulate)"


def _one_hot(ctx, idx, n):
    """[K, n] bool: idx[k] == j (idx as int64 [K])."""
    k = idx.shape[0]
    cols = ctx.const(torch.arange(n, dtype=torch.int64).reshape(1, n), "int64")
    return ctx.elementwise(ctx.reshape(idx, [k, 1]), cols, "EQUAL")


def _static_small(node, settings, sizes):
    total = math.prod(sizes)
    assert total <= settings.max_bound, f"the one-hot table has {total} elements, over max_bound {settings.max_bound}"


def _emit_index_put_accumulate(ctx, node):
    """The indexed leading dims flattened to one row number per update, then one-hot rows summed over the updates."""
    x = ctx.input("self")
    idx, shape = put_indices(ctx, node)
    sizes = list(node.meta("self").shape)
    lead, rest = sizes[:len(idx)], sizes[len(idx):]
    k, n = math.prod(shape), math.prod(lead)
    flat = None
    for axis, i in enumerate(idx):
        term = ctx.elementwise(ctx.reshape(i, [k]), ctx.const(math.prod(lead[axis + 1:]), "int64", shape=[1]), "PROD")
        flat = term if flat is None else ctx.elementwise(flat, term, "SUM")
    hot = ctx.reshape(_one_hot(ctx, flat, n), [k, n] + [1] * len(rest))  # [K, N]
    values = ctx.reshape(ctx.expand_to(ctx.cast(ctx.input("values"), ctx.dtype(x)), shape + rest), [k, 1, *rest])
    zero = ctx.const(0, ctx.dtype(x), shape=[1] * (2 + len(rest)))
    spread = ctx.out(ctx.net.add_select(*ctx.broadcast(hot, values, zero)), "spread")
    added = ctx.out(ctx.net.add_reduce(spread, ctx.trt.ReduceOperation.SUM, 1, False), "sum")
    return ctx.elementwise(x, ctx.reshape(added, sizes), "SUM")


put_acc = lambda x, i, v: x.index_put((i,), v, accumulate=True)  # noqa: E731


@strategy("scatter/index-put-accumulate", op=["aten.index_put.default"], kind="decompose",
          examples=[accept(put_acc, torch.zeros(5), torch.tensor([0, 2, 2, -1]), torch.ones(4)),
                    accept(put_acc, torch.zeros(4, 2, dtype=torch.int32), torch.tensor([1, 1]), torch.ones(2, 2, dtype=torch.int32)),
                    reject(lambda x, i, v: x.index_put((i,), v), torch.zeros(5), torch.tensor([0, 2]), torch.ones(2),
                           match="accumulate=False")])
def rule_index_put_accumulate(node, graph, settings):
    """Duplicates add up: the index tensors (broadcast) give each update a flat row over the indexed dims; a one-hot [K, N] table selects each update's row, a Reduce SUM over K adds them, and the
    sum is added to self. Exact for integers; for floats the additions may happen in another order than PyTorch's."""
    trt_types(node)
    assert node.arg("accumulate", False), "index_put with accumulate=False overwrites: use scatter/index-put"
    put_indices_static(node, graph)
    meta = node.meta("self")
    assert meta.dtype != "bool", "self is bool: accumulating bools (an OR) is not decomposed; index_put into an int tensor"
    refs = node.arg("indices")
    k = math.prod(torch.broadcast_shapes(*[tuple(graph.meta_of(r).shape) for r in refs]))
    _static_small(node, settings, [k, *meta.shape])


rule_index_put_accumulate.emit(_emit_index_put_accumulate)


def _emit_histc(ctx, node):
    x = ctx.reshape(ctx.input("self"), [-1])
    dt = ctx.dtype(x)
    bins = node.arg("bins", 100)
    lo, hi = float(node.arg("min", 0)), float(node.arg("max", 0))
    if lo == hi:  # PyTorch then uses the data's own min and max
        lo_t = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.MIN, 1, True), "data-min")
        hi_t = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.MAX, 1, True), "data-max")
    else:
        lo_t, hi_t = ctx.const([lo], dt), ctx.const([hi], dt)
    inside = ctx.elementwise(ctx.unary(ctx.elementwise(x, lo_t, "LESS"), "NOT"), ctx.unary(ctx.elementwise(x, hi_t, "GREATER"), "NOT"), "AND")
    # bin = floor((x - min) * bins / (max - min)), x == max in the last bin
    pos = ctx.elementwise(ctx.elementwise(ctx.elementwise(x, lo_t, "SUB"), ctx.const(float(bins), dt), "PROD"),
                          ctx.elementwise(hi_t, lo_t, "SUB"), "DIV")
    pos = ctx.cast(ctx.unary(pos, "FLOOR"), "int64")
    pos = ctx.elementwise(pos, ctx.const(bins - 1, "int64"), "MIN")
    hot = ctx.elementwise(_one_hot(ctx, pos, bins), ctx.reshape(inside, [-1, 1]), "AND")
    counts = ctx.out(ctx.net.add_reduce(ctx.cast(hot, dt), ctx.trt.ReduceOperation.SUM, 1, False), "counts")
    return counts


@strategy("hist/histc-one-hot", op="aten.histc.default", kind="decompose",
          examples=[accept(lambda x: torch.histc(x, bins=4, min=-2, max=2), torch.randn(50)),
                    accept(lambda x: torch.histc(x, bins=5), torch.randn(6, 5)),
                    reject(lambda x: torch.histc(x, bins=4, min=-2, max=2), torch.randn(50).double(), match="float64")])
def rule_histc_one_hot(node, settings, bounds):
    """Each element's bin as floor((x - min)·bins / (max - min)) (the maximum in the last bin, outside elements
    dropped), a one-hot [numel, bins] table, Reduce SUM. Exact for the same float arithmetic. The table's rows follow
    the input's length, so dynamic dims are served (mixture-of-experts routers count tokens per expert this way);
    its size is checked at the export's largest input."""
    trt_types(node)
    float_input(node)
    dtype = node.meta("self").dtype
    assert dtype == "float32", (f"input is {dtype}: PyTorch computes each element's bin in that reduced precision, whose "
                                "rounding at the bin edges this strategy does not reproduce (the fuzzer found bfloat16 "
                                "counts off by one); histc a float32 cast")
    numel = bounds.upper(node.meta("self"))
    assert numel is not None, f"input {node.meta('self')} has no upper bound in the export; the one-hot table would be unbounded"
    _static_small(node, settings, [numel, node.arg("bins", 100)])


rule_histc_one_hot.emit(_emit_histc)

NEUTRAL = {"sum": 0, "mean": 0, "prod": 1, "amax": -math.inf, "amin": math.inf}

REDUCE = {"sum": "SUM", "mean": "SUM", "prod": "PROD", "amax": "MAX", "amin": "MIN"}

COMBINE = {"sum": "SUM", "mean": "SUM", "prod": "PROD", "amax": "MAX", "amin": "MIN"}


def _reduction(node):
    return "sum" if node.op == "aten.scatter_add.default" else node.arg("reduce")


def _neutral(value, dtype):
    """The reduction's identity in ``dtype`` (an integer's extreme for ±inf)."""
    if math.isinf(value) and not getattr(torch, dtype).is_floating_point:
        info = torch.iinfo(getattr(torch, dtype))
        return info.min if value < 0 else info.max
    return value


def _emit_scatter_reduce(ctx, node):
    """hot[..., i, j, ...] = index[..., i, ...] == j (j over self's dim): the source values where hot, the reduction's
    identity elsewhere, reduced over i; positions no index reaches keep self (or are combined with it)."""
    x, idx = ctx.input("self"), ctx.input("index")
    dt = ctx.dtype(x)
    rank = ctx.rank(x)
    dim = node.arg("dim") % rank
    ishape = list(node.meta("index").shape)
    src = ctx.cast(ctx.input("src"), dt)
    if list(node.meta("src").shape) != ishape:  # only the index's extent of src is scattered
        src = ctx.slice(src, [0] * rank, ishape, [1] * rank)
    opened = ishape[:dim + 1] + [1] + ishape[dim + 1:]
    n = node.meta("self").shape[dim]
    j = ctx.reshape(ctx.arange(n, dtype=ctx.dtype(idx)), [1] * (dim + 1) + [n] + [1] * (rank - dim - 1))
    hot = ctx.elementwise(ctx.reshape(idx, opened), j, "EQUAL")
    how = _reduction(node)
    neutral = ctx.const(_neutral(NEUTRAL[how], dt), dt, shape=[1] * (rank + 1))
    reduced = ctx.reduce(ctx.where(hot, ctx.reshape(src, opened), neutral), REDUCE[how], [dim])
    count = ctx.reduce(ctx.cast(hot, "int32"), "SUM", [dim])
    reached = ctx.elementwise(count, ctx.const(0, "int32", shape=[1] * rank), "GREATER")
    include_self = node.arg("include_self", True)
    if how == "mean":
        if include_self:
            reduced, count = ctx.elementwise(reduced, x, "SUM"), ctx.elementwise(count, ctx.const(1, "int32", shape=[1] * rank), "SUM")
        divide = "DIV" if getattr(torch, dt).is_floating_point else "FLOOR_DIV"  # PyTorch floors an integer mean
        mean = ctx.elementwise(reduced, ctx.elementwise(ctx.cast(count, dt), ctx.const(1, dt, shape=[1] * rank), "MAX"), divide)
        return ctx.where(reached, mean, x)
    if include_self:
        return ctx.elementwise(x, reduced, COMBINE[how])
    return ctx.where(reached, reduced, x)


def index_fits_self(node, **_):
    """The index spans self in every dim but the scattered one (one-hot rows map one to one onto self's)."""
    rank = node.meta("self").rank
    dim = node.arg("dim") % max(rank, 1)
    ishape, sshape = node.meta("index").shape, node.meta("self").shape
    for d in range(rank):
        assert d == dim or ishape[d] == sshape[d], (
            f"index is {list(ishape)} and self {list(sshape)}: an index narrower than self in dim {d} (not the scattered "
            "one) is not decomposed")


def one_hot_size(node, settings, **_):
    """The one-hot table (index elements × the scattered dim) stays within max_bound where sizes are static."""
    ishape, n = node.meta("index").shape, node.meta("self").shape[node.arg("dim") % node.meta("self").rank]
    if all(isinstance(d, int) for d in [*ishape, n]):
        _static_small(node, settings, [*ishape, n])


def numeric_self(node, **_):
    """Reductions through the one-hot table compute in numbers (bool has no Select neutral or Reduce)."""
    dtype = node.meta("self").dtype
    assert dtype != "bool", "self is bool: a scatter that reduces bools (OR/AND) is not decomposed; scatter them as int"


def known_reduction(node, **_):
    how = _reduction(node)
    assert how in NEUTRAL, f"reduce={how!r} is not one of PyTorch's sum, prod, mean, amax, amin"


LAYERS = ("ElementWise EQUAL against an iota makes a one-hot table along the scattered dim; Select puts the source "
          "values in it (the reduction's identity elsewhere); Reduce over the index dim; positions no index reaches "
          "keep self")

rule_scatter_add = strategy(
    "scatter/scatter-add", op="aten.scatter_add.default", kind="decompose",
    layers=LAYERS, checks=trt_checks(index_fits_self, one_hot_size, numeric_self), emit=_emit_scatter_reduce,
    examples=cases((lambda a, i, s: a.scatter_add(0, i, s), t(5, 3), torch.tensor([[0, 3, 1], [4, 3, 3], [0, 0, 2]]), t(3, 3)),
                   bad=(lambda a, i, s: a.scatter_add(1, i, s), t(5, 3), torch.tensor([[0, 2]]), t(1, 2)),
                   match="narrower"))


def _reducing(how, include_self=True, dim=0):
    return lambda a, i, s: a.scatter_reduce(dim, i, s, how, include_self=include_self)


INDEX = torch.tensor([[0, 3, 1], [4, 3, 3], [0, 0, 2]])


@strategy("scatter/scatter-reduce", op="aten.scatter_reduce.two", kind="decompose", spec=LAYERS,
          examples=[accept(_reducing("amax", False), t(5, 3), INDEX, t(4, 3)),
                    accept(_reducing("mean"), t(5, 3), INDEX, t(3, 3)),
                    accept(_reducing("prod", False), t(5, 3), INDEX, t(3, 3)),
                    accept(_reducing("sum", False), t(5, 3), INDEX, t(3, 3)),
                    accept(_reducing("mean", False, 1), torch.arange(12).reshape(3, 4) - 5, torch.tensor([[0, 0, 3]] * 3),
                           torch.tensor([[-3, 4, 7]] * 3)),  # an integer mean floors, as PyTorch's does
                    accept(_reducing("amin", True, 1), torch.arange(12, dtype=torch.int32).reshape(3, 4),
                           torch.tensor([[0, 0], [1, 3], [2, 2]]), torch.tensor([[-3, 4], [5, 6], [7, -8]], dtype=torch.int32)),
                    reject(_reducing("sum"), t(5, 3).double(), INDEX, t(3, 3).double(), match="float64"),
                    reject(_reducing("amax", True, 1), t(5, 3), torch.tensor([[0, 2]]), t(1, 2), match="narrower")])
def rule_scatter_reduce(node, settings):
    """sum, prod, mean, amax, amin, include_self both ways: a one-hot table along the scattered dim and a Reduce."""
    trt_types(node)
    known_reduction(node)
    numeric_self(node)
    index_fits_self(node)
    one_hot_size(node, settings)


rule_scatter_reduce.emit(_emit_scatter_reduce)


# -- overwriting scatters ------------------------------------------------------------------------------
def _emit_index_copy(ctx, node):
    """source's slices along dim written at index: Scatter ELEMENT with the index broadcast over the source."""
    src = ctx.input("source")
    rank = ctx.rank(src)
    dim = node.arg("dim") % max(rank, 1)
    shape = list(node.meta("source").shape)
    if rank == 0:
        return ctx.scatter(ctx.reshape(ctx.input("self"), [1]), ctx.reshape(ctx.input("index"), [1]), ctx.reshape(src, [1]), 0)
    index = ctx.reshape(ctx.input("index"), [1] * dim + [shape[dim]] + [1] * (rank - dim - 1))
    return ctx.scatter(ctx.input("self"), ctx.expand_to(index, shape), src, dim)


def _emit_masked_scatter(ctx, node):
    """Selected positions (row-major) take source's elements in order: an exclusive running count of the mask is each
    one's source position; Select keeps self elsewhere."""
    x = ctx.input("self")
    shape = out_dims(node)
    flat = ctx.reshape(ctx.expand_to(x, shape), [-1])  # self and mask broadcast to the result's shape
    mask = ctx.reshape(ctx.expand_to(ctx.input("mask"), shape), [-1])
    axis = ctx.const(0, "int32", shape=())
    slot = ctx.out(ctx.net.add_cumulative(ctx.cast(mask, "int32"), axis, ctx.trt.CumulativeOperation.SUM, True, False), "slot")
    source = ctx.cast(ctx.reshape(ctx.input("source"), [-1]), ctx.dtype(x))
    last = ctx.cast(ctx.elementwise(ctx.dim_of(source, 0), ctx.const([1], "int64"), "SUB"), "int32")
    picked = ctx.gather(source, ctx.elementwise(slot, last, "MIN"), 0)  # past the last selected: any valid index
    return ctx.reshape(ctx.where(mask, picked, flat), shape)


rule_index_copy = strategy(
    "scatter/index-copy", op="aten.index_copy.default", kind="direct",
    layers="Scatter in ELEMENT mode, the index broadcast over the source", checks=trt_checks(), emit=_emit_index_copy,
    examples=cases((lambda a, i, s: a.index_copy(1, i, s), t(3, 5), torch.tensor([4, 0]), t(3, 2))))

rule_masked_scatter = strategy(
    "scatter/masked-scatter", op="aten.masked_scatter.default", kind="decompose",
    layers="Cumulative SUM (exclusive) of the mask, Gather from the flattened source, Select", checks=trt_checks(),
    emit=_emit_masked_scatter,
    examples=cases((lambda a, m, s: a.masked_scatter(m, s), t(4, 3), torch.tensor([True, False, True]), t(4, 3))))

A = torch.ops.aten


def _positions(ctx, node, dim):
    """int64 positions along ``dim`` of self, shaped to broadcast against it; and the dim's length (int or symbol)."""
    shape = node.meta("self").shape
    rank, n = len(shape), shape[dim]
    return ctx.reshape(ctx.arange(n), [1] * dim + [n] + [1] * (rank - dim - 1)), n


def _where(ctx, cond, a, b):
    return ctx.out(ctx.net.add_select(*ctx.broadcast(cond, a, b)), "select")


def _length(ctx, n):
    """An int, a symbol or a [1] tensor, as a [1] int64 tensor."""
    return ctx.const([n], "int64") if isinstance(n, int) else ctx.size(n) if isinstance(n, str) else n


def _emit_select_scatter(ctx, node):
    """Select(position == index, src with the dim restored, self)."""
    x = ctx.input("self")
    dim = node.arg("dim") % ctx.rank(x)
    pos, n = _positions(ctx, node, dim)
    at = ctx.elementwise(pos, _length(ctx, _in_range(ctx, n, node.arg("index"), clamp=False)), "EQUAL")
    src = ctx.cast(ctx.input("src"), ctx.dtype(x))
    dims = ctx.dims_of(src)
    src = ctx.reshape(src, dims[:dim] + [1] + dims[dim:])
    return _where(ctx, at, src, x)


def _emit_slice_scatter(ctx, node):
    """Positions start, start + step, ... below end take src[(p - start) / step] (a Gather along dim); others keep self."""
    x = ctx.input("self")
    dim = node.arg("dim", 0) % ctx.rank(x)
    if node.meta("src").shape[dim] == 0:  # an empty slice writes nothing
        return x
    step = node.arg("step", 1) or 1
    pos, n = _positions(ctx, node, dim)
    start = _length(ctx, _in_range(ctx, n, node.arg("start") or 0))
    end = _length(ctx, _in_range(ctx, n, node.arg("end")) if node.arg("end") is not None else n)
    src = ctx.cast(ctx.input("src"), ctx.dtype(x))
    offset = ctx.elementwise(pos, start, "SUB")
    k = ctx.elementwise(offset, ctx.const([step], "int64"), "FLOOR_DIV")
    on_step = ctx.elementwise(ctx.elementwise(k, ctx.const([step], "int64"), "PROD"), offset, "EQUAL")
    inside = ctx.elementwise(ctx.unary(ctx.elementwise(pos, start, "LESS"), "NOT"), ctx.elementwise(pos, end, "LESS"), "AND")
    last = ctx.elementwise(_length(ctx, node.meta("src").shape[dim]), ctx.const([1], "int64"), "SUB")
    k = ctx.elementwise(ctx.elementwise(k, ctx.const([0], "int64"), "MAX"), last, "MIN")
    flat = ctx.reshape(k, [-1])
    gathered = ctx.out(ctx.net.add_gather(src, flat, dim), "gather")
    return _where(ctx, ctx.elementwise(inside, on_step, "AND"), gathered, x)


rule_select_scatter = strategy(
    "scatter/select-scatter", op="aten.select_scatter.default", kind="decompose",
    layers="Fill (positions), ElementWise EQUAL, Shuffle (src with the dim restored), Select", checks=trt_checks(),
    emit=_emit_select_scatter,
    examples=cases((lambda a, s: torch.select_scatter(a, s, 1, -1), t(2, 3), t(2))))

rule_slice_scatter = strategy(
    "scatter/slice-scatter", op="aten.slice_scatter.default", kind="decompose",
    layers="Fill (positions), ElementWise range and step tests, Gather of src along dim, Select", checks=trt_checks(),
    emit=_emit_slice_scatter,
    examples=cases((lambda a: torch.slice_scatter(a, a[:, 1:6:2] * 2, 1, 1, 6, 2), t(2, 7)))
    + [accept(lambda a: torch.slice_scatter(a, a[-3:] + 1, 0, -3), t(5, 2))])
