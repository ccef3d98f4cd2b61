"""The non-zero family: ``nonzero``, boolean-mask indexing, ``masked_select``, ``nonzero_static``.

Their output size is known only at run time. Four ways to map them:
  * direct: INonZeroLayer (data-dependent output; the runtime needs an output allocator);
  * decompose / static bound: pad to the upper bound torch.export proved, plus a count;
  * decompose / masked rewrite: when every consumer reduces, compute ``where(mask, x, neutral)``;
  * plugin: an IPluginV3 with a size tensor (full TensorRT only).
Which ones a backend can build is established by probe builds, not by a list.
"""

import torch

import math

from opmap.errors import BuildError
from opmap.building.builder import broadcast_shape
from opmap.planning.strategy import accept, reject, strategy
from opmap.plugins import plugin_available
from opmap.rules.common import max_rank, t, trt_types

NONZERO = ["aten.nonzero.default", "aten.argwhere.default"]
MASK_SELECT = ["aten.index.Tensor", "aten.masked_select.default"]
REDUCTIONS = {
    "aten.sum.default", "aten.sum.dim_IntList", "aten.mean.default", "aten.mean.dim", "aten.amax.default", "aten.amin.default",
    "aten.max.default", "aten.min.default", "aten.any.default", "aten.all.default", "aten.sym_size.int",
    "aten.amax.default", "aten.amin.default", "aten.any.dim", "aten.all.dim", "aten.prod.default",
}
NONZERO_CONTRACT = "output padded to the static bound N with -1 rows; an extra int64 output holds the valid count"
MASK_CONTRACT = "output padded to the static bound N with zeros; an extra int64 output holds the valid count"

mask_index = lambda x, m: x[m]  # noqa: E731
all_true = torch.ones(3, 4, dtype=torch.bool)


def _bool_mask(node, graph):
    """The boolean mask argument of a mask-selecting node (asserts there is exactly one)."""
    if node.op == "aten.masked_select.default":
        ref = node.arg("mask")
    else:
        refs = [r for r in node.arg("indices") or [] if r is not None]
        bools = [r for r in refs if (graph.meta_of(r) or None) is not None and graph.meta_of(r).dtype == "bool"]
        assert bools, "no boolean mask among the indices (integer indexing is a Gather)"
        assert len(refs) == 1, f"{len(refs)} index tensors; the mask strategies take a single boolean mask"
        ref = bools[0]
    return ref


def _mask_axis(node) -> int:
    """Where the selected dim lands in x[..., mask]: after the dims skipped by leading ``None`` indices (x[:, m])."""
    if node.op != "aten.index.Tensor":
        return 0
    indices = list(node.arg("indices") or [])
    return next((i for i, r in enumerate(indices) if r is not None), 0)


# ops whose output rows are a subset of their input's elements: never more rows than the input has elements
SUBSET_OPS = set(NONZERO + MASK_SELECT + ["aten.where.default", "aten._unique2.default", "aten.unique_dim.default",
                                          "aten._unique.default", "aten.unique_consecutive.default"])


def selected_axis(node) -> int:
    """The output dim whose size is data-dependent: where the mask's dim lands in ``x[..., mask]``, ``unique(dim=)``'s
    dim, else 0 (nonzero's rows, a flat selection's elements, unique's values)."""
    if node.op == "aten.unique_dim.default":
        return node.arg("dim") % node.meta("self").rank
    return _mask_axis(node)


def declared_bound(node, settings, axis: int | None = None) -> int | None:
    """A bound the user declared for this node's data-dependent size (``--bound NODE=N`` or ``--bound u0=N``)."""
    declared = dict(getattr(settings, "declared_bounds", ()) or ())
    axis = selected_axis(node) if axis is None else axis
    size = node.out.shape[axis] if node.out is not None and node.out.rank > axis else None
    return declared.get(node.name, declared.get(size) if isinstance(size, str) else None)


