"""Batch norm by the batch's own statistics with no running statistics to update (``track_running_stats=False``,
``_native_batch_norm_legit.no_stats``): unlike training-mode batch norm with running stats, nothing persists between
calls, so an engine computes it exactly — mean and biased variance over every dim but the channels."""

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import float_input, t, trt_types

A = torch.ops.aten


def _emit_batch_stats(ctx, node):
    """Reduce AVG over (N, spatial) for the mean and the biased variance; (x - mean) / sqrt(var + eps) · w + b. The
    legit overload also returns the mean and 1 / sqrt(var + eps) per channel."""
    x = ctx.input("input")
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


rule_batch_stats.emit(_emit_batch_stats)
