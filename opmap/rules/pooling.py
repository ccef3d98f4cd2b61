"""Pooling: IPoolingLayer and Reduce (max/avg pooling, adaptive pooling, max pooling with indices, fractional max
pooling).

Max pooling's indices (the flat position of each window's maximum in its input plane, what ``max_unpool`` takes).

``pool/max3d-values``: ``max_pool3d_with_indices`` where only the values are read, PoolingNd MAX as ``pool/max`` maps
the 3-D pooling without indices. ``pool/max-with-indices``: both outputs, as a running maximum over the window
positions, for graphs that read the indices (PoolingNd yields the maxima only).
"""

import itertools
import math

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, float_input, outputs_unused, promoted_float_input, t, trt_checks, trt_types
from opmap.rules.conv import (_spatial_args, _to_2d, ceil_mode_sizes_agree, no_ceil_mode_with_dilation,
                              no_partial_average_window, one_window_over_the_input, spatial_rank)
from opmap.rules.emitting import in_float32, promoting


def _emit_pool(ctx, node):
    is_max = "max_pool" in node.op
    if not is_max:  # a half average sums its window in float32 and rounds once, as PyTorch's does
        x, own = in_float32(ctx, ctx.input("self"))
        return ctx.cast(_pool(ctx, node, x, is_max), own)
    return _pool(ctx, node, ctx.input("self"), is_max)


def _pool(ctx, node, x, is_max):
    spatial = ctx.rank(x) - 2
    kernel, = _spatial_args(node, spatial, "kernel_size")
    stride = node.arg("stride") or kernel
    stride = list(stride) * spatial if len(stride) == 1 else list(stride)
    padding, = _spatial_args(node, spatial, "padding")
    if one_window_over_the_input(node, spatial, kernel, padding) and node.op != "aten.max_pool2d_with_indices.default":
        # one window covering the whole input (EfficientNet's 320x320 kernel on a 1x1 map, with ceil_mode): TensorRT
        # refuses a window larger than its input, and PyTorch clips it to the input, so it is a global reduction
        axes = ctx.axes_mask(range(ctx.rank(x) - spatial, ctx.rank(x)), ctx.rank(x))
        op = ctx.trt.ReduceOperation.MAX if is_max else ctx.trt.ReduceOperation.AVG
        return ctx.out(ctx.net.add_reduce(x, op, axes, True), "global-pool")
    x, restore = _to_2d(ctx, x, spatial)
    if restore is not None:
        kernel, stride, padding = [1] + kernel, [1] + stride, [0] + padding
    layer = ctx.net.add_pooling_nd(x, ctx.trt.PoolingType.MAX if is_max else ctx.trt.PoolingType.AVERAGE, tuple(kernel))
    layer.stride_nd, layer.padding_nd = tuple(stride), tuple(padding)
    if node.arg("ceil_mode", False) and is_max:  # average pooling's windows fit (its rule checks): rounding down is the same
        layer.padding_mode = ctx.trt.PaddingMode.EXPLICIT_ROUND_UP
    if not is_max:
        layer.average_count_excludes_padding = not node.arg("count_include_pad", True)
    out = ctx.out(layer, "pool")
    if restore is not None:
        out = ctx.reshape(out, list(node.out.shape))
    return [out, None] if node.op == "aten.max_pool2d_with_indices.default" else out


def _emit_adaptive_avg(ctx, node):
    """Evenly dividing windows: PoolingNd AVERAGE with kernel = stride = in / out. TensorRT pools 4-D/5-D tensors
    only, so any other rank is viewed as [-1, 1, (1,) *spatial] around the pooling (leading dims may be dynamic). A
    half input is averaged in float32 and rounded once, as PyTorch does."""
    x, own = in_float32(ctx, ctx.input("self"))
    return ctx.cast(_adaptive_avg(ctx, node, x), own)


