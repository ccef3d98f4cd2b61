"""``col2im`` (``F.fold``): sliding-window columns summed back into an image. Folding is a transposed convolution
whose kernel is one-hot: each column channel (c, i, j) adds into output channel c at window offset (i, j)."""

import numpy as np
import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import float_input, t, trt_types


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
