"""Embedding, gather and integer indexing, scatter: IGatherLayer, IScatterLayer."""

import torch
import torch.nn.functional as F

from opmap.loading.graph import Ref
from opmap.building.builder import broadcast_shape
from opmap.rules.common import define, out_dims, static_arg, t

ns = globals()


def integer_indices(node, graph, **_):
    """aten.index with integer index tensors maps to Gather; a bool mask is the non-zero family's job."""
    for i, ref in enumerate(node.arg("indices") or []):
        if ref is None:
            continue
        meta = graph.meta_of(ref)
        assert meta is not None and meta.dtype in ("int32", "int64"), (
            f"index {i} is a {meta.dtype if meta else 'non-tensor'} tensor; boolean masks need a non-zero strategy"
        )


def single_index_tensor(node, **_):
    given = [i for i in (node.arg("indices") or []) if i is not None]
    assert len(given) == 1, f"{len(given)} index tensors; one Gather handles one indexed dim (advanced indexing needs GatherND)"


def no_reduce(node, **_):
    reduce = node.arg("reduce")
    assert reduce in (None, "none"), f"scatter with reduce={reduce!r}: TensorRT's Scatter overwrites, it cannot accumulate"


def _gather(ctx, data, idx, axis, tag="gather"):
    return ctx.out(ctx.net.add_gather(data, idx, axis), tag)


def _emit_embedding(ctx, node):
    return _gather(ctx, ctx.input("weight"), ctx.input("indices"), 0, "embedding")


def _emit_index_select(ctx, node):
    x = ctx.input("self")
    return _gather(ctx, x, ctx.input("index"), node.arg("dim") % ctx.rank(x))


def _emit_gather_elements(ctx, node):
    x = ctx.input("self")
    layer = ctx.net.add_gather_v2(x, ctx.input("index"), ctx.trt.GatherMode.ELEMENT)
    layer.axis = node.arg("dim") % ctx.rank(x)
    return ctx.out(layer, "gather-elements")


def _emit_index_int(ctx, node):
    x = ctx.input("self")
    indices = node.arg("indices")
    axis = next(i for i, r in enumerate(indices) if r is not None)
    return _gather(ctx, x, ctx.tensor(indices[axis]), axis, "index")


def _permute(ctx, x, order, tag):
    if list(order) == list(range(len(order))):
        return x
    layer = ctx.net.add_shuffle(x)
    layer.first_transpose = tuple(order)
    return ctx.out(layer, tag)


def _emit_index_nd(ctx, node):
    """x[..., i, j, ...]: the indexed dims moved to the front (a transpose where a slice comes first), GatherND with the
    index tensors broadcast, wrapped (negatives from the end) and stacked on a last axis: the result is S + the other
    dims in order. PyTorch places S where the indexed dims were when they are adjacent: a transpose moves it there."""
    x = ctx.input("self")
    refs = node.arg("indices")
    rank = ctx.rank(x)
    given = [k for k, r in enumerate(refs) if r is not None]
    others = [k for k in range(rank) if k not in given]
    x = _permute(ctx, x, given + others, "indexed-first")
    idx, shape = put_indices(ctx, node)
    if not shape:  # 0-d index tensors: one position
        idx, shape = [ctx.reshape(i, [1]) for i in idx], [1]
        scalar = True
    else:
        scalar = False
    stacked = ctx.concat([ctx.reshape(i, list(shape) + [1]) for i in idx], -1)
    out = ctx.out(ctx.net.add_gather_v2(x, stacked, ctx.trt.GatherMode.ND), "gather-nd")
    if scalar:
        out = ctx.reshape(out, out_dims(node))
    s = 0 if scalar else len(shape)
    first = given[0]
    if given == list(range(first, first + len(given))) and first > 0:  # adjacent: S goes where the indexed dims were
        order = [s + j for j in range(first)] + list(range(s)) + [s + j for j in range(first, len(others))]
        out = _permute(ctx, out, order, "indexed-in-place")
    return out


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


