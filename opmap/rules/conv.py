"""Convolution: IConvolutionLayer, IDeconvolutionLayer (conv1d/2d/3d, conv_transpose, and col2im / F.fold).

``col2im`` (``F.fold``): sliding-window columns summed back into an image. Folding is a transposed convolution
whose kernel is one-hot: each column channel (c, i, j) adds into output channel c at window offset (i, j).
"""

import numpy as np
import torch
import torch.nn.functional as F

from opmap.building.builder import Masked
from opmap.loading.graph import Ref
from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, float_input, promoted_float_input, static_arg, t, trt_checks, trt_types
from opmap.rules.emitting import promoting

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


def one_window_over_the_input(node, spatial: int, kernel, padding) -> bool:
    """A pooling whose single window covers its whole (static) input: PyTorch clips the window to the input, so it is
    a global reduction. One output with a window smaller than the input (kernel 1, stride 3 over 2 elements) is not:
    that window reads the first elements only."""
    sizes = node.meta("self").shape[-spatial:]
    return (list(node.out.shape[-spatial:]) == [1] * spatial and not any(padding)
            and all(isinstance(n, int) and k >= n for n, k in zip(sizes, kernel)))


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
    if one_window_over_the_input(node, spatial, kernel, padding):
        return  # emitted as a global reduction
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
    if one_window_over_the_input(node, spatial, kernel, padding):
        return  # emitted as a global reduction
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


_ZERO_PADS = ("aten.constant_pad_nd.default", "aten.pad.default")


