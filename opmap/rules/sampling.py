"""Resampling ops with a TensorRT layer of their own: bicubic upsampling (Resize CUBIC) and ``grid_sample``
(GridSample). The reference interpreter's semantics of both are in opmap/checking/sampling.py."""

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import float_input, max_rank, t, trt_types
from opmap.rules.conv import resize_layer, static_spatial_output

A = torch.ops.aten
PYTORCH_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (upsample_bicubic2d and grid_sample alike)


def _emit_bicubic(ctx, node):
    layer, align = resize_layer(ctx, node)
    layer.resize_mode = ctx.trt.InterpolationMode.CUBIC
    layer.cubic_coeff = PYTORCH_CUBIC_A
    layer.exclude_outside = False  # PyTorch repeats the edge pixel for taps outside the image
    layer.coordinate_transformation = (ctx.trt.ResizeCoordinateTransformation.ALIGN_CORNERS if align
                                       else ctx.trt.ResizeCoordinateTransformation.HALF_PIXEL)
    return ctx.out(layer, "resize-cubic")


def _bicubic(**kw):
    return lambda a: F.interpolate(a, mode="bicubic", **kw)


@strategy("resize/bicubic", op=["aten.upsample_bicubic2d.vec", "aten.upsample_bicubic2d.default"], kind="direct",
          examples=[accept(_bicubic(scale_factor=2.0), t(1, 3, 4, 4)),
                    accept(_bicubic(size=(7, 5), align_corners=True), t(2, 2, 4, 6)),
                    accept(_bicubic(size=(3, 9)), t(1, 2, 5, 4)),  # down along one axis, up along the other
                    reject(_bicubic(scale_factor=2.0), t(1, 3, 4, 4).double(), match="float64")])
def rule_bicubic(node):
    """Resize CUBIC with PyTorch's coefficient A = -0.75, edge pixels repeated outside the image, and its coordinate
    mapping (half-pixel, or align_corners), scaled by the call's scale factors where it was called with them."""
    trt_types(node)
    float_input(node)
    static_spatial_output(node)


rule_bicubic.emit(_emit_bicubic)


GRID_MODES = {0: "LINEAR", 1: "NEAREST"}  # PyTorch's interpolation_mode codes; 2 is bicubic
GRID_PADDING = {0: "FILL", 1: "CLAMP", 2: "REFLECT"}  # zeros, border, reflection


def _emit_grid_sample(ctx, node):
    layer = ctx.net.add_grid_sample(ctx.input("input"), ctx.cast(ctx.input("grid"), ctx.dtype(ctx.input("input"))))
    layer.interpolation_mode = getattr(ctx.trt.InterpolationMode, GRID_MODES[node.arg("interpolation_mode")])
    layer.sample_mode = getattr(ctx.trt.SampleMode, GRID_PADDING[node.arg("padding_mode")])
    layer.align_corners = bool(node.arg("align_corners"))
    return ctx.out(layer, "grid-sample")


def _grid(mode="bilinear", padding="zeros", align=False):
    return lambda a, g: F.grid_sample(a, g, mode=mode, padding_mode=padding, align_corners=align)


def _grid_points(n, h, w, spread=1.2):
    """Grid coordinates in [-spread, spread]: some outside the image, to exercise the padding."""
    return (torch.rand(n, h, w, 2, generator=torch.Generator().manual_seed(h * w)) * 2 - 1) * spread


@strategy("sample/grid-sample", op=["aten.grid_sampler.default", "aten.grid_sampler_2d.default"], kind="direct",
          examples=[accept(_grid(), t(1, 3, 5, 6), _grid_points(1, 4, 3)),
                    accept(_grid("bilinear", "border", True), t(2, 2, 4, 4), _grid_points(2, 3, 5)),
                    accept(_grid("nearest", "reflection"), t(1, 2, 5, 4), _grid_points(1, 6, 2)),
                    accept(lambda a, g: A.grid_sampler_2d.default(a, g, 0, 2, True), t(1, 2, 4, 5), _grid_points(1, 3, 3)),
                    reject(_grid("bicubic"), t(1, 3, 5, 6), _grid_points(1, 4, 3), match="bicubic"),
                    reject(_grid(), t(1, 2, 3, 4, 4), torch.rand(1, 2, 2, 2, 3) * 2 - 1, match="5-D")])
def rule_grid_sample(node):
    """GridSample: bilinear or nearest, zeros/border/reflection padding, align_corners as called."""
    trt_types(node)
    max_rank(node)
    float_input(node)
    rank = node.meta("input").rank
    assert rank == 4, f"a {rank}-D input samples a volume; only 4-D (image) grid sampling is mapped"
    mode = node.arg("interpolation_mode")
    assert mode in GRID_MODES, (
        "bicubic grid sampling: TensorRT's GridSample CUBIC does not document how it pads each of the 16 taps "
        "(PyTorch pads tap by tap), so opmap cannot verify it; sample bilinear, or upsample with "
        "F.interpolate(mode='bicubic') where the grid is regular")
    assert node.arg("padding_mode") in GRID_PADDING, f"padding_mode {node.arg('padding_mode')} is not PyTorch's"


rule_grid_sample.emit(_emit_grid_sample)