def _adaptive_avg(ctx, node, x):
    rank = ctx.rank(x)
    out_size = list(node.arg("output_size"))
    n = len(out_size)
    spatial = list(node.meta("self").shape[-n:])
    if all(o == 1 for o in out_size):
        axes = ctx.axes_mask(range(rank - n, rank), rank)
        return ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.AVG, axes, True), "global-avg")
    kernel = [s // o for s, o in zip(spatial, out_size)]
    pool_rank = max(n + 2, 4)
    if rank != pool_rank or n != rank - 2:
        x = ctx.reshape(x, [-1] + [1] * (pool_rank - 1 - n) + spatial)
        kernel = [1] * (pool_rank - 2 - n) + kernel
    layer = ctx.net.add_pooling_nd(x, ctx.trt.PoolingType.AVERAGE, tuple(kernel))
    layer.stride_nd = tuple(kernel)
    out = ctx.out(layer, "adaptive-avg")
    return out if ctx.rank(out) == node.out.rank and n == rank - 2 else ctx.reshape(out, list(node.out.shape))


def indices_unused(node, graph, **_):
    """PoolingNd MAX yields the maxima only, not where they were: ``*_with_indices``' indices must be unread."""
    if node.op.endswith("_with_indices.default"):
        outputs_unused(node, graph, {1: "indices"})


rule_max = strategy(
    "pool/max", op=["aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default",
                    "aten.max_pool2d_with_indices.default"], kind="direct",
    layers="PoolingNd MAX",
    checks=trt_checks(promoted_float_input, spatial_rank(1, 3), no_ceil_mode_with_dilation, indices_unused,
                      ceil_mode_sizes_agree),
    emit=promoting(_emit_pool),
    examples=cases((lambda a: F.max_pool2d(a, 2), t(1, 3, 8, 8)),
                   (lambda a: F.max_pool1d(a, 3, 2), t(2, 3, 9)), (lambda a: F.max_pool3d(a, 2, padding=1), t(1, 2, 4, 5, 4)),
                   accept(lambda a: F.max_pool2d(a, 3, 2, padding=1), t(1, 3, 7, 7), decompose=True),  # with_indices
                   reject(lambda a: F.max_pool2d(a, 2, return_indices=True)[1], t(1, 3, 8, 8), match="indices"),
                   bad=(lambda a: F.max_pool2d(a, 2, dilation=2), t(1, 3, 8, 8)), match="dilation"))

rule_avg = strategy(
    "pool/avg", op=["aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default"], kind="direct",
    layers="PoolingNd AVERAGE (count_include_pad mapped to average_count_excludes_padding)",
    checks=trt_checks(promoted_float_input, spatial_rank(1, 3), no_partial_average_window), emit=promoting(_emit_pool),
    examples=cases((lambda a: F.avg_pool2d(a, 2), t(1, 3, 8, 8)),
                   (lambda a: F.avg_pool1d(a, 3, 2, padding=1), t(2, 3, 9)),
                   (lambda a: F.avg_pool3d(a, 2, ceil_mode=True), t(1, 2, 4, 6, 4)),
                   bad=(lambda a: F.avg_pool3d(a, 2, ceil_mode=True), t(1, 2, 4, 5, 4)), match="hangs past"))

rule_adaptive_avg = strategy(
    "pool/adaptive-avg", op=["aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
                             "aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool3d.default",
                             "aten._adaptive_avg_pool3d.default"], kind="direct",
    layers="Reduce AVG when the output is 1x1, else PoolingNd AVERAGE with derived kernel and stride (viewed as 4-D/5-D)",
    checks=trt_checks(promoted_float_input, lambda node, **_: _adaptive_divisible(node)),
    emit=promoting(_emit_adaptive_avg),
    examples=cases((lambda a: F.adaptive_avg_pool2d(a, 1), t(1, 3, 8, 8)),
                   accept(lambda a: F.adaptive_avg_pool3d(a, (1, 2, 2)), t(1, 2, 3, 4, 6), decompose=True),
                   bad=(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 8)), match="divide"))


def _adaptive_divisible(node):
    meta = node.meta("self")
    out = node.arg("output_size") or []
    spatial = meta.shape[-len(out):] if out else ()
    if all(o == 1 for o in out):
        return  # global average: a Reduce AVG over the spatial dims, whatever their (symbolic) sizes
    for size, o in zip(spatial, out):
        assert isinstance(size, int), f"input size {size} is dynamic; the adaptive window is fixed at build time"
        assert o == 1 or size % o == 0, f"input size {size} does not divide into {o} outputs; adaptive windows would be uneven"


MAX_ADAPTIVE_WINDOWS = 256  # windows over all pooled dims: each is a Slice and a Reduce


