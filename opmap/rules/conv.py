"""Convolution, pooling and resizing: IConvolutionLayer, IDeconvolutionLayer, IPoolingLayer, IResizeLayer."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, float_input, static_arg, t

ns = globals()


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


define(ns, "conv/conv", ["aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default",
                         "aten._convolution.default"], "direct",
       layers="ConvolutionNd (1-D as 2-D with a unit dim), weights and bias as constants",
       example=(F.conv2d, t(1, 3, 8, 8), t(4, 3, 3, 3)), checks=[float_input, static_arg("weight"), channels_static, spatial_rank(1, 3)])
define(ns, "conv/conv-transpose", ["aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input"],
       "direct", layers="DeconvolutionNd", example=(F.conv_transpose2d, t(1, 3, 8, 8), t(3, 4, 3, 3)),
       checks=[float_input, static_arg("weight"), channels_static, spatial_rank(1, 3)])
define(ns, "pool/max", ["aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default",
                        "aten.max_pool2d_with_indices.default"], "direct", layers="PoolingNd MAX",
       example=(lambda a: F.max_pool2d(a, 2), t(1, 3, 8, 8)),
       bad=(lambda a: F.max_pool2d(a, 2, dilation=2), t(1, 3, 8, 8)), match="dilation",
       checks=[float_input, spatial_rank(1, 3), no_ceil_mode_with_dilation])
define(ns, "pool/avg", ["aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default"], "direct",
       layers="PoolingNd AVERAGE (count_include_pad mapped to average_count_excludes_padding)",
       example=(lambda a: F.avg_pool2d(a, 2), t(1, 3, 8, 8)), checks=[float_input, spatial_rank(1, 3)])
define(ns, "pool/adaptive-avg", ["aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
                                 "aten.adaptive_avg_pool1d.default"], "direct",
       layers="Reduce AVG when the output is 1x1, else PoolingNd AVERAGE with derived kernel and stride",
       example=(lambda a: F.adaptive_avg_pool2d(a, 1), t(1, 3, 8, 8)),
       bad=(lambda a: F.adaptive_avg_pool2d(a, 3), t(1, 3, 8, 8)), match="divide",
       checks=[float_input, lambda node, **_: _adaptive_divisible(node)])
define(ns, "resize/upsample", ["aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec", "aten.upsample_nearest2d.default",
                               "aten.upsample_bilinear2d.default", "aten.upsample_nearest1d.vec", "aten.upsample_linear1d.vec"],
       "direct", layers="Resize NEAREST/LINEAR with PyTorch's coordinate transformation (align_corners or half-pixel)",
       example=(lambda a: F.interpolate(a, scale_factor=2.0, mode="bilinear"), t(1, 3, 4, 4)), checks=[float_input])


def _adaptive_divisible(node):
    meta = node.meta("self")
    out = node.arg("output_size") or []
    spatial = meta.shape[-len(out):] if out else ()
    for size, o in zip(spatial, out):
        assert isinstance(size, int) and (o == 1 or size % o == 0), (
            f"input size {size} does not divide into {o} outputs; adaptive windows would be uneven"
        )
