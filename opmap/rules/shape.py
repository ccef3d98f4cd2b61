"""Layout and shape ops: IShuffleLayer, ISliceLayer, IConcatenationLayer, IGatherLayer with constant indices (view,
permute, cat, split, pad, roll, tile, pixel shuffle, copy...).

``split.sizes``: ``split`` called with a list of sizes (the overload ``torch.split(x, [2, 4])`` resolves to before
PyTorch's decomposition turns it into ``split_with_sizes``). The pieces are given, so they are sliced as
``shape/split`` slices ``split_with_sizes``, dynamic dims included.
"""

import torch
import torch.nn.functional as F

from opmap.loading.graph import Ref
from opmap.planning.strategy import Example, accept, strategy
from opmap.rules.common import cases, int_arg, out_dims, static, static_arg, t, trt_checks
from opmap.rules.emitting import emit_identity


def constant_dims(*names):
    def dims_are_constants(node, **_):
        for name in names:
            value = node.arg(name)
            values = value if isinstance(value, list) else [value]
            for v in values:
                assert v is None or isinstance(v, int), f"{name} contains {v!r}, not a constant int"

    return dims_are_constants


def _emit_view(ctx, node):
    x = ctx.input("self")
    dims = out_dims(node)
    return ctx.reshape(x, dims)