def selection_bound(node, bounds, settings=None, axis: int | None = None) -> int | None:
    """How many entries the data-dependent dim ``axis`` (default :func:`selected_axis`) can have at most: the user's
    declared bound, else the export's proven range of its size, else — for a selection — what it selects from: the
    element count of its mask at the profile's maximum, or for ``unique(dim=)`` the input's size along that dim (a
    subset is never larger than its source). A declared bound may be smaller than the truth: rows past it are dropped
    and the count output still carries the true count, so truncation is visible."""
    axis = selected_axis(node) if axis is None else axis
    declared = declared_bound(node, settings, axis) if settings is not None else None
    if declared is not None:
        return declared
    rows = node.out.shape[axis] if node.out is not None and node.out.rank > axis else None
    bound = bounds.upper(rows) if rows is not None else None
    if node.op not in SUBSET_OPS:
        return bound
    if node.op == "aten.unique_dim.default":
        by_source = bounds.upper(node.meta("self").shape[axis])
    elif node.op in MASK_SELECT:
        mask = node.meta("mask") if node.op == "aten.masked_select.default" else next(
            (node._graph.meta_of(r) for r in node.arg("indices") or [] if r is not None), None)
        by_source = bounds.upper(mask) if mask is not None else None
    else:
        mask = node.meta("self") or node.meta("condition")
        by_source = bounds.upper(mask) if mask is not None else None
    if bound is None or (by_source is not None and by_source < bound):
        bound = by_source
    return bound


def _static_bound(node, bounds, settings):
    bound = selection_bound(node, bounds, settings)
    assert bound is not None, ("the data-dependent size has no upper bound in the exported graph; declare one with "
                               f"--bound {node.name}=N (or torch._check(size <= N) before export)")
    assert bound <= settings.max_bound, f"the static bound {bound} exceeds max_bound {settings.max_bound}"
    return bound


# -- emit: static bound -------------------------------------------------------------------------------
def _slots(ctx, mask_flat, bound):
    """Each true element's row in the padded output (an exclusive running count); false ones go to row ``bound``."""
    m = ctx.cast(mask_flat, "int32")
    axis = ctx.const(0, "int32", shape=())
    slot = ctx.out(ctx.net.add_cumulative(m, axis, ctx.trt.CumulativeOperation.SUM, True, False), "slot")
    dump = ctx.const(bound, "int32", shape=[1])
    keep = ctx.elementwise(mask_flat, ctx.elementwise(slot, dump, "LESS"), "AND")  # rows past the bound are dropped
    target = ctx.out(ctx.net.add_select(*ctx.broadcast(keep, slot, dump)), "target")
    count = ctx.out(ctx.net.add_reduce(m, ctx.trt.ReduceOperation.SUM, 1, True), "count")
    return ctx.reshape(ctx.cast(target, "int64"), [-1, 1]), ctx.cast(count, "int64")


def _scatter_rows(ctx, rows, target, bound, rest, fill, dtype):
    """ScatterND the rows into bound+1 rows of ``fill`` (the last row collects the unselected), keep the first bound.
    The kept dims ``rest`` may be symbolic: the buffer is a broadcast scalar."""
    if all(isinstance(d, int) for d in rest):
        buffer = ctx.const(torch.full([bound + 1, *rest], fill), dtype)
    else:
        buffer = ctx.expand_to(ctx.const(torch.full([1] * (1 + len(rest)), fill), dtype), [bound + 1, *rest])
    scattered = ctx.out(ctx.net.add_scatter(buffer, target, rows, ctx.trt.ScatterMode.ND), "scatter")
    return ctx.slice(scattered, [0] * (1 + len(rest)), [bound, *rest], [1] * (1 + len(rest)))


def _bound(ctx, node, axis: int | None = None):
    """(the static bound of the node's selected dim, its size symbol or None when the size is static)."""
    from opmap.planning.fixtures import Bounds

    axis = selected_axis(node) if axis is None else axis
    symbol = node.out.shape[axis]
    if isinstance(symbol, int):
        return symbol, None
    bound = selection_bound(node, Bounds(ctx.node._graph), ctx.nb.plan.settings, axis)
    if bound is None:
        raise BuildError(f"the output size {symbol} has no static upper bound")
    return bound, symbol


def numel_of(shape):
    """The element count of a shape of ints and symbolic sizes: an int, or a symbolic product."""
    if all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    return "*".join(f"({d})" for d in shape)


def _flat_nonzero_mask(ctx, name="self"):
    """(flat bool mask of the non-zero elements of argument ``name``, its shape)."""
    x = ctx.input(name)
    shape = list(ctx.node.meta(name).shape)
    mask = x if ctx.dtype(x) == "bool" else ctx.unary(ctx.elementwise(x, ctx.const(0, ctx.dtype(x), shape=()), "EQUAL"), "NOT")
    return ctx.reshape(mask, [numel_of(shape)]), shape


