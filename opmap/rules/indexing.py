"""Embedding, gather and integer indexing: IGatherLayer (embedding, index_select, gather, index with tensors,
embedding_bag).

``embedding_bag``: rows of a table gathered and reduced per bag (sum, mean or max), bags given by offsets.

TensorRT has no segment reduction; a bag-membership table [bags, indices] (index k belongs to bag b when b is the
last bag whose offset is <= k) turns it into a MatrixMultiply (sum, mean) or a masked Reduce MAX. Exact for the same
float arithmetic; the table costs bags × indices elements.
"""

import torch
import torch.nn.functional as F

from opmap.building.builder import broadcast_shape
from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, out_dims, outputs_unused, static_arg, t, trt_checks, trt_types


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


rule_embedding = strategy(
    "gather/embedding", op="aten.embedding.default", kind="direct",
    layers="Gather on axis 0 of the weight constant", checks=trt_checks(static_arg("weight")), emit=_emit_embedding,
    examples=cases((F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4)),
                   bad=(F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4).double())))

rule_index_select = strategy(
    "gather/index-select", op="aten.index_select.default", kind="direct",
    layers="Gather on one axis", checks=trt_checks(), emit=_emit_index_select,
    examples=cases((lambda a, i: a.index_select(1, i), t(3, 5), torch.tensor([4, 0]))))

rule_gather = strategy(
    "gather/gather", op="aten.gather.default", kind="direct",
    layers="Gather in ELEMENT mode", checks=trt_checks(), emit=_emit_gather_elements,
    examples=cases((lambda a, i: a.gather(1, i), t(3, 5), torch.tensor([[0, 1], [2, 3], [4, 4]]))))

