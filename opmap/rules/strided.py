"""Views defined by positions in the input's storage: ``diagonal`` and ``as_strided``. TensorRT tensors have no
strides, so each becomes a Gather of the flattened input by the element positions the view reads, computed at build
time from its sizes, strides and offset."""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import t, trt_types

A = torch.ops.aten

# producers whose result is a strided view of another tensor's storage (not contiguous in general)
STRIDED_VIEWS = {"aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.expand.default", "aten.slice.Tensor",
                 "aten.select.int", "aten.diagonal.default", "aten.as_strided.default", "aten.unfold.default",
                 "aten.narrow.default", "aten.split.Tensor", "aten.split_with_sizes.default", "aten.unbind.int",
                 "aten.chunk.default", "aten.movedim.int", "aten.swapaxes.default", "aten.transpose.Dimname"}


def _diagonal_positions(a, b, offset):
    """Row-major positions in an [a, b] matrix of its diagonal at ``offset``."""
    if offset >= 0:
        return [i * b + i + offset for i in range(max(0, min(a, b - offset)))]
    return [(i - offset) * b + i for i in range(max(0, min(a + offset, b)))]


def _emit_diagonal(ctx, node):
    """The two dims moved last (Shuffle), flattened together, and Gather of the diagonal's positions."""
    shape = list(node.meta("self").shape)
    rank = len(shape)
    d1, d2 = node.arg("dim1", 0) % rank, node.arg("dim2", 1) % rank
    rest = [d for d in range(rank) if d not in (d1, d2)]
    layer = ctx.net.add_shuffle(ctx.input("self"))
    layer.first_transpose = tuple(rest + [d1, d2])
    moved = ctx.out(layer, "dims-last")
    a, b = shape[d1], shape[d2]
    flat = ctx.reshape(moved, [shape[d] for d in rest] + [a * b])
    positions = _diagonal_positions(a, b, node.arg("offset", 0))
    return ctx.gather(flat, ctx.const(positions, "int64"), -1)


@strategy("view/diagonal", op="aten.diagonal.default", kind="decompose",
          examples=[accept(lambda a: torch.diagonal(a) * 2, t(3, 4)),
                    accept(lambda a: torch.diagonal(a, 1, 0, 2) * 2, t(3, 2, 4)),
                    accept(lambda a: torch.diagonal(a, -1, -1, 1) * 2, t(2, 4, 3)),
                    reject(lambda a: torch.diagonal(a, 5) * 2, t(3, 4), match="empty"),
                    reject(lambda a: torch.diagonal(a) * 2, t(3, 4).double(), match="float64")])
def rule_diagonal(node):
    """Gather of the diagonal's positions in the two dims flattened (those two dims static; the others may be
    dynamic)."""
    trt_types(node)
    shape = node.meta("self").shape
    rank = len(shape)
    d1, d2 = node.arg("dim1", 0) % rank, node.arg("dim2", 1) % rank
    a, b = shape[d1], shape[d2]
    assert isinstance(a, int) and isinstance(b, int), f"the diagonal's dims ({a}, {b}) are dynamic; its positions are fixed at build time"
    assert _diagonal_positions(a, b, node.arg("offset", 0)), (
        f"offset {node.arg('offset', 0)} leaves an empty diagonal of a {a}x{b} matrix; TensorRT has no empty tensors to gather")


rule_diagonal.emit(_emit_diagonal)


def contiguous_input(node, graph):
    """The input is dense in its logical order (a graph input, or a non-view op's result)."""
    producer = graph.producer(node.arg("self"))
    assert producer is None or producer.op not in STRIDED_VIEWS, (
        f"the input comes from {producer.op if producer else ''}, a strided view whose storage order is not its logical "
        "order: opmap does not track strides; call .contiguous() first in the model")