def _coordinates(ctx, shape):
    """Every element's coordinates, row-major, int64 [numel, rank]: a constant for a static shape, else computed from
    a flat index over the symbolic sizes (coordinate k = index // stride_k mod size_k)."""
    if all(isinstance(d, int) for d in shape):
        numel = math.prod(shape)
        coords = torch.stack(torch.unravel_index(torch.arange(numel), tuple(shape)), -1) if shape else torch.zeros(1, 0, dtype=torch.int64)
        return ctx.const(coords, "int64")
    flat = ctx.reshape(ctx.arange(numel_of(shape)), [numel_of(shape), 1])
    columns = []
    for k, size in enumerate(shape):
        stride = numel_of(shape[k + 1:]) if shape[k + 1:] else 1
        q = ctx.elementwise(flat, ctx.reshape(ctx.size(stride) if isinstance(stride, str) else ctx.const([stride], "int64"), [1, 1]), "FLOOR_DIV")
        n = ctx.reshape(ctx.size(size) if isinstance(size, str) else ctx.const([size], "int64"), [1, 1])
        columns.append(ctx.elementwise(q, ctx.elementwise(ctx.elementwise(q, n, "FLOOR_DIV"), n, "PROD"), "SUB"))
    layer = ctx.net.add_concatenation(columns)
    layer.axis = 1
    return ctx.out(layer, "coordinates")


def _selection(ctx, node):
    """For x[mask] / masked_select: (every candidate row [numel, *kept], the flat mask [numel], kept dims), where
    kept = the dims before the mask (x[:, m]) then the dims after it; the mask's dims are moved to the front."""
    x = ctx.input("self")
    if node.op == "aten.masked_select.default":
        shape = broadcast_shape(node.meta("self").shape, node.meta("mask").shape)
        mask = ctx.expand_to(ctx.cast(ctx.input("mask"), "bool"), shape)
        x, rest = ctx.expand_to(x, shape), []
    else:
        mref = next(r for r in node.arg("indices") if r is not None)
        shape = list(ctx.node._graph.meta_of(mref).shape)
        mask = ctx.cast(ctx.tensor(mref), "bool")
        xshape = list(node.meta("self").shape)
        p, k = _mask_axis(node), len(shape)
        if p:
            x = _permute(ctx, x, list(range(p, p + k)) + list(range(p)) + list(range(p + k, len(xshape))))
        rest = xshape[:p] + xshape[p + k:]
    numel = numel_of(shape)
    return ctx.reshape(x, [numel, *rest]), ctx.reshape(mask, [numel]), rest


def _permute(ctx, x, perm):
    layer = ctx.net.add_shuffle(x)
    layer.first_transpose = tuple(perm)
    return ctx.out(layer, "permute")


def _padded_nonzero(ctx, bound, fill, name="self"):
    """The coordinates of the non-zero elements of ``name`` in ``bound`` rows (the rest ``fill``), and their count."""
    flat, shape = _flat_nonzero_mask(ctx, name)
    target, count = _slots(ctx, flat, bound)
    return _scatter_rows(ctx, _coordinates(ctx, shape), target, bound, [len(shape)], fill, "int64"), count


def _emit_nonzero_static(ctx, node):
    bound, symbol = _bound(ctx, node)
    out, count = _padded_nonzero(ctx, bound, -1)
    if symbol is not None:
        ctx.nb.pad(symbol, bound, count)
    ctx.extra_output("count", count)
    return out


def _emit_where_static(ctx, node):
    """One-argument where: nonzero's columns, each padded to the bound with -1."""
    bound, symbol = _bound(ctx, node)
    out, count = _padded_nonzero(ctx, bound, -1, "condition")
    if symbol is not None:
        ctx.nb.pad(symbol, bound, count)
    ctx.extra_output("count", count)
    rank = len(node.outputs)
    cols = []
    for i in range(rank):
        cols.append(ctx.reshape(ctx.slice(out, [0, i], [bound, 1], [1, 1]), [bound]))
    return cols


def _emit_nonzero_static_op(ctx, node):
    """``nonzero_static(x, size, fill_value)`` is already static: the same scatter, with its own size and fill."""
    out, _ = _padded_nonzero(ctx, node.arg("size"), node.arg("fill_value", -1))
    return out