rule_index_int = strategy(
    "gather/index-int", op="aten.index.Tensor", kind="direct",
    layers="Gather on the indexed axis (one integer index tensor)", checks=trt_checks(integer_indices,
                                                                                      single_index_tensor),
    emit=_emit_index_int,
    examples=cases((lambda a, i: a[:, i], t(3, 5), torch.tensor([4, 0, 1])),
                   bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks"))

rule_index_nd = strategy(
    "gather/index-nd", op="aten.index.Tensor", kind="direct",
    layers="GatherND over stacked (broadcast) integer indices", checks=trt_checks(integer_indices),
    emit=_emit_index_nd,
    examples=cases((lambda a, i, j: a[i, j], t(3, 5), torch.tensor([0, 2]), torch.tensor([1, 4])),
                   bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks"))

A = torch.ops.aten

MODES = {0: "sum", 1: "mean", 2: "max"}


def _padding_idx(node):
    """The padding row, or None: ``_embedding_bag`` says none with -1, ``embedding_bag.padding_idx`` with None."""
    pad = node.arg("padding_idx")
    return None if pad is None or pad < 0 else pad


def _membership(ctx, node, idx):
    """[bags, K] bool: index k is in bag b (offsets ascending; an index in no bag — past include_last_offset's last
    offset, or the padding row — is in none)."""
    k = node.meta("indices").shape[0]
    offsets = ctx.reshape(ctx.cast(ctx.input("offsets"), "int64"), [-1, 1])  # [B, 1]
    pos = ctx.reshape(ctx.arange(k), [1, k])  # [1, K]
    started = ctx.cast(ctx.elementwise(pos, offsets, "LESS"), "int32")  # offsets[b] > k
    bag_of = ctx.reduce(ctx.elementwise(ctx.const(1, "int32", shape=[1, 1]), started, "SUB"), "SUM", [0], keepdim=True)
    bag_of = ctx.elementwise(bag_of, ctx.const(1, "int32", shape=[1, 1]), "SUB")  # [1, K]: the last bag started at or before k
    bags = ctx.reshape(ctx.arange(node.out.shape[0], dtype="int32"), [-1, 1])
    member = ctx.elementwise(bags, bag_of, "EQUAL")
    pad = _padding_idx(node)
    if pad is not None:
        keep = ctx.unary(ctx.elementwise(ctx.reshape(idx, [1, k]), ctx.const(pad, ctx.dtype(idx), shape=[1, 1]), "EQUAL"), "NOT")
        member = ctx.elementwise(member, keep, "AND")
    return member


def _emit_embedding_bag(ctx, node):
    idx = ctx.input("indices")
    weight = ctx.input("weight")
    dt = ctx.dtype(weight)
    rows = ctx.gather(weight, idx, 0)  # [K, D]
    if node.meta("per_sample_weights") is not None:
        rows = ctx.elementwise(rows, ctx.reshape(ctx.cast(ctx.input("per_sample_weights"), dt), [-1, 1]), "PROD")
    member = _membership(ctx, node, idx)  # [B, K]
    count = ctx.reduce(ctx.cast(member, dt), "SUM", [1], keepdim=True)  # [B, 1]
    zero = ctx.const(0, dt, shape=[1, 1])
    mode = MODES[node.arg("mode", 0)]
    if mode == "max":
        low = ctx.const(float("-inf"), dt, shape=[1, 1, 1])
        picked = ctx.where(_trailing_unit(ctx, member), ctx.unsqueeze_to(rows, 3), low)  # [B, K, D]
        out = ctx.reduce(picked, "MAX", [1])
        return [ctx.where(ctx.elementwise(count, zero, "GREATER"), out, zero), None, None, None]  # an empty bag is 0
    layer = ctx.net.add_matrix_multiply(ctx.cast(member, dt), ctx.trt.MatrixOperation.NONE, rows, ctx.trt.MatrixOperation.NONE)
    out = ctx.out(layer, "bag-sum")
    if mode == "mean":
        out = ctx.elementwise(out, ctx.elementwise(count, ctx.const(1, dt, shape=[1, 1]), "MAX"), "DIV")
    return [out, None, None, None]  # the pooled rows only (the rule checks the others are unused)


def _trailing_unit(ctx, t):
    """[B, K] -> [B, K, 1], whatever B and K are at run time (0 copies the input's dim)."""
    layer = ctx.net.add_shuffle(t)
    layer.reshape_dims = (0, 0, 1)
    return ctx.out(layer, "unit-dim")


def _bag(mode, **kw):
    return lambda w, i, o: F.embedding_bag(i, w, o, mode=mode, **kw)


OFFSETS = torch.tensor([0, 2, 2, 5])  # bag 1 is empty


@strategy("bag/membership", op=["aten.embedding_bag.default", "aten.embedding_bag.padding_idx", "aten._embedding_bag.default",
                                 "aten._embedding_bag_forward_only.default"], kind="decompose",
          examples=[accept(_bag("sum"), t(10, 3), torch.tensor([1, 2, 4, 5, 4, 3, 9]), OFFSETS),
                    accept(_bag("mean", padding_idx=4), t(10, 3), torch.tensor([1, 2, 4, 5, 4, 3, 9]), OFFSETS),
                    accept(_bag("max"), t(10, 3), torch.tensor([1, 2, 4, 5, 4, 3, 9]), OFFSETS),
                    accept(lambda w, i, o, p: F.embedding_bag(i, w, o, mode="sum", per_sample_weights=p, include_last_offset=True),
                           t(10, 3), torch.tensor([1, 2, 4, 5, 4, 3]), torch.tensor([0, 2, 3, 6]), t(6)),
                    accept(lambda w, i, o: A._embedding_bag.default(w, i, o, False, 1)[0], t(6, 2), torch.tensor([5, 0, 1]),
                           torch.tensor([0, 1])),
                    accept(lambda w, i, o: A.embedding_bag.default(w, i, o, False, 1)[0], t(6, 2), torch.tensor([5, 0, 1]),
                           torch.tensor([0, 1])),
                    accept(lambda w, i, o: A._embedding_bag_forward_only.default(w, i, o, False, 0)[0], t(6, 2),
                           torch.tensor([5, 0, 1]), torch.tensor([0, 1])),
                    reject(_bag("sum"), t(10, 3).double(), torch.tensor([1, 2, 4]), torch.tensor([0, 2]), match="float64"),
                    reject(lambda w, i, o: A._embedding_bag.default(w, i, o, False, 2)[3], t(6, 2), torch.tensor([5, 0, 1]),
                           torch.tensor([0, 1]), match="max_indices")])
def rule_embedding_bag(node, graph):
    """Sum, mean or max of gathered rows per bag (per_sample_weights, include_last_offset and padding_idx as called)
    through a bag-membership table; only the pooled output (offset2bag, bag sizes and max indices are training aids)."""
    trt_types(node)
    assert node.meta("indices").rank == 1, "indices are not 1-D (PyTorch flattens 2-D input before the op)"
    assert node.arg("mode", 0) in MODES, f"mode {node.arg('mode')} is not sum, mean or max"
    outputs_unused(node, graph, {1: "offset2bag", 2: "bag_size", 3: "max_indices"})


rule_embedding_bag.emit(_emit_embedding_bag)
