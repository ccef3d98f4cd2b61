"""Convolution, pooling and resizing: IConvolutionLayer, IDeconvolutionLayer, IPoolingLayer, IResizeLayer."""

import numpy as np
import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject
from opmap.rules.common import define, float_input, outputs_unused, static_arg, t

ns = globals()
A = torch.ops.aten


def spatial_rank(lo, hi):
    def spatial_dims(node, **_):
        meta = node.meta("input") or node.meta("self")
        spatial = meta.rank - 2
        assert lo <= spatial <= hi, f"{spatial} spatial dims; TensorRT's layer takes {lo} to {hi}"

    return spatial_dims


def channels_static(node, **_):
    meta = node.meta("input") or node.meta("self")
    assert meta.rank >= 2 and isinstance(meta.shape[1], int), "the channel dim is dynamic; convolution weights fix it at build time"


def no_ceil_mode_with_dilation(node, **_):
    dilation = node.arg("dilation") or [1]
    assert all(d == 1 for d in dilation), f"pooling with dilation {dilation}: TensorRT's Pooling has no dilation"


def ceil_mode_sizes_agree(node, **_):
    """ceil_mode max pooling: TensorRT rounds the output size up; PyTorch also drops a last window that would start in
    the right padding. Where that drop happens the sizes differ, and the rule refuses."""
    if "max_pool" not in node.op or not node.arg("ceil_mode", False):
        return
    meta, out = node.meta("self"), node.out
    spatial = meta.rank - 2
    kernel, padding = _spatial_args(node, spatial, "kernel_size", "padding")
    stride = node.arg("stride") or kernel
    stride = list(stride) * spatial if len(stride) == 1 else list(stride)
    if list(out.shape[-spatial:]) == [1] * spatial and not any(padding):
        return  # one window over the whole input: emitted as a global reduction
    for n, o, k, s_, p in zip(meta.shape[-spatial:], out.shape[-spatial:], kernel, stride, padding):
        assert isinstance(n, int) and isinstance(o, int), f"ceil_mode max pooling over a dynamic size {n}: its output size is known only at run time"
        rounded_up = -(-(n + 2 * p - k) // s_) + 1
        assert rounded_up == o, (f"ceil_mode max pooling over size {n} (kernel {k}, stride {s_}, padding {p}): PyTorch drops "
                                 f"a last window starting in the padding ({o} outputs), TensorRT's round-up keeps it ({rounded_up})")


def no_strided_dilated_deconvolution(node, graph, **_):
    """TensorRT builds a strided and dilated deconvolution only with constant weights (a model's parameters): with the
    kernel as a network tensor the builder stops ("Strided & Dilated Deconv are currently not supported")."""
    if "transpose" not in node.op and not node.arg("transposed", False):
        return
    stride, dilation = node.arg("stride") or [1], node.arg("dilation") or [1]
    weight = node.arg("weight")
    constant = getattr(weight, "node", None) in graph.params
    assert constant or not (any(s > 1 for s in stride) and any(d > 1 for d in dilation)), (
        f"a transposed convolution with stride {list(stride)} and dilation {list(dilation)} whose weight is computed in "
        "the graph: TensorRT's builder refuses strided and dilated deconvolution unless the kernel is a constant")


def no_partial_average_window(node, **_):
    """ceil_mode average pooling whose last window hangs past the padded input: PyTorch divides that window by its
    clipped size, TensorRT's divisor for it is unspecified (and the reference interpreter cannot verify one)."""
    if "avg_pool" not in node.op or not node.arg("ceil_mode", False):
        return
    meta, out = node.meta("self"), node.out
    spatial = meta.rank - 2
    sizes, outs = list(meta.shape[-spatial:]), list(out.shape[-spatial:])
    kernel, padding = _spatial_args(node, spatial, "kernel_size", "padding")
    stride = node.arg("stride") or kernel
    stride = list(stride) * spatial if len(stride) == 1 else list(stride)
    if outs == [1] * spatial and not any(padding):
        return  # one window over the whole input: emitted as a global reduction
    for n, o, k, s_, p in zip(sizes, outs, kernel, stride, padding):
        assert isinstance(n, int) and isinstance(o, int), (
            f"ceil_mode average pooling over a dynamic size {n}: whether its last window is partial is known only at run time")
        assert (o - 1) * s_ + k <= n + 2 * p, (
            f"ceil_mode average pooling: the last window over size {n} (kernel {k}, stride {s_}, padding {p}) hangs past the "
            "padded input, and PyTorch's divisor for it (the clipped window) is not TensorRT's; export with ceil_mode=False, "
            "or pad the input so the windows fit")


def _weight_array(ctx, name):
    ref = ctx.node.arg(name)
    if ref is None:
        return None
    tensor = ctx.nb.weights.get(ref.node)
    if tensor is None or ctx.quantized(name):
        return None  # a graph tensor (or a quantized weight: Q/DQ layers feed it): passed as a layer input
    dtype = np.float16 if ctx.compute("float32") == "float16" else np.float32
    arr = np.array(tensor.detach().float().numpy(), dtype=dtype, order="C")
    ctx.nb.keep.append(arr)
    return arr


def _spatial_args(node, spatial, *names):
    out = []
    for name in names:
        value = node.arg(name)
        value = list(value) if isinstance(value, (list, tuple)) else [value] * spatial
        out.append(value * spatial if len(value) == 1 else value)
    return out


def _padding(node, spatial, kernel, dilation):
    """(pre, post) padding per spatial dim. ``padding="same"`` (the ``.padding`` overloads, stride 1) pads
    dilation·(k-1) in all, the extra one at the end as PyTorch does; ``"valid"`` pads nothing."""
    mode = node.arg("padding")
    if mode == "valid":
        return [0] * spatial, [0] * spatial
    if mode == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [t // 2 for t in total], [t - t // 2 for t in total]
    pad, = _spatial_args(node, spatial, "padding")
    return pad, list(pad)


def _to_2d(ctx, x, spatial):
    """TensorRT's convolution and pooling take 2-D or 3-D windows: a 1-D op gets a unit height."""
    if spatial != 1:
        return x, None
    meta = ctx.meta("input") or ctx.meta("self")
    shape = list(meta.shape) if meta is not None else list(x.shape)  # symbolic dims by name, not TensorRT's -1
    return ctx.reshape(x, shape[:2] + [1] + shape[2:]), shape


def _emit_conv(ctx, node):
    x = ctx.input("input")
    spatial = ctx.rank(x) - 2
    transposed = node.op.startswith("aten.conv_transpose") or bool(node.arg("transposed", False))
    weight = _weight_array(ctx, "weight")
    bias = _weight_array(ctx, "bias")
    weight_tensor = None
    if weight is None:  # the kernel is a graph tensor: an input of the layer, with empty Weights
        weight_tensor = ctx.cast(ctx.input("weight"), ctx.compute("float32"))
        weight = np.zeros(tuple(node.meta("weight").shape), np.float32)
    bias_tensor = ctx.cast(ctx.input("bias"), ctx.compute("float32")) if bias is None and node.arg("bias") is not None else None
    stride, dilation = _spatial_args(node, spatial, "stride", "dilation")
    extra, = _spatial_args(node, spatial, "output_padding") if transposed and node.arg("output_padding") else ([0] * spatial,)
    kernel_sizes = list(node.meta("weight").shape[2:])
    padding, post = _padding(node, spatial, kernel_sizes, dilation)
    groups = node.arg("groups", 1)
    x, restore = _to_2d(ctx, x, spatial)
    if restore is not None:
        weight = weight.reshape(weight.shape[0], weight.shape[1], 1, weight.shape[2])
        if weight_tensor is not None:
            weight_tensor = ctx.reshape(weight_tensor, list(weight.shape))
        stride, padding, dilation, extra, post = [1] + stride, [0] + padding, [1] + dilation, [0] + extra, [0] + post
    if transposed and weight_tensor is None and any(d != 1 for d in dilation):
        weight, dilation = _dilate(weight, dilation), [1] * len(dilation)  # RTX has no strided and dilated deconvolution
        ctx.nb.keep.append(weight)
    kernel = tuple(weight.shape[2:])
    maps = weight.shape[1] * groups if transposed else weight.shape[0]
    w = ctx.trt.Weights() if weight_tensor is not None else ctx.trt.Weights(weight)
    # output_padding: PyTorch crops `padding` at the start and `padding - output_padding` at the end of the full
    # transposed output; where that is negative, the missing rows are zeros (plus bias) appended by a Slice.
    grow = [max(e - p, 0) for p, e in zip(padding, extra)]
    late_bias = None
    if any(grow) and (bias is not None or bias_tensor is not None):
        late_bias = ctx.const(torch.from_numpy(bias), ctx.compute("float32")) if bias is not None else bias_tensor
        bias, bias_tensor = None, None
    b = ctx.trt.Weights(bias) if bias is not None else ctx.trt.Weights()
    add = ctx.net.add_deconvolution_nd if transposed else ctx.net.add_convolution_nd
    layer = add(ctx.cast(x, ctx.compute("float32") if ctx.compute("float32") != "bfloat16" else "float32"), maps, kernel, w, b)
    if weight_tensor is not None:
        layer.set_input(1, weight_tensor)
    if bias_tensor is not None:
        layer.set_input(2, bias_tensor)
    layer.stride_nd, layer.num_groups, layer.dilation_nd = tuple(stride), groups, tuple(dilation)
    layer.pre_padding = tuple(padding)
    layer.post_padding = tuple(max(p - e, 0) for p, e in zip(padding, extra)) if transposed else tuple(post)
    out = ctx.out(layer, "conv")
    if any(grow):
        out = _grow_end(ctx, out, grow)
        if late_bias is not None:
            out = ctx.elementwise(out, ctx.reshape(late_bias, [1, -1] + [1] * len(grow)), "SUM")
    if restore is not None:
        out = ctx.reshape(out, list(node.out.shape))
    return ctx.cast(out, ctx.output_dtype())


def _dilate(weight, dilation):
    """The kernel with dilation - 1 zeros between taps: the same transposed convolution with dilation 1."""
    shape = [d * (k - 1) + 1 for k, d in zip(weight.shape[2:], dilation)]
    out = np.zeros(tuple(weight.shape[:2]) + tuple(shape), weight.dtype)
    out[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = weight
    return out


def _grow_end(ctx, x, grow):
    """Append ``grow[i]`` zero rows at the end of each spatial axis (a Slice in FILL mode, dynamic leading dims kept)."""
    rank = ctx.rank(x)
    spatial = len(grow)
    pad = ctx.const([0] * (rank - spatial) + list(grow), "int64")
    size = ctx.elementwise(ctx.shape_of(x), pad, "SUM")
    layer = ctx.net.add_slice(x, (0,) * rank, (1,) * rank, (1,) * rank)
    layer.set_input(2, size)
    layer.mode = ctx.trt.SampleMode.FILL
    layer.set_input(4, ctx.const(0, ctx.dtype(x), shape=()))
    return ctx.out(layer, "output-padding")


def _emit_pool(ctx, node):
    x = ctx.input("self")
    spatial = ctx.rank(x) - 2
    kernel, = _spatial_args(node, spatial, "kernel_size")
    stride = node.arg("stride") or kernel
    stride = list(stride) * spatial if len(stride) == 1 else list(stride)
    padding, = _spatial_args(node, spatial, "padding")
    is_max = "max_pool" in node.op
    out_spatial = list(node.out.shape[-spatial:])
    if out_spatial == [1] * spatial and not any(padding) and node.op != "aten.max_pool2d_with_indices.default":
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
    only, so any other rank is viewed as [-1, 1, (1,) *spatial] around the pooling (leading dims may be dynamic)."""
    x = ctx.input("self")
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


def _scales(node, spatial):
    """The scale factors the node was called with (PyTorch then maps coordinates by 1/scale), or None."""
    if node.arg("scale_factors") is not None:
        return [float(v) for v in node.arg("scale_factors")]
    names = {1: ["scales"], 2: ["scales_h", "scales_w"], 3: ["scales_d", "scales_h", "scales_w"]}[spatial]
    values = [node.arg(n) for n in names]
    return [float(v) for v in values] if all(v is not None for v in values) else None


def resize_layer(ctx, node):
    """A Resize over the spatial dims, sized as PyTorch sizes it. Called with scale factors, the layer gets the same
    scales (so TensorRT maps coordinates by 1/scale as PyTorch does, and the output size follows a dynamic input); with
    sizes, the output shape (batch and channels read from the input at run time). Returns (layer, align_corners)."""
    name = "input" if node.meta("input") is not None else "self"
    x = ctx.input(name)
    layer = ctx.net.add_resize(x)
    scales = _scales(node, ctx.rank(x) - 2)
    align = bool(node.arg("align_corners", False))
    if scales is not None and not align:
        layer.scales = (1.0, 1.0, *scales)
    elif node.meta(name).is_static:
        layer.shape = tuple(node.out.shape)
    else:
        lead = ctx.out(ctx.net.add_slice(ctx.shape_of(x), (0,), (2,), (1,)), "batch-channels")
        layer.set_input(1, ctx.shape_tensor([lead] + [d for d in node.out.shape[2:]]))
    return layer, align


def _emit_upsample(ctx, node):
    """Resize NEAREST or LINEAR with PyTorch's coordinate mapping (:func:`resize_layer` sizes it)."""
    layer, align = resize_layer(ctx, node)
    if "nearest" in node.op:  # PyTorch's nearest: src = floor(dst · in / out)
        layer.resize_mode = ctx.trt.InterpolationMode.NEAREST
        layer.coordinate_transformation = ctx.trt.ResizeCoordinateTransformation.ASYMMETRIC
        layer.nearest_rounding = ctx.trt.ResizeRoundMode.FLOOR
    else:
        layer.resize_mode = ctx.trt.InterpolationMode.LINEAR
        layer.coordinate_transformation = (ctx.trt.ResizeCoordinateTransformation.ALIGN_CORNERS if align
                                           else ctx.trt.ResizeCoordinateTransformation.HALF_PIXEL)
    return ctx.out(layer, "resize")


def static_spatial_output(node, **_):
    meta = node.out
    assert meta is not None and all(isinstance(d, int) for d in meta.shape[2:]) or _scales(node, meta.rank - 2) is not None, (
        f"output {meta} has dynamic spatial dims and no scale factors; the resize sizes are fixed at build time"
    )


define(ns, "conv/conv", ["aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default",
                         "aten._convolution.default", "aten.conv1d.padding", "aten.conv2d.padding", "aten.conv3d.padding"], "direct",
       layers="ConvolutionNd (1-D as 2-D with a unit dim), weights and bias as constants",
       example=(F.conv2d, t(1, 3, 8, 8), t(4, 3, 3, 3)),
       examples=[(F.conv3d, t(1, 2, 4, 5, 4), t(3, 2, 2, 3, 2)),
                 (lambda x, w: F.conv3d(x, w, padding="same"), t(1, 2, 4, 5, 4), t(3, 2, 2, 3, 2)),
                 accept(torch.nn.Conv2d(3, 4, 3, padding=1, stride=2), t(1, 3, 7, 7), decompose=True),  # convolution
                 accept(torch.nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1), t(1, 3, 4, 5), decompose=True),  # transposed
                 (lambda x, w, b: A._convolution(x, w, b, [1], [1], [2], False, [0], 1, False, False, True, True),
                  t(2, 3, 9), t(4, 3, 3), t(4))],
       checks=[float_input, static_arg("weight"), channels_static, spatial_rank(1, 3), no_strided_dilated_deconvolution],
       emit=_emit_conv)
define(ns, "conv/conv-transpose", ["aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input"],
       "direct", layers="DeconvolutionNd", example=(F.conv_transpose2d, t(1, 3, 8, 8), t(3, 4, 3, 3)),
       checks=[float_input, static_arg("weight"), channels_static, spatial_rank(1, 3), no_strided_dilated_deconvolution], emit=_emit_conv)
def indices_unused(node, graph, **_):
    """PoolingNd MAX yields the maxima only, not where they were: ``*_with_indices``' indices must be unread."""
    if node.op.endswith("_with_indices.default"):
        outputs_unused(node, graph, {1: "indices"})


define(ns, "pool/max", ["aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default",
                        "aten.max_pool2d_with_indices.default"], "direct", layers="PoolingNd MAX",
       example=(lambda a: F.max_pool2d(a, 2), t(1, 3, 8, 8)),
       examples=[(lambda a: F.max_pool1d(a, 3, 2), t(2, 3, 9)), (lambda a: F.max_pool3d(a, 2, padding=1), t(1, 2, 4, 5, 4)),
                 accept(lambda a: F.max_pool2d(a, 3, 2, padding=1), t(1, 3, 7, 7), decompose=True),  # with_indices
                 reject(lambda a: F.max_pool2d(a, 2, return_indices=True)[1], t(1, 3, 8, 8), match="indices")],
       bad=(lambda a: F.max_pool2d(a, 2, dilation=2), t(1, 3, 8, 8)), match="dilation",
       checks=[float_input, spatial_rank(1, 3), no_ceil_mode_with_dilation, indices_unused, ceil_mode_sizes_agree], emit=_emit_pool)
define(ns, "pool/avg", ["aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default"], "direct",
       layers="PoolingNd AVERAGE (count_include_pad mapped to average_count_excludes_padding)",
       example=(lambda a: F.avg_pool2d(a, 2), t(1, 3, 8, 8)),
       examples=[(lambda a: F.avg_pool1d(a, 3, 2, padding=1), t(2, 3, 9)), (lambda a: F.avg_pool3d(a, 2, ceil_mode=True), t(1, 2, 4, 6, 4))],
       bad=(lambda a: F.avg_pool3d(a, 2, ceil_mode=True), t(1, 2, 4, 5, 4)), match="hangs past",
       checks=[float_input, spatial_rank(1, 3), no_partial_average_window], emit=_emit_pool)
define(ns, "pool/adaptive-avg", ["aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
                                 "aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool3d.default",
                                 "aten._adaptive_avg_pool3d.default"], "direct",
       layers="Reduce AVG when the output is 1x1, else PoolingNd AVERAGE with derived kernel and stride (viewed as 4-D/5-D)",
       example=(lambda a: F.adaptive_avg_pool2d(a, 1), t(1, 3, 8, 8)),
       examples=[accept(lambda a: F.adaptive_avg_pool3d(a, (1, 2, 2)), t(1, 2, 3, 4, 6), decompose=True)],
       bad=(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 8)), match="divide",
       checks=[float_input, lambda node, **_: _adaptive_divisible(node)], emit=_emit_adaptive_avg)
define(ns, "resize/upsample", [f"aten.upsample_{m}.{o}" for m in ("nearest1d", "nearest2d", "nearest3d", "linear1d", "bilinear2d",
                                                                  "trilinear3d") for o in ("vec", "default")],
       "direct", layers="Resize NEAREST/LINEAR with PyTorch's coordinate transformation (align_corners or half-pixel) and "
                        "its scale factors where it was called with them",
       example=(lambda a: F.interpolate(a, scale_factor=2.0, mode="bilinear"), t(1, 3, 4, 4)),
       examples=[(lambda a: A.upsample_nearest1d(a, [7]), t(1, 2, 5)), (lambda a: A.upsample_nearest2d(a, [6, 8]), t(1, 2, 3, 5)),
                 (lambda a: A.upsample_nearest3d(a, [4, 6, 7]), t(1, 2, 3, 4, 5)),
                 (lambda a: A.upsample_linear1d(a, [7], True), t(1, 2, 5)),
                 (lambda a: A.upsample_bilinear2d(a, [6, 8], False), t(1, 2, 3, 5)),
                 (lambda a: A.upsample_trilinear3d(a, [4, 6, 7], True), t(1, 2, 3, 4, 5))],
       checks=[float_input, static_spatial_output],
       emit=_emit_upsample)


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


define(ns, "pool/adaptive-windows", ["aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool2d.default",
                                     "aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool3d.default",
                                     "aten._adaptive_avg_pool3d.default", "aten.adaptive_max_pool1d.default",
                                     "aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool3d.default"], "decompose",
       layers="per pooled dim, a Slice and a Reduce AVG/MAX per PyTorch window [floor(i·In/Out), ceil((i+1)·In/Out)), "
              "then Concatenation (uneven and overlapping windows too)",
       example=(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 7)),
       examples=[(lambda a: F.adaptive_avg_pool1d(a, 3), t(4, 7)), (lambda a: F.adaptive_avg_pool1d(a, 5), t(2, 3, 7)),
                 (lambda a: F.adaptive_avg_pool3d(a, (2, 3, 1)), t(1, 2, 5, 7, 4)), (lambda a: F.adaptive_avg_pool2d(a, (5, 4)), t(2, 3, 3)),
                 accept(lambda a: F.adaptive_avg_pool2d(a, (3, 5)), t(1, 2, 7, 6), decompose=True),  # _adaptive_avg_pool2d
                 accept(lambda a: F.adaptive_avg_pool3d(a, 2), t(1, 2, 5, 3, 4), decompose=True),  # _adaptive_avg_pool3d
                 (lambda a: F.adaptive_max_pool1d(a, 3), t(2, 3, 7)), (lambda a: F.adaptive_max_pool2d(a, (3, 2)), t(1, 3, 7, 5)),
                 (lambda a: F.adaptive_max_pool3d(a, (2, 1, 3)), t(1, 2, 5, 4, 7)),
                 accept(lambda a: F.adaptive_avg_pool2d(a, 3), t(2, 3, 8, 7), dynamic_shapes=lambda: ({0: torch.export.Dim("b", max=8)},))],
       bad=(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 7)), match="dynamic and pools",
       checks=[float_input, adaptive_windows_known], emit=_emit_adaptive_windows)
rule_adaptive_windows.examples = rule_adaptive_windows.examples[:-1] + (  # noqa: F821 (define made it)
    reject(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 7), dynamic_shapes=lambda: ({2: torch.export.Dim("h", min=4, max=16)},),
           match="dynamic and pools"),
    reject(lambda a: F.adaptive_max_pool2d(a, 3, return_indices=True)[1], t(1, 3, 8, 7), match="indices"))