def _emit_mask_static(ctx, node):
    rows, flat, rest = _selection(ctx, node)
    p = _mask_axis(node)
    bound, symbol = _bound(ctx, node, p)
    target, count = _slots(ctx, flat, bound)
    out = _scatter_rows(ctx, rows, target, bound, rest, 0, ctx.dtype(rows))
    if p:  # the selected rows back to the mask's position
        out = _permute(ctx, out, list(range(1, p + 1)) + [0] + list(range(p + 1, len(rest) + 1)))
    if symbol is not None:
        ctx.nb.pad(symbol, bound, count)
    ctx.extra_output("count", count)
    return out


def _emit_masked_reduce(ctx, node):
    from opmap.building.builder import Masked

    if node.op in NONZERO:
        flat, shape = _flat_nonzero_mask(ctx)
        return Masked(_coordinates(ctx, shape), flat, node.name)
    rows, flat, _ = _selection(ctx, node)
    return Masked(rows, flat, node.name)


def reduces_selected_dim(node, graph, consumers):
    for user in consumers:
        if user.op == "aten.sym_size.int":
            assert user.arg("dim") == 0, f"consumer {user.name} reads dim {user.arg('dim')}, not the selected count"
            continue
        dims = user.arg("dim")
        axes = [] if dims in (None, []) else ([dims] if isinstance(dims, int) else list(dims))
        rank = len(graph.meta_of(user.arg("self")).shape) if user.arg("self") is not None else 1
        assert not axes or 0 in [a % rank for a in axes], f"consumer {user.name} keeps the selected dim (reduces {axes})"


def _nonzero_rows(ctx, mask, node):
    """INonZeroLayer gives [rank, N] indices; PyTorch's nonzero is [N, rank] int64. The data-dependent size N
    becomes the symbol's value (a shape tensor, so later shape arithmetic and asserts can use it)."""
    layer = ctx.net.add_non_zero(mask)
    layer.indices_type = ctx.trt.DataType.INT64
    shuffle = ctx.net.add_shuffle(ctx.out(layer, "nonzero"))
    shuffle.first_transpose = (1, 0)
    rows = ctx.out(shuffle, "rows-first")
    symbol = node.out.shape[0]
    if isinstance(symbol, str):
        ctx.nb.symbols.setdefault(symbol, ctx.dim_of(rows, 0))
    return rows


def _emit_nonzero_direct(ctx, node):
    x = ctx.input("self")
    mask = x if ctx.dtype(x) == "bool" else ctx.unary(ctx.elementwise(x, ctx.const(0, ctx.dtype(x), shape=()), "EQUAL"), "NOT")
    return _nonzero_rows(ctx, mask, node)


def _emit_mask_nonzero_gather(ctx, node):
    x = ctx.input("self")
    mref = node.arg("mask") if node.op == "aten.masked_select.default" else next(r for r in node.arg("indices") if r is not None)
    idx = _nonzero_rows(ctx, ctx.cast(ctx.tensor(mref), "bool"), node)
    return ctx.out(ctx.net.add_gather_v2(x, idx, ctx.trt.GatherMode.ND), "gather-nd")


