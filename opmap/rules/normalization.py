"""Normalization: INormalizationLayer (layer, group, instance norm), Scale for inference batch norm, batch norm by batch
statistics, rms_norm, weight_norm.

Batch norm by the batch's own statistics with no running statistics to update (``track_running_stats=False``,
``_native_batch_norm_legit.no_stats``): unlike training-mode batch norm with running stats, nothing persists between
calls, so an engine computes it exactly — mean and biased variance over every dim but the channels.
"""

import math

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import cases, float_input, promoted_float_input, static_arg, t, trt_checks, trt_types
from opmap.rules.emitting import in_float32, promoting


def inference_batch_norm(node, **_):
    training = node.arg("training", False)
    assert not training, "batch_norm in training mode uses batch statistics; export the model with model.eval()"
    channels = node.meta("input").shape[1] if node.meta("input").rank > 1 else None
    for name in ("weight", "bias", "running_mean", "running_var"):
        meta = node.meta(name)
        if meta is not None and isinstance(channels, int):
            assert list(meta.shape) == [channels], f"{name} is {list(meta.shape)}, not one value per channel ({channels})"


def normalized_shape_static(node, **_):
    shape = node.arg("normalized_shape") or []
    assert all(isinstance(d, int) for d in shape), f"normalized_shape {shape} is not static"


def _affine_param(ctx, name, rank, axis_from, default, dtype):
    """A per-feature weight/bias in ``dtype``, shaped to broadcast against the input (or the constant default)."""
    from opmap.loading.graph import Ref

    ref = ctx.node.arg(name)
    shape = list(ctx.node.meta("input").shape[axis_from:])
    if not isinstance(ref, Ref):  # no weight/bias: a scalar that broadcasts, whatever the (symbolic) feature sizes
        return ctx.const(torch.full([1] * rank, float(default)), dtype)
    t = ctx.cast(ctx.tensor(ref), dtype)
    return ctx.reshape(t, [1] * axis_from + shape)


def _layer_norm_outputs(ctx, node, y):
    """native_layer_norm / native_group_norm return (y, mean, rstd): only y is computed (inference uses no other)."""
    return [y, None, None] if node.op in ("aten.native_layer_norm.default", "aten.native_group_norm.default") else y


def _emit_layer_norm(ctx, node):
    """A float16/bfloat16 input is normalized in float32 and rounded once, as PyTorch does: TensorRT 11 no longer lets a
    network set a Normalization's compute precision, and one computed in half rounds the mean (bf16 [300, 301, 302,
    303] normalized to values off by 0.3)."""
    x, own = in_float32(ctx, ctx.input("input"))
    rank = ctx.rank(x)
    k = len(node.arg("normalized_shape"))
    scale = _affine_param(ctx, "weight", rank, rank - k, 1.0, ctx.dtype(x))
    bias = _affine_param(ctx, "bias", rank, rank - k, 0.0, ctx.dtype(x))
    layer = ctx.net.add_normalization(x, scale, bias, ctx.axes_mask(range(rank - k, rank), rank))
    layer.epsilon = float(node.arg("eps", 1e-5))
    return _layer_norm_outputs(ctx, node, ctx.cast(ctx.out(layer, "layernorm"), own))


def _emit_layer_norm_decomposed(ctx, node):
    """The statistics, the normalization and the affine step in float32 for a float16/bfloat16 input, rounded once at
    the end, as PyTorch computes a half layer norm: done step by step in bfloat16, the mean of two nearly equal values
    rounds and the centered values (and the output) come out off by up to a third of their size."""
    x, own = in_float32(ctx, ctx.input("input"))
    rank = ctx.rank(x)
    k = len(node.arg("normalized_shape"))
    axes = ctx.axes_mask(range(rank - k, rank), rank)
    avg = ctx.trt.ReduceOperation.AVG
    mean = ctx.out(ctx.net.add_reduce(x, avg, axes, True), "mean")
    centered = ctx.elementwise(x, mean, "SUB")
    var = ctx.out(ctx.net.add_reduce(ctx.elementwise(centered, centered, "PROD"), avg, axes, True), "var")
    std = ctx.unary(ctx.elementwise(var, ctx.const(float(node.arg("eps", 1e-5)), ctx.dtype(x)), "SUM"), "SQRT")
    y = ctx.elementwise(centered, std, "DIV")
    y = ctx.elementwise(y, _affine_param(ctx, "weight", rank, rank - k, 1.0, ctx.dtype(x)), "PROD")
    y = ctx.elementwise(y, _affine_param(ctx, "bias", rank, rank - k, 0.0, ctx.dtype(x)), "SUM")
    return _layer_norm_outputs(ctx, node, ctx.cast(y, own))