def _through_zero_pad(ctx, node, spatial):
    """``(tensor, pre, post)`` when the convolution's input is a constant zero pad of its spatial dims only (HF's
    TF-style ``F.pad`` before a conv): the pad's own input in the node's precision, and the pad's
    widths, which the convolution's zero padding takes instead (exact: a convolution over zeros padded on is one with
    more zero padding). The pad is still emitted for any other reader; with none, TensorRT drops it. None otherwise:
    an INT8 input (its Q/DQ reads the padded tensor), a 1-D convolution, negative (cropping) widths, a non-zero value,
    another mode, widths on the batch or channel dims."""
    ref = node.arg("input")
    graph = node._graph
    pad = graph.producer(ref) if isinstance(ref, Ref) and graph is not None else None
    if pad is None or pad.op not in _ZERO_PADS or "input" in ctx.quant or spatial < 2 or (ref.index or 0) != 0:
        return None
    widths, value = pad.arg("pad"), pad.arg("value", 0)
    if pad.op == "aten.pad.default" and (pad.arg("mode", "constant") != "constant"):
        return None
    if value not in (0, None) or not isinstance(widths, (list, tuple)) or len(widths) % 2:
        return None
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in widths):
        return None
    per_dim = [(widths[2 * i], widths[2 * i + 1]) for i in range(len(widths) // 2)]  # last dim first
    if any(w != (0, 0) for w in per_dim[spatial:]):  # widths on the channel or batch dim
        return None
    per_dim = (per_dim + [(0, 0)] * spatial)[:spatial][::-1]  # first spatial dim first
    source = pad.arg("self")
    t = ctx.tensor(source) if isinstance(source, Ref) else None
    meta = ctx.graph_meta(source) if t is not None else None
    if t is None or isinstance(t, Masked) or meta is None or meta.dtype != node.meta("input").dtype:
        return None
    if ctx.dtype(t) not in ("float32", "float16", "bfloat16"):  # an integer input is promoted through ctx.input
        return None
    return ctx.at_precision(t), [lo for lo, _ in per_dim], [hi for _, hi in per_dim]


def _emit_conv(ctx, node):
    spatial = len(node.meta("input").shape) - 2
    transposed = node.op.startswith("aten.conv_transpose") or bool(node.arg("transposed", False))
    folded = None if transposed else _through_zero_pad(ctx, node, spatial)
    x = folded[0] if folded is not None else ctx.input("input")
    weight = _weight_array(ctx, "weight")
    bias = _weight_array(ctx, "bias")
    conv_dt = ctx.compute("float32")
    if transposed and conv_dt == "bfloat16":
        conv_dt = "float32"  # TensorRT-RTX has no bfloat16 deconvolution (the build fails to type it)
    weight_tensor = None
    if weight is None:  # the kernel is a graph tensor: an input of the layer, with empty Weights
        weight_tensor = ctx.cast(ctx.input("weight"), conv_dt)
        weight = np.zeros(tuple(node.meta("weight").shape), np.float32)
    bias_tensor = ctx.cast(ctx.input("bias"), conv_dt) if bias is None and node.arg("bias") is not None else None
    stride, dilation = _spatial_args(node, spatial, "stride", "dilation")
    extra, = _spatial_args(node, spatial, "output_padding") if transposed and node.arg("output_padding") else ([0] * spatial,)
    kernel_sizes = list(node.meta("weight").shape[2:])
    padding, post = _padding(node, spatial, kernel_sizes, dilation)
    if folded is not None:
        padding, post = [p + lo for p, lo in zip(padding, folded[1])], [p + hi for p, hi in zip(post, folded[2])]
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
    if conv_dt == "bfloat16" and weight_tensor is None:  # numpy has no bfloat16: the kernel and bias go in as
        weight_tensor = ctx.const(torch.from_numpy(weight), conv_dt)  # constants cast to it (folded at build time)
        if bias is not None:
            bias_tensor, bias = ctx.const(torch.from_numpy(bias), conv_dt), None
    w = ctx.trt.Weights() if weight_tensor is not None else ctx.trt.Weights(weight)
    # output_padding: PyTorch crops `padding` at the start and `padding - output_padding` at the end of the full
    # transposed output; where that is negative, the missing rows are zeros (plus bias) appended by a Slice.
    grow = [max(e - p, 0) for p, e in zip(padding, extra)]
    late_bias = None
    if any(grow) and (bias is not None or bias_tensor is not None):
        late_bias = ctx.const(torch.from_numpy(bias), conv_dt) if bias is not None else bias_tensor
        bias, bias_tensor = None, None
    b = ctx.trt.Weights(bias) if bias is not None else ctx.trt.Weights()
    add = ctx.net.add_deconvolution_nd if transposed else ctx.net.add_convolution_nd
    layer = add(ctx.cast(x, conv_dt), maps, kernel, w, b)
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


rule_conv = strategy(
    "conv/conv", op=["aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default",
                     "aten._convolution.default", "aten.conv1d.padding", "aten.conv2d.padding", "aten.conv3d.padding"],
    kind="direct",
    layers="ConvolutionNd (1-D as 2-D with a unit dim), weights and bias as constants",
    checks=trt_checks(promoted_float_input, static_arg("weight"), channels_static, spatial_rank(1, 3),
                      no_strided_dilated_deconvolution),
    emit=promoting(_emit_conv),
    examples=cases((F.conv2d, t(1, 3, 8, 8), t(4, 3, 3, 3)),
                   (F.conv3d, t(1, 2, 4, 5, 4), t(3, 2, 2, 3, 2)),
                   (lambda x, w: F.conv3d(x, w, padding="same"), t(1, 2, 4, 5, 4), t(3, 2, 2, 3, 2)),
                   accept(torch.nn.Conv2d(3, 4, 3, padding=1, stride=2), t(1, 3, 7, 7), decompose=True),  # convolution
                   accept(torch.nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1), t(1, 3, 4, 5), decompose=True),  # transposed
                   (lambda x, w, b: A._convolution(x, w, b, [1], [1], [2], False, [0], 1, False, False, True, True),
                    t(2, 3, 9), t(4, 3, 3), t(4)),
                   # a zero pad before the convolution is read through (its widths join the convolution's padding);
                   # the others are kept: a non-zero value, a crop, widths on the channel dim, reflection
                   (lambda x, w: F.conv2d(F.pad(x, (1, 2, 0, 1)), w, padding=1, stride=2), t(1, 3, 8, 7), t(4, 3, 3, 3)),
                   (lambda x, w: F.conv2d(F.pad(x, (0, 1, 0, 1), value=0.5), w), t(1, 3, 8, 7), t(4, 3, 3, 3)),
                   (lambda x, w: F.conv2d(F.pad(x, (1, -1, 2, 0)), w), t(1, 3, 8, 7), t(4, 3, 3, 3)),
                   (lambda x, w: F.conv2d(F.pad(x, (1, 1, 0, 0, 1, 0)), w), t(1, 2, 8, 7), t(4, 3, 3, 3)),
                   (lambda x, w: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w), t(1, 3, 8, 7), t(4, 3, 3, 3)),
                   (lambda x, w: F.conv3d(F.pad(x, (1, 0, 0, 2, 1, 1)), w, groups=2), t(1, 4, 4, 5, 4), t(2, 2, 2, 3, 2))))