def adaptive_windows(out_size: int, in_size: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive window i over a dim: [floor(i * In / Out), ceil((i + 1) * In / Out)) as (start, length)."""
    spans = [(i * in_size // out_size, -(-(i + 1) * in_size // out_size)) for i in range(out_size)]
    return [(a, b - a) for a, b in spans]


def adaptive_windows_known(node, graph, **_):
    """Every pooled dim is static (its windows are fixed at build time) unless it pools to 1 (one Reduce over the whole
    dim, at any size); the windows are few enough to emit one Slice and Reduce each; max pooling's indices unread."""
    meta = node.meta("self")
    out = list(node.arg("output_size") or [])
    assert out and all(isinstance(o, int) for o in out), f"output_size={out!r} is not a list of constant ints"
    for size, o in zip(meta.shape[-len(out):], out):
        assert o == 1 or isinstance(size, int), (
            f"input size {size} is dynamic and pools to {o}: the adaptive windows are known only at run time")
    count = sum(o for o in out if o != 1)
    assert count <= MAX_ADAPTIVE_WINDOWS, f"{count} adaptive windows exceed {MAX_ADAPTIVE_WINDOWS} (a Slice and a Reduce each)"
    if "max_pool" in node.op:
        outputs_unused(node, graph, {1: "indices"})


def _emit_adaptive_windows(ctx, node):
    """Pooling is separable over the dims (a window is a box): per pooled dim, one Slice and one Reduce (AVG or MAX,
    keepdim) per output position, concatenated along the dim; a dim pooled to 1 is one Reduce over it."""
    x = ctx.input("self")
    out = list(node.arg("output_size"))
    op = "MAX" if "max_pool" in node.op else "AVG"
    rank, shape = ctx.rank(x), list(node.meta("self").shape)
    for k, o in enumerate(out):
        axis = rank - len(out) + k
        if o == 1:
            x = ctx.reduce(x, op, [axis], keepdim=True)
        else:
            parts = []
            for start, length in adaptive_windows(o, shape[axis]):
                window = ctx.slice(x, [start if d == axis else 0 for d in range(rank)],
                                   [length if d == axis else n for d, n in enumerate(shape)], [1] * rank)
                parts.append(ctx.reduce(window, op, [axis], keepdim=True))
            x = ctx.concat(parts, axis) if len(parts) > 1 else parts[0]
        shape[axis] = o
    return [x, None] if "max_pool" in node.op else x


rule_adaptive_windows = strategy(
    "pool/adaptive-windows", op=["aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool2d.default",
                                 "aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool3d.default",
                                 "aten._adaptive_avg_pool3d.default", "aten.adaptive_max_pool1d.default",
                                 "aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool3d.default"],
    kind="decompose",
    layers="per pooled dim, a Slice and a Reduce AVG/MAX per PyTorch window [floor(i·In/Out), ceil((i+1)·In/Out)), "
           "then Concatenation (uneven and overlapping windows too)",
    checks=trt_checks(promoted_float_input, adaptive_windows_known), emit=promoting(_emit_adaptive_windows),
    examples=cases((lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 7)),
                   (lambda a: F.adaptive_avg_pool1d(a, 3), t(4, 7)), (lambda a: F.adaptive_avg_pool1d(a, 5), t(2, 3, 7)),
                   (lambda a: F.adaptive_avg_pool3d(a, (2, 3, 1)), t(1, 2, 5, 7, 4)), (lambda a: F.adaptive_avg_pool2d(a, (5, 4)), t(2, 3, 3)),
                   accept(lambda a: F.adaptive_avg_pool2d(a, (3, 5)), t(1, 2, 7, 6), decompose=True),  # _adaptive_avg_pool2d
                   accept(lambda a: F.adaptive_avg_pool3d(a, 2), t(1, 2, 5, 3, 4), decompose=True),  # _adaptive_avg_pool3d
                   (lambda a: F.adaptive_max_pool1d(a, 3), t(2, 3, 7)), (lambda a: F.adaptive_max_pool2d(a, (3, 2)), t(1, 3, 7, 5)),
                   (lambda a: F.adaptive_max_pool3d(a, (2, 1, 3)), t(1, 2, 5, 4, 7)),
                   accept(lambda a: F.adaptive_avg_pool2d(a, 3), t(2, 3, 8, 7), dynamic_shapes=lambda: ({0: torch.export.Dim("b", max=8)},)),
                   bad=None)
    + [reject(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 7),
              dynamic_shapes=lambda: ({2: torch.export.Dim("h", min=4, max=16)},), match="dynamic and pools"),
       reject(lambda a: F.adaptive_max_pool2d(a, 3, return_indices=True)[1], t(1, 3, 8, 7), match="indices")])