def put_indices(ctx, node):
    """The index tensors (index_put's, aten.index's) broadcast to one shape S, negatives counted from the end: ([int64
    S] per indexed dim, S). A skipped dim (None) has none; index_put's rule refuses those."""
    refs = node.arg("indices")
    shape = broadcast_shape(*[ctx.graph_meta(r).shape for r in refs if r is not None])
    sizes = node.meta("self").shape
    out = []
    for axis, r in enumerate(refs):
        if r is None:  # a skipped dim (aten.index's x[:, i]): no index tensor
            continue
        idx = ctx.expand_to(ctx.cast(ctx.tensor(r), "int64"), shape)
        negative = ctx.elementwise(idx, ctx.const(0, "int64", shape=[1] * len(shape)), "LESS")
        size = ctx.const(sizes[axis], "int64", shape=[1] * len(shape)) if isinstance(sizes[axis], int) else \
            ctx.reshape(ctx.size(sizes[axis]), [1] * len(shape))
        wrapped = ctx.elementwise(idx, size, "SUM")
        out.append(ctx.out(ctx.net.add_select(negative, wrapped, idx), "wrap"))
    return out, shape


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


define(ns, "gather/embedding", "aten.embedding.default", "direct", layers="Gather on axis 0 of the weight constant",
       example=(F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4)), bad=(F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4).double()),
       checks=[static_arg("weight")], emit=_emit_embedding)
define(ns, "gather/index-select", "aten.index_select.default", "direct", layers="Gather on one axis",
       example=(lambda a, i: a.index_select(1, i), t(3, 5), torch.tensor([4, 0])), emit=_emit_index_select)
define(ns, "gather/gather", "aten.gather.default", "direct", layers="Gather in ELEMENT mode",
       example=(lambda a, i: a.gather(1, i), t(3, 5), torch.tensor([[0, 1], [2, 3], [4, 4]])), emit=_emit_gather_elements)
define(ns, "gather/index-int", "aten.index.Tensor", "direct", layers="Gather on the indexed axis (one integer index tensor)",
       example=(lambda a, i: a[:, i], t(3, 5), torch.tensor([4, 0, 1])),
       bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks", checks=[integer_indices, single_index_tensor],
       emit=_emit_index_int)
define(ns, "gather/index-nd", "aten.index.Tensor", "direct",
       layers="GatherND over stacked (broadcast) integer indices",
       example=(lambda a, i, j: a[i, j], t(3, 5), torch.tensor([0, 2]), torch.tensor([1, 4])),
       bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks", checks=[integer_indices],
       emit=_emit_index_nd)
define(ns, "scatter/scatter", ["aten.scatter.src", "aten.scatter.value", "aten.scatter.reduce", "aten.scatter.value_reduce"], "direct", layers="Scatter in ELEMENT mode",
       example=(lambda a, i, s: a.scatter(1, i, s), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
       examples=[(lambda a, i: a.scatter(0, i, -2.5), t(3, 5), torch.tensor([[2, 0, 1, 1, 0]]))],
       bad=(lambda a, i, s: a.scatter(1, i, s, reduce="add"), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
       match="cannot accumulate", checks=[no_reduce], emit=_emit_scatter)
define(ns, "scatter/index-put", ["aten.index_put.default"], "direct",
       layers="Scatter in ND mode (overwrite) over the index tensors, broadcast and stacked",
       example=(lambda a, i, v: a.index_put((i,), v), t(5, 3), torch.tensor([0, 3]), t(2, 3)),
       bad=(lambda a, i, v: a.index_put((i,), v, accumulate=True), t(5, 3), torch.tensor([0, 3]), t(2, 3)), match="accumulate",
       checks=[lambda node, **_: _no_accumulate(node), put_indices_dynamic], emit=_emit_index_put)


def _no_accumulate(node):
    acc = node.arg("accumulate", False)
    assert not acc, "index_put with accumulate=True: Scatter overwrites duplicates instead of summing them (see scatter/index-put-accumulate)"