rule_conv_transpose = strategy(
    "conv/conv-transpose",
    op=["aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input"], kind="direct",
    layers="DeconvolutionNd", checks=trt_checks(promoted_float_input, static_arg("weight"), channels_static,
                                                spatial_rank(1, 3), no_strided_dilated_deconvolution),
    emit=promoting(_emit_conv),
    examples=cases((F.conv_transpose2d, t(1, 3, 8, 8), t(3, 4, 3, 3))))


def _windows(node):
    """((H, W), (kh, kw), dilation, padding, stride, (Lh, Lw)) as PyTorch's col2im reads them."""
    (h, w), k, d, p, s = (list(node.arg(n)) for n in ("output_size", "kernel_size", "dilation", "padding", "stride"))
    blocks = [(size + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for size, kk, dd, pp, ss in zip((h, w), k, d, p, s)]
    return (h, w), k, d, p, s, blocks


def _emit_col2im(ctx, node):
    """Columns [N, C·kh·kw, L] viewed as [N, C·kh·kw, Lh, Lw]; Deconvolution (groups = C, stride as called, the kernel
    dilated by placing its ones apart, no padding); then Slice the padding off, zero-filled past the last window."""
    (h, w), (kh, kw), (dh, dw), (ph, pw), stride, (lh, lw) = _windows(node)
    meta = node.meta("self")
    batched = meta.rank == 3
    x = ctx.input("self")
    channels = meta.shape[-2] // (kh * kw)
    x = ctx.reshape(x, [meta.shape[0] if batched else 1, meta.shape[-2], lh, lw])
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    kernel = np.zeros((channels * kh * kw, 1, *span), dtype=np.float32)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                kernel[c * kh * kw + i * kw + j, 0, i * dh, j * dw] = 1.0
    ctx.nb.keep.append(kernel)
    dt = ctx.dtype(x)
    layer = ctx.net.add_deconvolution_nd(ctx.cast(x, "float32"), channels, span, ctx.trt.Weights(kernel), ctx.trt.Weights())
    layer.stride_nd = tuple(stride)
    layer.num_groups = channels
    full = ctx.out(layer, "fold")
    n = meta.shape[0] if batched else 1
    out = ctx.slice(full, [0, 0, ph, pw], [n, channels, h, w], [1, 1, 1, 1], mode="FILL", fill=ctx.const(0.0, "float32"))
    out = ctx.cast(out, dt)
    return out if batched else ctx.reshape(out, [channels, h, w])


@strategy("fold/col2im", op="aten.col2im.default", kind="decompose",
          examples=[accept(lambda a: F.fold(a, (4, 5), (2, 2)), t(1, 8, 12)),
                    accept(lambda a: F.fold(a, (7, 6), (3, 2), dilation=(1, 2), padding=(1, 0), stride=(2, 1)), t(2, 12, 16)),
                    accept(lambda a: F.fold(a, (5, 5), 2, stride=2), t(4, 4)),  # unbatched; the last row and column get no window
                    reject(lambda a: F.fold(a, (4, 5), (2, 2)), t(1, 8, 12).double(), match="float64")])
def rule_col2im(node):
    """Sum of overlapping windows as a grouped Deconvolution with one-hot kernels (batch may be dynamic)."""
    trt_types(node)
    float_input(node)
    meta = node.meta("self")
    assert all(isinstance(d, int) for d in meta.shape[-2:]), f"columns {meta} have dynamic channel or window dims"
    (h, w), (kh, kw), _, _, _, (lh, lw) = _windows(node)
    assert meta.shape[-1] == lh * lw, f"{meta.shape[-1]} columns do not tile a {h}x{w} output into {lh}x{lw} windows"
    assert meta.shape[-2] % (kh * kw) == 0, f"{meta.shape[-2]} column channels are not a multiple of the window {kh}x{kw}"


rule_col2im.emit(_emit_col2im)