MAX_WINDOW = 64  # window positions unrolled into Slice + compare + Select layers


def _emit_values(ctx, node):
    return [_emit_pool(ctx, node), None]


@strategy("pool/max3d-values", op="aten.max_pool3d_with_indices.default", kind="direct",
          examples=[accept(lambda a: F.max_pool3d(a, 2, return_indices=True)[0], t(1, 2, 4, 4, 4)),
                    accept(lambda a: F.max_pool3d(a, (3, 2, 2), stride=(2, 1, 2), padding=1, return_indices=True)[0], t(2, 2, 5, 4, 6)),
                    accept(lambda a: F.max_pool3d(a, 2, ceil_mode=True, return_indices=True)[0], t(1, 1, 5, 5, 3)),
                    reject(lambda a: F.max_pool3d(a, 2, return_indices=True)[1], t(1, 2, 4, 4, 4), match="indices"),
                    reject(lambda a: F.max_pool3d(a, 2, dilation=2, return_indices=True)[0], t(1, 2, 6, 6, 6), match="dilation")])
def rule_max_pool3d_values(node, graph):
    """PoolingNd MAX over the three spatial dims; the indices output must be unused."""
    trt_types(node)
    float_input(node)
    no_ceil_mode_with_dilation(node)
    indices_unused(node=node, graph=graph)


rule_max_pool3d_values.emit(_emit_values)


def _spatial(node) -> int:
    return 3 if "3d" in node.op else 2


def _window_args(node):
    spatial = _spatial(node)
    kernel, dilation, padding = _spatial_args(node, spatial, "kernel_size", "dilation", "padding")
    stride = list(node.arg("stride") or kernel)
    return kernel, (stride * spatial if len(stride) == 1 else stride), dilation, padding


def _static_window(node, **_):
    """The window table (each output position's input positions) is made at build time."""
    spatial = _spatial(node)
    sizes = node.meta("self").shape[-spatial:]
    assert all(isinstance(d, int) for d in sizes), f"spatial dims {list(sizes)} are dynamic; the position table is built for fixed sizes"
    kernel = _window_args(node)[0]
    assert math.prod(kernel) <= MAX_WINDOW, f"a window of {math.prod(kernel)} positions (over {MAX_WINDOW}) would unroll into that many layers"


def _emit_with_indices(ctx, node):
    """Each window position in turn, row-major as PyTorch scans: a strided Slice of the input padded with -inf, and the
    same Slice of a constant table of flat input positions; a strict GREATER (or a NaN, which PyTorch takes) replaces
    the running maximum and its position, so ties keep the first."""
    x = ctx.input("self")
    spatial = _spatial(node)
    shape = list(node.meta("self").shape)
    lead, sizes = shape[:-spatial], shape[-spatial:]
    kernel, stride, dilation, padding = _window_args(node)
    outs = list(node.out.shape[-spatial:])
    span = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(outs, stride, kernel, dilation)]
    table = torch.full(span, -1, dtype=torch.int64)  # flat positions; -1 where the window reads padding
    inside = tuple(slice(p, min(p + n, w)) for p, n, w in zip(padding, sizes, span))
    table[inside] = torch.arange(math.prod(sizes)).reshape(sizes)[tuple(slice(0, r.stop - r.start) for r in inside)]
    ones = [1] * len(lead)
    padded = ctx.slice(x, [0] * len(lead) + [-p for p in padding], lead + span, ones + [1] * spatial, mode="FILL",
                       fill=ctx.const(float("-inf"), ctx.dtype(x), shape=()))
    best = where = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * d for o, d in zip(offset, dilation)]
        value = ctx.slice(padded, [0] * len(lead) + start, lead + outs, ones + stride)
        picked = table[tuple(slice(b, b + (o - 1) * s + 1, s) for b, o, s in zip(start, outs, stride))]
        position = ctx.const(picked.reshape([1] * len(lead) + outs), "int64")
        if best is None:
            best, where = value, ctx.expand_to(position, lead + outs)
            continue
        nan = ctx.unary(ctx.elementwise(value, value, "EQUAL"), "NOT")
        take = ctx.elementwise(ctx.elementwise(value, best, "GREATER"), nan, "OR")
        best, where = ctx.where(take, value, best), ctx.where(take, position, where)
    return [best, where]