@strategy("nonzero/direct", op=NONZERO, kind="direct", tags=("data-dependent",),
          examples=[accept(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt"),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="no runners")])
def rule_nonzero_direct(node, backend):
    """INonZeroLayer: the output has a data-dependent size; the runtime must provide an output allocator."""
    trt_types(node)
    probe = backend.builds("non_zero")
    assert probe.ok is not False, probe.message


rule_nonzero_direct.emit(_emit_nonzero_direct)


@strategy("nonzero/static-bound", op=NONZERO, kind="decompose", tags=("data-dependent",), contract=NONZERO_CONTRACT,
          examples=[accept(torch.nonzero, t(3, 4, dtype=torch.bool)), accept(torch.nonzero, all_true), accept(torch.argwhere, t(2, 3)),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), match="max_bound", max_bound=4)])
def rule_nonzero_static_bound(node, bounds, settings):
    """Exclusive Cumulative of the mask gives each true element its slot; Select sends false ones to a dump slot;
    ScatterND into N+1 rows filled with -1; Slice the first N; Reduce SUM counts. Exact, but the contract changes."""
    trt_types(node)
    max_rank(node)
    _static_bound(node, bounds, settings)


rule_nonzero_static_bound.emit(_emit_nonzero_static)


@strategy("nonzero/where-static-bound", op="aten.where.default", kind="decompose", tags=("data-dependent",),
          contract="each output padded to the static bound N with -1; an extra int64 output holds the valid count",
          examples=[accept(lambda m: torch.where(m), t(3, 4, dtype=torch.bool)),
                    reject(lambda m: torch.where(m), t(3, 4, dtype=torch.bool), match="max_bound", max_bound=4)])
def rule_where_static_bound(node, bounds, settings):
    """torch.where(cond): the columns of the static-bound nonzero."""
    trt_types(node)
    _static_bound(node, bounds, settings)


rule_where_static_bound.emit(_emit_where_static)


@strategy("nonzero/nonzero-static", op="aten.nonzero_static.default", kind="decompose",
          examples=[accept(lambda m: torch.nonzero_static(m, size=5), t(3, 4, dtype=torch.bool)),
                    accept(lambda m: torch.nonzero_static(m, size=20, fill_value=7), t(3, 4, dtype=torch.bool)),
                    reject(lambda m: torch.nonzero_static(m, size=5), t(3, 4, dtype=torch.bool), match="max_bound", max_bound=4)])
def rule_nonzero_static(node, settings):
    """PyTorch's own fixed-size nonzero: the static-bound layout with its size and fill value, exact, contract unchanged."""
    trt_types(node)
    size = node.arg("size")
    assert size <= settings.max_bound, f"size {size} exceeds max_bound {settings.max_bound}"


rule_nonzero_static.emit(_emit_nonzero_static_op)


@strategy("nonzero/plugin", op=NONZERO + MASK_SELECT, kind="plugin", tags=("data-dependent",),
          examples=[reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="plugin layers"),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt", match="no NonZero IPluginV3")],
          no_accept="opmap ships no NonZero plugin library yet; until one is registered the rule can only reject")
def rule_nonzero_plugin(node, backend):
    """An IPluginV3 whose output size comes from a size tensor (full TensorRT only)."""
    assert backend.plugins is not False, f"{backend.name} cannot add plugin layers (its network API has no add_plugin_v3)"
    assert plugin_available("opmap::NonZero"), "no NonZero IPluginV3 library is registered (opmap ships none yet)"


@strategy("mask/nonzero-gather", op=MASK_SELECT, kind="decompose", tags=("data-dependent",),
          examples=[accept(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), backend="tensorrt"),
                    reject(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="no runners")])
def rule_mask_nonzero_gather(node, graph, backend):
    """NonZero of the mask, then GatherND: a data-dependent output, as PyTorch returns it."""
    trt_types(node)
    _bool_mask(node, graph)
    assert node.op != "aten.masked_select.default", "masked_select broadcasts its mask; this strategy takes x[mask] only"
    probe = backend.builds("non_zero")
    assert probe.ok is not False, probe.message


rule_mask_nonzero_gather.emit(_emit_mask_nonzero_gather)


@strategy("mask/static-bound", op=MASK_SELECT, kind="decompose", tags=("data-dependent",), contract=MASK_CONTRACT,
          examples=[accept(mask_index, t(3, 4), t(3, 4, dtype=torch.bool)),
                    reject(lambda x, i: x[i], t(3, 4), torch.tensor([0, 2]), match="no boolean mask")])
def rule_mask_static_bound(node, graph, bounds, settings):
    """Slots from an exclusive Cumulative of the mask, ScatterND of the selected rows into N+1 rows, Slice N, count."""
    trt_types(node)
    _bool_mask(node, graph)
    _static_bound(node, bounds, settings)


rule_mask_static_bound.emit(_emit_mask_static)


@strategy("mask/masked-reduce", op=MASK_SELECT + NONZERO, kind="decompose", tags=("data-dependent",),
          examples=[accept(lambda x, m: x[m].sum(), t(3, 4), t(3, 4, dtype=torch.bool)),
                    reject(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), match="graph output")])
def rule_mask_masked_reduce(node, graph, consumers):
    """Every consumer reduces the selection away: compute where(mask, x, neutral) and reduce that instead.
    Exact, and no data-dependent shape survives."""
    trt_types(node)
    if node.op in MASK_SELECT:
        _bool_mask(node, graph)
        assert _mask_axis(node) == 0, f"the mask selects dim {_mask_axis(node)}, not the leading one; reductions see dim 0"
    assert not graph.is_output(node), "the selection itself is a graph output, so its data-dependent shape must survive"
    assert consumers, "the selection has no consumers"
    for user in consumers:
        assert user.op in REDUCTIONS, f"consumer {user.name} ({user.op}) is not a reduction"
    reduces_selected_dim(node, graph, consumers)


rule_mask_masked_reduce.emit(_emit_masked_reduce)