def _emit_rms_norm(ctx, node):
    """In float32 for a float16/bfloat16 input, rounded once, as PyTorch computes it (fp16 squares of values past 256
    overflow)."""
    x, own = in_float32(ctx, ctx.input("input"))
    rank = ctx.rank(x)
    k = len(node.arg("normalized_shape"))
    axes = ctx.axes_mask(range(rank - k, rank), rank)
    ms = ctx.out(ctx.net.add_reduce(ctx.elementwise(x, x, "PROD"), ctx.trt.ReduceOperation.AVG, axes, True), "mean-square")
    eps = node.arg("eps")
    # no eps: float32's, also for a half input (PyTorch takes its compute type's; bf16's own 0.0078 swamped small rows)
    eps = float(torch.finfo(getattr(torch, ctx.dtype(x))).eps) if eps is None else float(eps)
    y = ctx.elementwise(x, ctx.unary(ctx.elementwise(ms, ctx.const(eps, ctx.dtype(x)), "SUM"), "SQRT"), "DIV")
    return ctx.cast(ctx.elementwise(y, _affine_param(ctx, "weight", rank, rank - k, 1.0, ctx.dtype(x)), "PROD"), own)


def _channel_param(ctx, name, default, rank, dtype=None):
    """A per-channel weight/bias (or the constant default) in ``dtype`` (default: the input's), shaped [1, C, 1, ...]."""
    from opmap.loading.graph import Ref

    dtype = dtype or ctx.dtype(ctx.input("input"))
    ref = ctx.node.arg(name)
    if not isinstance(ref, Ref):  # a scalar that broadcasts over every (possibly symbolic) channel count
        return ctx.const(torch.full([1] * rank, float(default)), dtype)
    channels = ctx.node.meta("input").shape[1]
    return ctx.reshape(ctx.cast(ctx.tensor(ref), dtype), [1, channels] + [1] * (rank - 2))


def _trained(bn):
    """A batch norm in eval mode with non-trivial statistics and affine parameters (a fresh one is the identity)."""
    with torch.no_grad():
        for p in (bn.weight, bn.bias, bn.running_mean):
            p.copy_(t(*p.shape) if p is not bn.running_mean else t(*p.shape) * 0.5)
        bn.running_var.copy_(t(*bn.running_var.shape).abs() + 0.5)
    return bn.eval()


def _emit_batch_norm(ctx, node):
    """(x - mean) · weight / sqrt(var + eps) + bias, as one per-channel scale and shift."""
    x = ctx.input("input")
    rank = ctx.rank(x)
    dt = ctx.dtype(x)
    mean = _channel_param(ctx, "running_mean", 0.0, rank)
    var = _channel_param(ctx, "running_var", 1.0, rank)
    eps = float(node.arg("eps", node.arg("epsilon", 1e-5)))
    scale = ctx.elementwise(_channel_param(ctx, "weight", 1.0, rank),
                            ctx.unary(ctx.elementwise(var, ctx.const(eps, dt), "SUM"), "SQRT"), "DIV")
    shift = ctx.elementwise(_channel_param(ctx, "bias", 0.0, rank), ctx.elementwise(mean, scale, "PROD"), "SUB")
    y = ctx.elementwise(ctx.elementwise(x, scale, "PROD"), shift, "SUM")
    if node.op == "aten.batch_norm.default":
        return y
    return [y, None, None]


def _emit_group_norm(ctx, node):
    """TensorRT splits the channels into groups only where num_groups != 1 (its operator docs); with one group the layer
    normalizes over exactly the axes given, so GroupNorm(1, C) (the "layer norm over C, H, W" of PoolFormer- and
    ConvNeXt-style blocks) is a normalization over every axis but the batch — spatial axes alone would be an instance
    norm. A rank-2 input [N, C] has no spatial axes for TensorRT's group split: it is reshaped to [N, G, C/G] and
    normalized over the last axis."""
    x, own = in_float32(ctx, ctx.input("input"))  # in float32 for a half input, as layer norm (above)
    rank = ctx.rank(x)
    groups = node.arg("num_groups", node.arg("group"))
    eps = float(node.arg("eps", 1e-5))
    shape = list(node.meta("input").shape)
    per_group = shape[1] // groups * math.prod(shape[2:]) if all(isinstance(d, int) for d in shape[1:]) else None
    if per_group == 1:
        # every group is one element: its mean is itself, so PyTorch's x - mean is 0 (NaN where x is inf or NaN) and
        # only the bias is left. TensorRT's builder cannot infer the shapes of a normalization over single elements.
        y = ctx.elementwise(x, x, "SUB")
    elif groups == 1 or rank == 2:
        grouped = x if groups == 1 else ctx.reshape(x, [shape[0], groups, -1])  # C may be known only at run time
        one = ctx.const(torch.ones([1] * ctx.rank(grouped)), ctx.dtype(x))
        zero = ctx.const(torch.zeros([1] * ctx.rank(grouped)), ctx.dtype(x))
        layer = ctx.net.add_normalization(grouped, one, zero, ctx.axes_mask(range(ctx.rank(grouped) - 1 if groups > 1 else 1,
                                                                                       ctx.rank(grouped)), ctx.rank(grouped)))
        layer.epsilon = eps
        y = ctx.out(layer, "groupnorm")
        y = y if groups == 1 else ctx.reshape(y, list(node.meta("input").shape))
    else:
        ones = ctx.const(torch.ones([1, groups] + [1] * (rank - 2)), ctx.dtype(x))
        zeros = ctx.const(torch.zeros([1, groups] + [1] * (rank - 2)), ctx.dtype(x))
        layer = ctx.net.add_normalization(x, ones, zeros, ctx.axes_mask(range(2, rank), rank))
        layer.num_groups = groups
        layer.epsilon = eps
        y = ctx.out(layer, "groupnorm")
    y = ctx.elementwise(y, _channel_param(ctx, "weight", 1.0, rank, ctx.dtype(x)), "PROD")
    y = ctx.elementwise(y, _channel_param(ctx, "bias", 0.0, rank, ctx.dtype(x)), "SUM")
    return _layer_norm_outputs(ctx, node, ctx.cast(y, own))