def _emit_as_strided(ctx, node):
    """Gather of the flattened input at offset + Σ index_k · stride_k for every output element."""
    sizes, strides = list(node.arg("size")), list(node.arg("stride"))
    offset = node.arg("storage_offset") or 0
    positions = torch.full(sizes, offset, dtype=torch.int64)
    for axis, (size, stride) in enumerate(zip(sizes, strides)):
        positions += (torch.arange(size) * stride).reshape([size if i == axis else 1 for i in range(len(sizes))])
    flat = ctx.reshape(ctx.input("self"), [-1])
    return ctx.gather(flat, ctx.const(positions, "int64"), 0)


@strategy("view/as-strided", op="aten.as_strided.default", kind="decompose",
          examples=[accept(lambda a: torch.as_strided(a * 1, (2, 2), (1, 2)) * 2, t(3, 4)),
                    accept(lambda a: torch.as_strided(a * 1, (3, 2, 3), (2, 1, 1), 1) * 2, t(12)),  # overlapping windows
                    accept(lambda a: torch.as_strided(a, (2, 3), (4, 1), 5) * 2, t(4, 4)),  # a graph input
                    reject(lambda a: torch.as_strided(a.t(), (2, 2), (1, 2)) * 2, t(3, 4), match="strided view"),
                    reject(lambda a: torch.as_strided(a * 1, (2, 2), (1, 2)) * 2, t(3, 4).double(), match="float64")])
def rule_as_strided(node, graph):
    """Any sizes, strides and offset over a static input that is contiguous: a graph input or the result of an op
    that is not itself a strided view (opmap does not track strides; a permuted or sliced input's storage order is
    not its logical order)."""
    trt_types(node)
    meta = node.meta("self")
    assert meta.is_static, f"input {meta} has dynamic dims; the gathered positions are fixed at build time"
    assert all(isinstance(v, int) for v in [*node.arg("size"), *node.arg("stride")]), "size or stride is not constant"
    contiguous_input(node, graph)
    sizes, strides = node.arg("size"), node.arg("stride")
    last = (node.arg("storage_offset") or 0) + sum((s - 1) * st for s, st in zip(sizes, strides) if s > 0)
    assert last < math.prod(meta.shape), f"as_strided reads position {last}, past the input's {math.prod(meta.shape)} elements"
    assert math.prod(sizes) > 0, "an empty result: TensorRT has no empty tensors to gather"


rule_as_strided.emit(_emit_as_strided)


def _emit_sym_stride(ctx, node):
    """A dense tensor's stride along dim d is the product of the later sizes (Shape, Slice, Reduce PROD)."""
    x = ctx.input("self")
    rank = ctx.rank(x)
    d = node.arg("dim") % rank
    if d == rank - 1:
        return ctx.const([1], "int64")
    later = ctx.slice(ctx.shape_of(x), [d + 1], [rank - d - 1], [1])
    return ctx.reduce(later, "PROD", [0], keepdim=True)


def _stride_of(dim):
    def fn(a):
        return a.new_zeros(a.stride(dim)) + 1
    return fn


@strategy("shape/sym-stride", op="aten.sym_stride.int", kind="direct",
          examples=[accept(_stride_of(0), t(3, 4, 5), dynamic_shapes=lambda: ({1: torch.export.Dim("n", min=2, max=16)},)),
                    accept(_stride_of(0), t(3, 4, 5), dynamic_shapes=lambda: ({0: torch.export.Dim("b", min=2, max=8),
                                                                              2: torch.export.Dim("n", min=2, max=16)},))],
          no_reject=("torch.export computes a view's strides from its sizes itself, so a sym_stride node reads a dense "
                     "tensor; the rule still refuses a strided view's result, which no export has produced"))
def rule_sym_stride(node, graph):
    """A stride of a dense input: the product of its later sizes, read from a Shape layer (TensorRT tensors are dense
    and have no strides of their own)."""
    contiguous_input(node, graph)


rule_sym_stride.emit(_emit_sym_stride)
