"""``embedding_bag``: rows of a table gathered and reduced per bag (sum, mean or max), bags given by offsets.

TensorRT has no segment reduction; a bag-membership table [bags, indices] (index k belongs to bag b when b is the
last bag whose offset is <= k) turns it into a MatrixMultiply (sum, mean) or a masked Reduce MAX. Exact for the same
float arithmetic; the table costs bags × indices elements.
"""

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import outputs_unused, t, trt_types

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