def _emit_permute(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    if node.op == "aten.permute.default":
        perm = [d % rank for d in node.arg("dims")]
    elif rank < 2:
        return x
    else:
        d0, d1 = (node.arg("dim0", 0) % rank, node.arg("dim1", 1) % rank) if node.op == "aten.transpose.int" else (rank - 2, rank - 1)
        perm = list(range(rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    shape = node.meta("self").shape
    moved = [i for i in perm if shape[i] != 1]  # a symbolic dim counts as moving (it may be 1 or not at run time)
    if moved == sorted(moved):  # only unit dims move (one attention head, a batch of 1): a reshape, no data moves
        return ctx.reshape(x, [shape[i] for i in perm])
    earlier = ctx.nb.conversions.get((x.name, "permuted from"))
    if earlier is not None:  # a permute of a permute (key.transpose(1, 2) then .transpose(-1, -2)): one Shuffle
        x, first = earlier  # of the first one's input, the two orders composed; the first is dead unless read elsewhere
        perm = [first[p] for p in perm]
        if perm == list(range(rank)):
            return x
    layer = ctx.net.add_shuffle(x)
    layer.first_transpose = tuple(perm)
    out = ctx.out(layer, "permute")
    ctx.nb.conversions[(out.name, "permuted from")] = (x, perm)
    return out


def _slice_layer(ctx, x, start, size, stride, mode=None, fill=None):
    return ctx.slice(x, start, size, stride, mode=mode, fill=fill)


def _in_range(ctx, n, index, clamp=True):
    """A start index of ATen's slice/select/narrow: negative counts from the end (n + index), then clamped to [0, n].
    Python ints when n is static; a [1] shape tensor when it is symbolic."""
    if isinstance(n, int):
        index = index + n if index < 0 else index
        return max(0, min(n, index)) if clamp else index
    if index >= 0:
        return index if not clamp else ctx.elementwise(ctx.const([index], "int64"), ctx.size(n), "MIN")
    shifted = ctx.elementwise(ctx.size(n), ctx.const([index], "int64"), "SUM")
    return ctx.elementwise(shifted, ctx.const([0], "int64"), "MAX") if clamp else shifted


def _emit_expand(ctx, node):
    target = out_dims(node)
    x = ctx.unsqueeze_to(ctx.input("self"), len(target))
    stride = [0 if (isinstance(s, int) and s == 1 and t != 1) else 1 for s, t in zip(x.shape, target)]
    return _slice_layer(ctx, x, [0] * len(target), target, stride)


def _emit_repeat(ctx, node):
    target = out_dims(node)
    x = ctx.unsqueeze_to(ctx.input("self"), len(target))
    return _slice_layer(ctx, x, [0] * len(target), target, [1] * len(target), mode="WRAP")


def diff_static_dim(node, **_):
    meta = node.meta("self")
    dim = node.arg("dim", -1) % meta.rank
    assert isinstance(meta.shape[dim], int), f"diff along the dynamic dim {meta.shape[dim]} is not decomposed"
    for name in ("prepend", "append"):
        other = node.meta(name)
        assert node.arg(name) is None or other is not None, f"{name}={node.arg(name)!r}: only tensors are decomposed"
        assert other is None or isinstance(other.shape[dim], int), f"{name} is dynamic along the diff dim"


def split_dim_static(node, **_):
    """Splitting into fixed-size pieces (split, chunk, unbind): how many pieces there are depends on the dim's length,
    which the export fixed at its example size."""
    if node.op == "aten.split_with_sizes.default":
        return  # the sizes are given, so the pieces are too
    meta = node.meta("self")
    dim = node.arg("dim", 0) % meta.rank
    assert isinstance(meta.shape[dim], int), (
        f"splits dim {dim} of dynamic length {meta.shape[dim]} into fixed-size pieces: the export fixed the piece count "
        "at its example size without a guard; export that dim static or split with explicit sizes")


SHUFFLE = [
    ("shape/view", ["aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.flatten.using_ints",
                    "aten.reshape_as.default", "aten.view_as.default", "aten.unflatten.int"],
     "Shuffle reshape (dynamic sizes from shape tensors)", lambda a: a.reshape(2, -1), _emit_view),
    ("shape/permute", ["aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.numpy_T.default"],
     "Shuffle first_transpose (a reshape where only unit dims move)", lambda a: a.permute(1, 0), _emit_permute),
    ("shape/unsqueeze", ["aten.unsqueeze.default"], "Shuffle reshape", lambda a: a.unsqueeze(1), _emit_view),
    ("shape/squeeze", ["aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default"], "Shuffle reshape",
     lambda a: a.unsqueeze(0).squeeze(0), _emit_view),
    ("shape/expand", ["aten.expand.default", "aten.expand_as.default", "aten.broadcast_to.default"], "Slice with stride 0 on broadcast dims",
     lambda a: a[:, :1].expand(4, 6), _emit_expand),
    ("shape/repeat", ["aten.repeat.default"], "Slice in WRAP mode over the tiled size", lambda a: a.repeat(2, 1), _emit_repeat),
]

A = torch.ops.aten

# more accept examples on t(4, 6): every listed overload exercised
MORE = {
    "shape/view": [lambda a: a.view(a.shape[0], 2, 3) * 2, lambda a: A._unsafe_view(a, [a.shape[0], 3, 2]) * 2,
                   lambda a: (a * 2).view_as(a.t())],
    "shape/permute": [lambda a: a.t() * 2, lambda a: a.T * 2,
                      accept(lambda a: a.permute(0, 2, 1, 3) * 2, t(2, 5, 1, 3)),  # one head: a reshape
                      accept(lambda a: a.transpose(1, 2).transpose(-1, -2) * 2, t(2, 3, 4, 5)),  # one Shuffle
                      accept(lambda a: a.t().t() * 2, t(4, 6))],  # none
    "shape/squeeze": [lambda a: a.reshape(1, 4, 1, 6).squeeze() * 2, lambda a: a.reshape(1, 4, 1, 6).squeeze((0, 2)) * 2],
    "shape/expand": [lambda a: a[:1].expand_as(a) * 2],
}

rule_shuffle = [strategy(id, op=ops, kind="direct", layers=layers, checks=trt_checks(), emit=emit,
                         examples=cases((fn, t(4, 6)), *[f if isinstance(f, Example) else (f, t(4, 6)) for f in MORE.get(id, ())]))
                for id, ops, layers, fn, emit in SHUFFLE]


def _dim_size(node, name, dim):
    return node.meta(name).shape[dim]


def _emit_slice(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    dim = node.arg("dim", 0) % rank
    n = _dim_size(node, "self", dim)
    step = node.arg("step", 1)
    start = node.arg("start") or 0
    if isinstance(start, Ref):  # a start computed in the graph (a SymInt): negative counts from the end, then [0, n]
        value = ctx.reshape(ctx.cast(ctx.tensor(start), "int64"), [1])
        size = ctx.size(n) if isinstance(n, str) else ctx.const([n], "int64")
        zero = ctx.const([0], "int64")
        value = ctx.where(ctx.elementwise(value, zero, "LESS"), ctx.elementwise(value, size, "SUM"), value)
        start = ctx.elementwise(ctx.elementwise(value, zero, "MAX"), size, "MIN")
    else:
        start = ctx.size(start) if isinstance(start, str) else _in_range(ctx, n, start)  # the size is the export's own
    start_v = [0] * rank
    start_v[dim] = start
    size = out_dims(node)
    stride = [1] * rank
    stride[dim] = step
    return _slice_layer(ctx, x, start_v, size, stride)


def _emit_select(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    dim = node.arg("dim") % rank
    index = _in_range(ctx, _dim_size(node, "self", dim), node.arg("index"), clamp=False)
    index = ctx.const(index, "int64", shape=()) if isinstance(index, int) else ctx.scalar(index)
    return ctx.out(ctx.net.add_gather(x, index, dim), "select")


def _emit_narrow(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    dim = node.arg("dim") % rank
    start = [0] * rank
    start[dim] = _in_range(ctx, _dim_size(node, "self", dim), node.arg("start"), clamp=False)
    return _slice_layer(ctx, x, start, out_dims(node), [1] * rank)


def _emit_cat(ctx, node):
    dtype = ctx.output_dtype()
    parts = [ctx.cast(ctx.tensor(r), dtype) for r in node.arg("tensors")]
    rank = len(node.out.shape)
    parts = [p for p in parts if not (len(p.shape) == 1 and p.shape[0] == 0 and rank != 1)]
    layer = ctx.net.add_concatenation(parts)
    layer.axis = node.arg("dim", 0) % rank
    return ctx.out(layer, "cat")


def _emit_stack(ctx, node):
    rank = len(node.out.shape)
    dim = node.arg("dim", 0) % rank
    parts = []
    for r in node.arg("tensors"):
        shape = list(ctx.graph_meta(r).shape)
        shape.insert(dim, 1)
        parts.append(ctx.reshape(ctx.tensor(r), shape))
    layer = ctx.net.add_concatenation(parts)
    layer.axis = dim
    return ctx.out(layer, "stack")


def _emit_split(ctx, node):
    x = ctx.input("self")
    rank = ctx.rank(x)
    dim = node.arg("dim", 0) % rank
    outs = []
    offset = 0  # an int while the pieces are static, then a [1] shape tensor
    squeeze = node.op == "aten.unbind.int"
    for meta in node.outputs:
        start = [0] * rank
        start[dim] = offset
        size = list(meta.shape)
        if squeeze:
            size.insert(dim, 1)
        piece = _slice_layer(ctx, x, start, size, [1] * rank)
        outs.append(ctx.reshape(piece, list(meta.shape)) if squeeze else piece)
        if isinstance(offset, int) and isinstance(size[dim], int):
            offset += size[dim]
        else:
            offset = ctx.elementwise(ctx.size(offset) if not isinstance(offset, int) else ctx.const([offset], "int64"),
                                     ctx.size(size[dim]) if isinstance(size[dim], str) else ctx.const([size[dim]], "int64"), "SUM")
    return outs


def _emit_flip(ctx, node):
    x = ctx.input("self")
    shape = list(node.meta("self").shape)
    rank = len(shape)
    dims = {d % rank for d in node.arg("dims")}
    start = [(shape[i] - 1 if isinstance(shape[i], int) else f"{shape[i]} - 1") if i in dims else 0 for i in range(rank)]
    stride = [-1 if i in dims else 1 for i in range(rank)]
    return _slice_layer(ctx, x, start, shape, stride)


PAD_MODES = {"constant": "FILL", "reflect": "REFLECT", "replicate": "CLAMP", "circular": "WRAP"}


def _pad_mode(node) -> str:
    if "reflection_pad" in node.op:
        return "reflect"
    if "replication_pad" in node.op:
        return "replicate"
    if node.op == "aten._pad_circular.default":
        return "circular"
    return node.arg("mode", "constant") or "constant"


def _emit_pad(ctx, node):
    """A Slice whose start is -before on each padded axis and whose size grows by before + after; the mode fills the
    border: FILL with the value, REFLECT, CLAMP (replicate) or WRAP (circular). Negative pads crop. Dynamic dims keep
    their run-time size (the size is the input's shape plus a constant)."""
    x = ctx.input("self")
    meta = node.meta("self")
    rank = meta.rank
    pad = list(node.arg("pad") if node.arg("pad") is not None else node.arg("padding"))
    start, grow = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        axis = rank - 1 - i
        start[axis], grow[axis] = -pad[2 * i], pad[2 * i] + pad[2 * i + 1]
    mode = PAD_MODES[_pad_mode(node)]
    fill = ctx.const(node.arg("value", 0.0) or 0, ctx.dtype(x), shape=()) if mode == "FILL" else None
    if meta.is_static:
        return _slice_layer(ctx, x, start, [d + g for d, g in zip(meta.shape, grow)], [1] * rank, mode=mode, fill=fill)
    layer = ctx.net.add_slice(x, tuple(start), (1,) * rank, (1,) * rank)
    layer.set_input(2, ctx.elementwise(ctx.shape_of(x), ctx.const(grow, "int64"), "SUM"))
    layer.mode = getattr(ctx.trt.SampleMode, mode)
    if fill is not None:
        layer.set_input(4, fill)
    return ctx.out(layer, "pad")


def known_pad_mode(node, **_):
    mode = _pad_mode(node)
    assert mode in PAD_MODES, f"pad mode {mode!r} has no Slice mode"


def _emit_triangle(ctx, node):
    x = ctx.input("self")
    shape = node.meta("self").shape
    rows, cols = shape[-2], shape[-1]
    k = node.arg("diagonal", 0)
    triu = node.op == "aten.triu.default"
    if isinstance(rows, int) and isinstance(cols, int):
        i = torch.arange(rows).reshape(-1, 1)
        j = torch.arange(cols).reshape(1, -1)
        mask = ctx.const((j - i >= k) if triu else (j - i <= k), "bool")
    else:  # symbolic sizes: the mask from two aranges, j - i compared with the diagonal
        offset = ctx.elementwise(ctx.reshape(ctx.arange(cols), [1, cols]), ctx.reshape(ctx.arange(rows), [rows, 1]), "SUB")
        bound = ctx.const([[k - 1 if triu else k + 1]], "int64")
        mask = ctx.elementwise(offset, bound, "GREATER" if triu else "LESS")
    zero = ctx.const(0, ctx.dtype(x), shape=())
    cond, a, b = ctx.broadcast(mask, x, zero)
    return ctx.out(ctx.net.add_select(cond, a, b), "triangle")


def _emit_diff(ctx, node):
    """cat(prepend, x, append) along dim, then n times: two Slices offset by one, SUB (XOR for bool). Other dims may
    be dynamic (their sizes come from shape tensors)."""
    meta = node.meta("self")
    rank = meta.rank
    dim = node.arg("dim", -1) % rank
    parts = [ctx.input(n) for n in ("prepend", "self", "append") if node.meta(n) is not None]
    length = sum(node.meta(n).shape[dim] for n in ("prepend", "self", "append") if node.meta(n) is not None)
    x = parts[0]
    if len(parts) > 1:
        dtype = ctx.dtype(ctx.input("self"))
        layer = ctx.net.add_concatenation([ctx.cast(p, dtype) for p in parts])
        layer.axis = dim
        x = ctx.out(layer, "cat")
    size = list(meta.shape)
    for _ in range(node.arg("n", 1)):
        length -= 1
        size[dim] = length
        start = [0] * rank
        start[dim] = 1
        hi = _slice_layer(ctx, x, start, size, [1] * rank)
        lo = _slice_layer(ctx, x, [0] * rank, size, [1] * rank)
        x = ctx.elementwise(hi, lo, "XOR" if meta.dtype == "bool" else "SUB")
    return x


rule_identity = strategy(
    "shape/identity",
    op=["aten.alias.default", "aten.contiguous.default", "aten.clone.default", "aten.detach.default",
        "aten.lift_fresh_copy.default", "aten.to.device"], kind="direct",
    layers="no layer: the tensor passes through (TensorRT has no memory format or device per tensor); "
           "a Cast where to.device also changes the dtype (x.to(other_tensor))",
    checks=trt_checks(), emit=lambda ctx, node: ctx.cast(emit_identity(ctx, node), ctx.output_dtype()),
    examples=cases((lambda a: a.contiguous().clone(), t(2, 3)), (lambda a: torch.ops.aten.alias(a) * 2, t(2, 3)),
                   (lambda a: a.t().contiguous() * 2, t(2, 3)), (lambda a: a.detach() * 2, t(2, 3)),
                   (lambda a: a + torch.tensor([1.0, 2.0, 3.0]), t(2, 3)),
                   (lambda a, b: a.to(b).view(-1).sum(), t(2, 3) * 4, t(2, dtype=torch.int32))))

rule_slice = strategy(
    "shape/slice", op=["aten.slice.Tensor"], kind="direct",
    layers="Slice (start, size, stride; negative ends resolved)", checks=trt_checks(int_arg("step")), emit=_emit_slice,
    examples=cases((lambda a: a[:, 1:-1:2], t(4, 8))))

rule_select = strategy(
    "shape/select", op=["aten.select.int"], kind="direct",
    layers="Gather with a constant scalar index (drops the dim)", checks=trt_checks(int_arg("index")),
    emit=_emit_select,
    examples=cases((lambda a: a[:, 2], t(4, 8))))

rule_narrow = strategy(
    "shape/narrow", op=["aten.narrow.default"], kind="direct",
    layers="Slice", checks=trt_checks(), emit=_emit_narrow,
    examples=cases((lambda a: a.narrow(1, 2, 3), t(4, 8))))

rule_cat = strategy(
    "shape/cat", op=["aten.cat.default", "aten.concat.default"], kind="direct",
    layers="Concatenation on one axis", checks=trt_checks(), emit=_emit_cat,
    examples=cases((lambda a, b: torch.cat([a, b], -1), t(2, 3), t(2, 5)),
                   (lambda a, b: torch.concat([a, b]), t(2, 3), t(1, 3))))

rule_stack = strategy(
    "shape/stack", op=["aten.stack.default"], kind="decompose",
    layers="Unsqueeze each input, then Concatenation", checks=trt_checks(), emit=_emit_stack,
    examples=cases((lambda a, b: torch.stack([a, b], 1), t(2, 3), t(2, 3))))

rule_split = strategy(
    "shape/split", op=["aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int"],
    kind="decompose",
    layers="one Slice per piece", checks=trt_checks(constant_dims("split_size", "split_sizes", "chunks"),
                                                    split_dim_static), emit=_emit_split,
    examples=cases((lambda a: a.split(2, -1), t(2, 6)), (lambda a: a.split([1, 3, 2], 1), t(2, 6)),
                   (lambda a: a.chunk(4, 1), t(2, 6)), (lambda a: a.unbind(0), t(2, 6))))

rule_flip = strategy(
    "shape/flip", op=["aten.flip.default"], kind="direct",
    layers="Slice with stride -1 on the flipped dims", checks=trt_checks(), emit=_emit_flip,
    examples=cases((lambda a: a.flip(-1), t(2, 6))))

rule_pad = strategy(
    "shape/pad", op=["aten.constant_pad_nd.default", "aten.pad.default", "aten.reflection_pad1d.default",
                     "aten.reflection_pad2d.default", "aten.reflection_pad3d.default", "aten.replication_pad1d.default",
                     "aten.replication_pad2d.default", "aten.replication_pad3d.default", "aten._pad_circular.default"],
    kind="direct",
    layers="Slice with a negative start: FILL mode with the pad value, REFLECT, CLAMP (replicate) or WRAP (circular)",
    checks=trt_checks(known_pad_mode), emit=_emit_pad,
    examples=cases((lambda a: torch.nn.functional.pad(a, (1, 2)), t(2, 6)),
                   (lambda a: A.constant_pad_nd(a, [1, 2, 0, 1], 3.0), t(2, 6)),
                   (lambda a: A._pad_circular(a, [2, 1]), t(2, 3, 6)),
                   (lambda a: A.reflection_pad1d(a, [2, 1]), t(2, 3, 6)),
                   (lambda a: A.reflection_pad2d(a, [1, 2, 2, 1]), t(2, 3, 4, 5)),
                   (lambda a: A.reflection_pad3d(a, [1, 0, 0, 1, 1, 1]), t(1, 2, 3, 4, 5)),
                   (lambda a: A.replication_pad1d(a, [2, 1]), t(2, 3, 6)),
                   (lambda a: A.replication_pad2d(a, [1, 2, 2, 1]), t(2, 3, 4, 5)),
                   (lambda a: A.replication_pad3d(a, [1, 0, 0, 1, 1, 1]), t(1, 2, 3, 4, 5))))

rule_triu = strategy(
    "shape/triu", op=["aten.triu.default", "aten.tril.default"], kind="decompose",
    layers="a triangular mask (a constant, or two aranges over symbolic sizes), Select against zeros",
    checks=trt_checks(), emit=_emit_triangle,
    examples=cases((lambda a: a.triu(1), t(4, 4)), (lambda a: a.tril(), t(2, 4, 3))))

rule_diff = strategy(
    "shape/diff", op=["aten.diff.default"], kind="decompose",
    layers="Concatenation of prepend/x/append, then n times two Slices offset by one and ElementWise SUB (XOR for bool)",
    checks=trt_checks(diff_static_dim), emit=_emit_diff,
    examples=cases((lambda a: torch.diff(a, dim=-1), t(3, 6))))


def _emit_roll(ctx, node):
    """out[i] = x[(i - shift) mod n] on each rolled dim: one Slice in WRAP mode starting at -shift mod n. Without dims
    the flattened tensor rolls. Dims that are not rolled may be dynamic."""
    x = ctx.input("self")
    meta = node.meta("self")
    shifts, dims = list(node.arg("shifts")), list(node.arg("dims") or [])
    if not dims:
        x, shape, dims = ctx.reshape(x, [-1]), [meta.numel], [0]
    else:
        shape = list(meta.shape)
    rank = len(shape)
    start = [0] * rank
    for shift, d in zip(shifts, dims):
        d %= rank
        start[d] = (start[d] - shift) % shape[d]
    if static(shape):
        out = _slice_layer(ctx, x, start, shape, [1] * rank, mode="WRAP")
    else:
        layer = ctx.net.add_slice(x, tuple(start), (1,) * rank, (1,) * rank)
        layer.set_input(2, ctx.shape_of(x))
        layer.mode = ctx.trt.SampleMode.WRAP
        out = ctx.out(layer, "roll")
    return out if node.arg("dims") else ctx.reshape(out, list(meta.shape))


def rolled_dims_static(node, **_):
    meta = node.meta("self")
    dims = node.arg("dims") or []
    rolled = [meta.shape[d % meta.rank] for d in dims] if dims else list(meta.shape)
    assert all(isinstance(d, int) for d in rolled), f"rolled dims {rolled} are dynamic; the wrap offset is fixed at build time"
    assert all(isinstance(v, int) for v in node.arg("shifts")), "shifts are not constant ints"


rule_roll = strategy(
    "shape/roll", op=["aten.roll.default"], kind="direct",
    layers="Slice in WRAP mode starting at -shift on each rolled dim", checks=trt_checks(rolled_dims_static),
    emit=_emit_roll,
    examples=cases((lambda a: torch.roll(a, (1, -2), (0, 1)), t(4, 6))))

A = torch.ops.aten


def broadcast_to(ctx, x, dims):
    """x broadcast to ``dims`` (the builder's dims: ints or symbols): a Slice with stride 0 on x's unit dims."""
    x = ctx.unsqueeze_to(x, len(dims))
    stride = [0 if (isinstance(s, int) and s == 1 and d != 1) else 1 for s, d in zip(x.shape, dims)]
    return ctx.slice(x, [0] * len(dims), dims, stride)


def _emit_copy(ctx, node):
    """copy(self, src): src broadcast to self's shape, in self's dtype."""
    return ctx.cast(broadcast_to(ctx, ctx.input("src"), out_dims(node)), ctx.output_dtype())


rule_copy = strategy(
    "shape/copy", op="aten.copy.default", kind="direct",
    layers="Slice with stride 0 (broadcast src to self's shape), Cast", checks=trt_checks(), emit=_emit_copy,
    examples=cases((lambda a, b: A.copy.default(a, b), t(2, 3), t(3))))

rule_reshape_copy = strategy(
    "shape/reshape-copy", op="aten._reshape_copy.default", kind="direct",
    layers="Shuffle (a reshape; a copy is free)", checks=trt_checks(static_arg("self")),
    emit=lambda ctx, node: ctx.reshape(ctx.input("self"), out_dims(node)),
    examples=cases((lambda a: A._reshape_copy.default(a, [3, 2]), t(2, 3))))

rule_tile = strategy(
    "shape/tile", op="aten.tile.default", kind="direct",
    layers="Slice in WRAP mode over the tiled size (as repeat)", checks=trt_checks(), emit=_emit_repeat,
    examples=cases((lambda a: a.tile((2, 1, 3)), t(2, 3))))


def rank_four(node, **_):
    meta = node.meta("self")
    assert meta.rank == 4, f"input of rank {meta.rank}: only [N, C, H, W] is decomposed; flatten leading dims into N in the model"
    assert isinstance(meta.shape[1], int), f"channels {meta.shape[1]} are dynamic; the shuffle needs them at build time"


def _emit_pixel_shuffle(ctx, node):
    """[N, C r², H, W] -> [N, C, r, r, H, W] -> [N, C, H, r, W, r] -> [N, C, H r, W r] (unshuffle: the reverse)."""
    x = ctx.input("self")
    n, c, h, w = node.meta("self").shape
    o = out_dims(node)
    if node.op == "aten.pixel_shuffle.default":
        r = node.arg("upscale_factor")
        split, order = [n, o[1], r, r, h, w], (0, 1, 4, 2, 5, 3)
    else:
        r = node.arg("downscale_factor")
        split, order = [n, c, o[2], r, o[3], r], (0, 1, 3, 5, 2, 4)
    layer = ctx.net.add_shuffle(ctx.reshape(x, split))
    layer.first_transpose = order
    return ctx.reshape(ctx.out(layer, "transpose"), o)


rule_pixel_shuffle = strategy(
    "shape/pixel-shuffle", op=["aten.pixel_shuffle.default", "aten.pixel_unshuffle.default"], kind="decompose",
    layers="Shuffle (reshape), Shuffle (transpose), Shuffle (reshape)", checks=trt_checks(rank_four),
    emit=_emit_pixel_shuffle,
    examples=cases((lambda a: F.pixel_shuffle(a, 2), t(1, 8, 2, 3)))
    + [accept(lambda a: F.pixel_unshuffle(a, 2), t(2, 3, 4, 6))])

A = torch.ops.aten

rule_split_sizes = strategy(
    "shape/split-sizes", op="aten.split.sizes", kind="decompose",
    layers="one Slice per piece, of the given sizes", checks=trt_checks(constant_dims("split_size")), emit=_emit_split,
    examples=cases((lambda a: [p * 2 for p in A.split.sizes(a, [2, 1, 3], 1)], t(2, 6))))
