"""Layout and shape ops: IShuffleLayer, ISliceLayer, IConcatenationLayer, IGatherLayer with constant indices."""

import torch

from opmap.loading.graph import Ref

from opmap.rules.common import define, emit_identity, int_arg, out_dims, static, t

ns = globals()


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
    layer = ctx.net.add_shuffle(x)
    layer.first_transpose = tuple(perm)
    return ctx.out(layer, "permute")


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
     "Shuffle first_transpose", lambda a: a.permute(1, 0), _emit_permute),
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
    "shape/permute": [lambda a: a.t() * 2, lambda a: a.T * 2],
    "shape/squeeze": [lambda a: a.reshape(1, 4, 1, 6).squeeze() * 2, lambda a: a.reshape(1, 4, 1, 6).squeeze((0, 2)) * 2],
    "shape/expand": [lambda a: a[:1].expand_as(a) * 2],
}
for id, ops, layers, fn, emit in SHUFFLE:
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(4, 6)), examples=[(f, t(4, 6)) for f in MORE.get(id, ())], emit=emit)


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


define(ns, "shape/identity", ["aten.alias.default", "aten.contiguous.default", "aten.clone.default", "aten.detach.default",
                              "aten.lift_fresh_copy.default", "aten.to.device"],
       "direct", layers="no layer: the tensor passes through (TensorRT has no memory format or device per tensor); "
                        "a Cast where to.device also changes the dtype (x.to(other_tensor))",
       example=(lambda a: a.contiguous().clone(), t(2, 3)),
       examples=[(lambda a: torch.ops.aten.alias(a) * 2, t(2, 3)), (lambda a: a.t().contiguous() * 2, t(2, 3)),
                 (lambda a: a.detach() * 2, t(2, 3)), (lambda a: a + torch.tensor([1.0, 2.0, 3.0]), t(2, 3)),
                 (lambda a, b: a.to(b).view(-1).sum(), t(2, 3) * 4, t(2, dtype=torch.int32))],
       emit=lambda ctx, node: ctx.cast(emit_identity(ctx, node), ctx.output_dtype()))
define(ns, "shape/slice", ["aten.slice.Tensor"], "direct", layers="Slice (start, size, stride; negative ends resolved)",
       example=(lambda a: a[:, 1:-1:2], t(4, 8)), checks=[int_arg("step")], emit=_emit_slice)
define(ns, "shape/select", ["aten.select.int"], "direct", layers="Gather with a constant scalar index (drops the dim)",
       example=(lambda a: a[:, 2], t(4, 8)), checks=[int_arg("index")], emit=_emit_select)
define(ns, "shape/narrow", ["aten.narrow.default"], "direct", layers="Slice", example=(lambda a: a.narrow(1, 2, 3), t(4, 8)), emit=_emit_narrow)
define(ns, "shape/cat", ["aten.cat.default", "aten.concat.default"], "direct", layers="Concatenation on one axis",
       example=(lambda a, b: torch.cat([a, b], -1), t(2, 3), t(2, 5)), examples=[(lambda a, b: torch.concat([a, b]), t(2, 3), t(1, 3))],
       emit=_emit_cat)
define(ns, "shape/stack", ["aten.stack.default"], "decompose", layers="Unsqueeze each input, then Concatenation",
       example=(lambda a, b: torch.stack([a, b], 1), t(2, 3), t(2, 3)), emit=_emit_stack)
define(ns, "shape/split", ["aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int"],
       "decompose", layers="one Slice per piece", example=(lambda a: a.split(2, -1), t(2, 6)),
       examples=[(lambda a: a.split([1, 3, 2], 1), t(2, 6)), (lambda a: a.chunk(4, 1), t(2, 6)), (lambda a: a.unbind(0), t(2, 6))],
       checks=[constant_dims("split_size", "split_sizes", "chunks"), split_dim_static], emit=_emit_split)
define(ns, "shape/flip", ["aten.flip.default"], "direct", layers="Slice with stride -1 on the flipped dims",
       example=(lambda a: a.flip(-1), t(2, 6)), emit=_emit_flip)
define(ns, "shape/pad", ["aten.constant_pad_nd.default", "aten.pad.default", "aten.reflection_pad1d.default",
                         "aten.reflection_pad2d.default", "aten.reflection_pad3d.default", "aten.replication_pad1d.default",
                         "aten.replication_pad2d.default", "aten.replication_pad3d.default", "aten._pad_circular.default"], "direct",
       layers="Slice with a negative start: FILL mode with the pad value, REFLECT, CLAMP (replicate) or WRAP (circular)",
       example=(lambda a: torch.nn.functional.pad(a, (1, 2)), t(2, 6)),
       examples=[(lambda a: A.constant_pad_nd(a, [1, 2, 0, 1], 3.0), t(2, 6)), (lambda a: A._pad_circular(a, [2, 1]), t(2, 3, 6)),
                 (lambda a: A.reflection_pad1d(a, [2, 1]), t(2, 3, 6)), (lambda a: A.reflection_pad2d(a, [1, 2, 2, 1]), t(2, 3, 4, 5)),
                 (lambda a: A.reflection_pad3d(a, [1, 0, 0, 1, 1, 1]), t(1, 2, 3, 4, 5)),
                 (lambda a: A.replication_pad1d(a, [2, 1]), t(2, 3, 6)), (lambda a: A.replication_pad2d(a, [1, 2, 2, 1]), t(2, 3, 4, 5)),
                 (lambda a: A.replication_pad3d(a, [1, 0, 0, 1, 1, 1]), t(1, 2, 3, 4, 5))],
       checks=[known_pad_mode], emit=_emit_pad)
define(ns, "shape/triu", ["aten.triu.default", "aten.tril.default"], "decompose",
       layers="a triangular mask (a constant, or two aranges over symbolic sizes), Select against zeros",
       example=(lambda a: a.triu(1), t(4, 4)), examples=[(lambda a: a.tril(), t(2, 4, 3))], emit=_emit_triangle)
define(ns, "shape/diff", ["aten.diff.default"], "decompose",
       layers="Concatenation of prepend/x/append, then n times two Slices offset by one and ElementWise SUB (XOR for bool)",
       example=(lambda a: torch.diff(a, dim=-1), t(3, 6)), emit=_emit_diff, checks=[diff_static_dim])


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


define(ns, "shape/roll", ["aten.roll.default"], "direct", layers="Slice in WRAP mode starting at -shift on each rolled dim",
       example=(lambda a: torch.roll(a, (1, -2), (0, 1)), t(4, 6)), checks=[rolled_dims_static], emit=_emit_roll)