def _pool_indices(fn, **kw):
    return lambda a: fn(a, return_indices=True, **kw)


rule_max_with_indices = strategy(
    "pool/max-with-indices", op=["aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default"],
    kind="decompose",
    layers="per window position: Slice of the -inf-padded input, GREATER/NaN test, Select of value and "
           "flat position (a constant table)",
    checks=trt_checks(trt_types, promoted_float_input, _static_window), emit=promoting(_emit_with_indices),
    examples=cases((_pool_indices(F.max_pool2d, kernel_size=2), t(1, 3, 8, 8)),
                   (_pool_indices(F.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True), t(2, 2, 7, 6)),
                   (_pool_indices(F.max_pool2d, kernel_size=(2, 3), stride=1, dilation=2), t(3, 9, 8)),
                   (lambda a: F.max_unpool2d(*F.max_pool2d(a, 2, return_indices=True), 2), t(1, 2, 6, 6)),
                   (lambda a: F.max_pool2d(torch.round(a), 3, 1, return_indices=True), t(1, 1, 5, 5)),  # ties: the first
                   (_pool_indices(F.max_pool3d, kernel_size=2, padding=1), t(1, 2, 4, 5, 3)),
                   accept(_pool_indices(F.max_pool2d, kernel_size=2), t(3, 2, 6, 6),
                          dynamic_shapes=lambda: ({0: torch.export.Dim("batch", min=2, max=16)},)),
                   reject(_pool_indices(F.max_pool2d, kernel_size=2), t(1, 3, 8, 8), match="dynamic",
                          dynamic_shapes=lambda: ({2: torch.export.Dim("h", min=4, max=32)},)),
                   reject(_pool_indices(F.max_pool2d, kernel_size=9), t(1, 1, 9, 9), match="positions")))

fmp = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s)  # noqa: E731

fmp_indices = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s, return_indices=True)  # noqa: E731


def _fmp_static(node):
    meta = node.meta("self")
    assert meta is not None and meta.is_static, f"input {meta} has dynamic dims; the window table is computed at build time"
    assert all(isinstance(k, int) for k in node.arg("kernel_size")), "kernel_size is not constant"


def _indices_unused(node, graph):
    for user in graph.consumers(node):
        if user.op == "operator.getitem" and user.arg("arg1") == 1:
            assert not user.users and not graph.is_output(user), (
                f"the indices output is used by {', '.join(user.users) or 'the graph output'}; this strategy computes values only"
            )


def _starts(ctx, u, size, out, k):
    """PyTorch's window starts, in float32 as ATen computes them: int((i + u)·α) − int(u·α); the last is size − k."""
    dt = "float32"
    if out == 1:
        return ctx.const(torch.tensor([size - k], dtype=torch.int32), "int32", shape=[1, 1, 1])
    alpha = ctx.const(torch.tensor((size - k) / (out - 1), dtype=torch.float32), dt, shape=[1, 1, 1])
    i = ctx.const(torch.arange(out - 1, dtype=torch.float32), dt, shape=[1, 1, out - 1])
    scaled = ctx.unary(ctx.elementwise(ctx.elementwise(i, u, "SUM"), alpha, "PROD"), "FLOOR")
    offset = ctx.unary(ctx.elementwise(u, alpha, "PROD"), "FLOOR")
    starts = ctx.cast(ctx.elementwise(scaled, offset, "SUB"), "int32")
    last = ctx.expand_to(ctx.const(size - k, "int32", shape=[1, 1, 1]), [starts.shape[0], starts.shape[1], 1])
    layer = ctx.net.add_concatenation([starts, last])
    layer.axis = 2
    return ctx.out(layer, "starts")


