"""Scatters TensorRT's Scatter layer cannot do alone: reducing ones (``scatter_add``, ``scatter_reduce.two``) through a
one-hot table along the scattered dim, and two overwriting ones it can, once their index is made explicit
(``index_copy``: the index broadcast over the source; ``masked_scatter``: a running count of the mask picks the
source element of each selected position)."""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import define, out_dims, t, trt_types
from opmap.rules.scatter_reduce import _static_small

ns = globals()

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
define(ns, "scatter/scatter-add", "aten.scatter_add.default", "decompose", layers=LAYERS,
       example=(lambda a, i, s: a.scatter_add(0, i, s), t(5, 3), torch.tensor([[0, 3, 1], [4, 3, 3], [0, 0, 2]]), t(3, 3)),
       bad=(lambda a, i, s: a.scatter_add(1, i, s), t(5, 3), torch.tensor([[0, 2]]), t(1, 2)), match="narrower",
       checks=[index_fits_self, one_hot_size, numeric_self], emit=_emit_scatter_reduce)


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


define(ns, "scatter/index-copy", "aten.index_copy.default", "direct", layers="Scatter in ELEMENT mode, the index broadcast over the source",
       example=(lambda a, i, s: a.index_copy(1, i, s), t(3, 5), torch.tensor([4, 0]), t(3, 2)), emit=_emit_index_copy)
define(ns, "scatter/masked-scatter", "aten.masked_scatter.default", "decompose",
       layers="Cumulative SUM (exclusive) of the mask, Gather from the flattened source, Select",
       example=(lambda a, m, s: a.masked_scatter(m, s), t(4, 3), torch.tensor([True, False, True]), t(4, 3)),
       emit=_emit_masked_scatter)