rule_layer_norm = strategy(
    "norm/layer-norm", op=["aten.layer_norm.default", "aten.native_layer_norm.default"], kind="direct",
    layers="Normalization over the trailing axes, weight and bias as constants",
    checks=trt_checks(promoted_float_input, normalized_shape_static), emit=promoting(_emit_layer_norm),
    examples=cases((lambda a, w, b: F.layer_norm(a, (4,), w, b), t(2, 3, 4), t(4), t(4)),
                   accept(torch.nn.LayerNorm((3, 4)), t(2, 3, 4), decompose=True)))

rule_layer_norm_decomposed = strategy(
    "norm/layer-norm-decomposed", op=["aten.layer_norm.default", "aten.native_layer_norm.default"], kind="decompose",
    layers="Reduce AVG, SUB, PROD, Reduce AVG, SUM eps, Unary SQRT, DIV, scale and shift (exact)",
    checks=trt_checks(promoted_float_input, normalized_shape_static), emit=promoting(_emit_layer_norm_decomposed),
    examples=cases((lambda a: F.layer_norm(a, (4,)), t(2, 3, 4)),
                   accept(torch.nn.LayerNorm(4), t(2, 3, 4), decompose=True)))

rule_rms_norm = strategy(
    "norm/rms-norm", op=["aten.rms_norm.default"], kind="decompose",
    layers="PROD, Reduce AVG, SUM eps, Unary SQRT, DIV, PROD weight", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_rms_norm),
    examples=cases((lambda a: F.rms_norm(a, (4,)), t(2, 3, 4))))

rule_group_norm = strategy(
    "norm/group-norm", op=["aten.group_norm.default", "aten.native_group_norm.default"], kind="direct",
    layers="Normalization with num_groups", checks=trt_checks(promoted_float_input, static_arg("weight", "bias")),
    emit=promoting(_emit_group_norm),
    examples=cases((lambda a: F.group_norm(a, 2), t(1, 4, 3, 3)),
                   accept(torch.nn.GroupNorm(2, 6), t(2, 6, 5), decompose=True)))

rule_batch_norm = strategy(
    "norm/batch-norm", op=["aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
                           "aten.native_batch_norm.default"], kind="decompose",
    layers="inference batch norm folded into one per-channel Scale (shift, scale) from the running statistics",
    checks=trt_checks(promoted_float_input, inference_batch_norm), emit=promoting(_emit_batch_norm),
    examples=cases((lambda a, m, v: F.batch_norm(a, m, v), t(1, 3, 4, 4), t(3), t(3).abs() + 1),
                   accept(_trained(torch.nn.BatchNorm2d(3)), t(2, 3, 4, 4), decompose=True),  # _native_batch_norm_legit_no_training
                   (lambda a, w, b, m, v: torch.ops.aten.native_batch_norm(a, w, b, m, v, False, 0.1, 1e-3)[0],
                    t(2, 3, 5), t(3), t(3), t(3), t(3).abs() + 1),
                   bad=(lambda a, m, v: F.batch_norm(a, m, v, training=True), t(2, 3, 4, 4), t(3), t(3).abs() + 1),
                   match="training mode"))