def _emit_fmp_exact(ctx, node):
    x = ctx.input("self")
    n, c, h, w = node.meta("self").shape
    kh, kw = node.arg("kernel_size")
    oh, ow = node.arg("output_size")
    samples = ctx.cast(ctx.input("random_samples"), "float32")  # [N, C, 2]: (width sample, height sample)
    u_w = ctx.out(ctx.net.add_slice(samples, (0, 0, 0), (n, c, 1), (1, 1, 1)), "u-w")
    u_h = ctx.out(ctx.net.add_slice(samples, (0, 0, 1), (n, c, 1), (1, 1, 1)), "u-h")
    rows = ctx.elementwise(ctx.reshape(_starts(ctx, u_h, h, oh, kh), [n, c, oh, 1]),
                           ctx.const(torch.arange(kh, dtype=torch.int32), "int32", shape=[1, 1, 1, kh]), "SUM")
    cols = ctx.elementwise(ctx.reshape(_starts(ctx, u_w, w, ow, kw), [n, c, ow, 1]),
                           ctx.const(torch.arange(kw, dtype=torch.int32), "int32", shape=[1, 1, 1, kw]), "SUM")
    row_idx = ctx.expand_to(ctx.reshape(rows, [n, c, oh * kh, 1]), [n, c, oh * kh, w])
    picked = ctx.net.add_gather_v2(x, row_idx, ctx.trt.GatherMode.ELEMENT)
    picked.axis = 2
    by_rows = ctx.out(picked, "rows")  # [N, C, oh*kh, W]
    col_idx = ctx.expand_to(ctx.reshape(cols, [n, c, 1, ow * kw]), [n, c, oh * kh, ow * kw])
    picked = ctx.net.add_gather_v2(by_rows, col_idx, ctx.trt.GatherMode.ELEMENT)
    picked.axis = 3
    windows = ctx.reshape(ctx.out(picked, "cols"), [n, c, oh, kh, ow, kw])
    values = ctx.out(ctx.net.add_reduce(windows, ctx.trt.ReduceOperation.MAX, (1 << 3) | (1 << 5), False), "max")
    return [values, None]


@strategy("fmp/exact-samples", op="aten.fractional_max_pool2d.default", kind="decompose",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_exact_samples(node, graph):
    """Window starts from the samples as PyTorch computes them (floor((i+u)·α) − floor(u·α), last window at in−k),
    Gather of the kernel×kernel window elements, Reduce MAX. Exact for the same samples."""
    float_input(node)
    _fmp_static(node)
    assert node.arg("random_samples") is not None, "no random_samples input to compute the windows from"
    dtype = node.meta("self").dtype
    assert dtype == "float32", (f"input is {dtype}: PyTorch computes the window positions in the input's reduced precision, "
                                "whose rounding this strategy does not reproduce (the fuzzer found bfloat16 windows off by "
                                "one); run the pool in float32")
    _indices_unused(node, graph)


rule_fmp_exact_samples.emit(_emit_fmp_exact)

fmp_uneven = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s)  # noqa: E731


@strategy("fmp/maxpool-approx", op="aten.fractional_max_pool2d.default", kind="approximate",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),  # α = 2: the windows do not depend on the samples
                    accept(fmp_uneven, t(1, 2, 11, 11), torch.rand(1, 2, 2)),  # α = 3: they do
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_maxpool_approx(node, graph):
    """A deterministic MaxPool with stride floor(in/out) and the kernel that reaches the same output size.
    Its error against the random windows must be measured over many seeds before the planner may pick it."""
    float_input(node)
    _fmp_static(node)
    _indices_unused(node, graph)
    meta = node.meta("self")
    for size, out in zip(meta.shape[-2:], node.arg("output_size")):
        assert out <= size, f"output size {out} exceeds the input size {size}"


def _emit_fmp_maxpool(ctx, node):
    """MaxPool with stride floor(in/out) and the kernel that lands exactly on the output size."""
    x = ctx.input("self")
    spatial = node.meta("self").shape[-2:]
    out = node.arg("output_size")
    stride = [s // o for s, o in zip(spatial, out)]
    kernel = [s - (o - 1) * st for s, o, st in zip(spatial, out, stride)]
    layer = ctx.net.add_pooling_nd(x, ctx.trt.PoolingType.MAX, tuple(kernel))
    layer.stride_nd = tuple(stride)
    return [ctx.out(layer, "maxpool"), None]


rule_fmp_maxpool_approx.emit(_emit_fmp_maxpool)