def _emit_weight_norm(ctx, node):
    """v * g / ||v||, the norm over every dim but ``dim`` (over all of them for dim = -1), kept for broadcasting."""
    from opmap.rules.reductions import vector_norm

    v, g = ctx.input("v"), ctx.input("g")
    rank = ctx.rank(v)
    dim = node.arg("dim", 0)
    axes = range(rank) if dim == -1 else [a for a in range(rank) if a != dim % rank]
    norm = vector_norm(ctx, v, 2, ctx.axes_mask(axes, rank), True)
    return ctx.elementwise(v, ctx.elementwise(ctx.cast(g, ctx.dtype(v)), norm, "DIV"), "PROD")


rule_weight_norm = strategy(
    "norm/weight-norm", op=["aten._weight_norm.default"], kind="decompose",
    layers="Reduce SUM of squares, SQRT, ElementWise DIV and PROD: v * g / ||v|| (norm over all dims but dim)",
    checks=trt_checks(lambda node, **_: _float_v(node)), emit=_emit_weight_norm,
    examples=cases((lambda v, g: torch._weight_norm(v, g, 0), t(4, 3, 3), t(4, 1, 1))))


def _float_v(node):
    meta = node.meta("v")
    assert meta is not None and meta.dtype in ("float32", "float16", "bfloat16"), f"v is {meta}; weight norm takes floats"


A = torch.ops.aten


def _emit_batch_stats(ctx, node):
    """Reduce AVG over (N, spatial) for the mean and the biased variance; (x - mean) / sqrt(var + eps) · w + b. The
    legit overload also returns the mean and 1 / sqrt(var + eps) per channel."""
    x = ctx.input("input")  # in its own dtype, half included: PyTorch's CPU kernel rounds the batch mean to it too
    rank = ctx.rank(x)
    axes = [0] + list(range(2, rank))
    dt = ctx.dtype(x)
    ones = [1] * rank
    mean = ctx.reduce(x, "AVG", axes, keepdim=True)
    centred = ctx.elementwise(x, mean, "SUB")
    var = ctx.reduce(ctx.elementwise(centred, centred, "PROD"), "AVG", axes, keepdim=True)
    rstd = ctx.unary(ctx.unary(ctx.elementwise(var, ctx.const(float(node.arg("eps")), dt, shape=ones), "SUM"), "SQRT"), "RECIP")
    out = ctx.elementwise(centred, rstd, "PROD")
    channels = node.meta("input").shape[1]
    for name, op in (("weight", "PROD"), ("bias", "SUM")):
        if node.meta(name) is not None:
            out = ctx.elementwise(out, ctx.reshape(ctx.cast(ctx.input(name), dt), [1, channels] + [1] * (rank - 2)), op)
    if node.op == "aten.batch_norm.default":
        return out
    return [out, ctx.reshape(mean, [channels]), ctx.reshape(rstd, [channels])]


def _no_stats(a, w, b):
    return A._native_batch_norm_legit.no_stats(a, w, b, True, 0.1, 1e-5)


@strategy("norm/batch-stats", op=["aten._native_batch_norm_legit.no_stats", "aten.batch_norm.default"], kind="decompose",
          examples=[accept(lambda a, w, b: _no_stats(a, w, b)[0], t(2, 3, 4, 4), t(3), t(3)),
                    accept(lambda a, w, b: _no_stats(a, w, b), t(4, 3, 5), t(3), t(3)),  # the saved mean and rstd too
                    accept(lambda a: F.batch_norm(a, None, None, training=True, eps=1e-3), t(3, 2, 2, 3, 2)),
                    accept(torch.nn.BatchNorm2d(3, track_running_stats=False).eval(), t(2, 3, 4, 4)),
                    reject(lambda a, m, v: F.batch_norm(a, m, v, training=True), t(2, 3, 4), t(3), t(3).abs() + 1,
                           match="running"),
                    reject(lambda a, w, b: _no_stats(a, w, b)[0], t(2, 3, 4).double(), t(3).double(), t(3).double(),
                           match="float64")])
def rule_batch_stats(node):
    """Batch norm over the batch's statistics, with no running statistics (nothing to update, so nothing lost)."""
    trt_types(node)
    float_input(node)
    if node.op == "aten.batch_norm.default":
        assert node.arg("training"), "batch_norm in eval mode normalises by its running statistics: norm/batch-norm maps it"
        assert node.arg("running_mean") is None and node.arg("running_var") is None, (
            "training-mode batch_norm with running statistics updates them every call; an engine keeps no state "
            "(export with model.eval())")
    assert node.meta("input").rank >= 2, "batch norm needs a channel dim"
    channels = node.meta("input").shape[1]
    for name in ("weight", "bias"):  # PyTorch's CPU kernel reads the first C values of a longer one without a check
        meta = node.meta(name)
        assert meta is None or not isinstance(channels, int) or list(meta.shape) == [channels], (
            f"{name} is {list(meta.shape)}, not one value per channel ({channels})")


rule_batch_stats.emit(_emit_batch_stats)
