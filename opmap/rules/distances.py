"""Pairwise p-norm distances: ``cdist`` (every row of x1 against every row of x2) and ``pdist`` (the upper triangle of
one set against itself), from the differences of every pair, as PyTorch's direct (non-matmul) path computes them."""

import math

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import float_input, max_rank, t, trt_types

A = torch.ops.aten


def _unsqueeze(ctx, x, axis):
    """A unit dim at ``axis`` (IUnsqueezeLayer: the other dims may be symbolic)."""
    return ctx.out(ctx.net.add_unsqueeze(x, ctx.const([axis], "int64")), "unsqueeze")


def _pnorm(ctx, diff, p):
    """The p-norm of ``diff`` over its last dim: p = 0 counts non-zeros, inf takes the max, 1 and 2 without POW."""
    dt = ctx.dtype(diff)
    one = [1] * ctx.rank(diff)
    if p == 0:
        nonzero = ctx.unary(ctx.elementwise(diff, ctx.const(0, dt, shape=one), "EQUAL"), "NOT")
        return ctx.reduce(ctx.cast(nonzero, dt), "SUM", [-1])
    size = ctx.unary(diff, "ABS")
    if math.isinf(p):
        return ctx.reduce(size, "MAX", [-1])
    if p == 1:
        return ctx.reduce(size, "SUM", [-1])
    if p == 2:
        return ctx.unary(ctx.reduce(ctx.elementwise(diff, diff, "PROD"), "SUM", [-1]), "SQRT")
    powered = ctx.reduce(ctx.elementwise(size, ctx.const(float(p), dt, shape=one), "POW"), "SUM", [-1])
    return ctx.elementwise(powered, ctx.const(1.0 / p, dt, shape=one[:-1]), "POW")


def _pairwise(ctx, a, b, p):
    """[..., P, M] and [..., R, M] -> [..., P, R]."""
    diff = ctx.elementwise(_unsqueeze(ctx, a, ctx.rank(a) - 1), _unsqueeze(ctx, b, ctx.rank(b) - 2), "SUB")
    return _pnorm(ctx, diff, p)


def _p(node):
    return float(node.arg("p", 2.0))


def _emit_cdist(ctx, node):
    return _pairwise(ctx, ctx.input("x1"), ctx.input("x2"), _p(node))


def _emit_pdist(ctx, node):
    """The full [N, N] distance matrix, then Gather of its upper triangle (i < j, row-major) by constant positions."""
    x = ctx.input("self")
    n = node.meta("self").shape[0]
    full = ctx.reshape(_pairwise(ctx, x, x, _p(node)), [n * n])
    upper = [i * n + j for i in range(n) for j in range(i + 1, n)]
    return ctx.gather(full, ctx.const(upper, "int64"), 0)


def p_valid(node):
    p = _p(node)
    assert p >= 0, f"p={p}: a p-norm needs p >= 0"


@strategy("dist/cdist", op=["aten.cdist.default", "aten._cdist_forward.default"], kind="decompose",
          examples=[accept(torch.cdist, t(2, 4, 3), t(2, 5, 3)),
                    accept(lambda a, b: torch.cdist(a, b, p=1), t(6, 3), t(4, 3)),
                    accept(lambda a, b: torch.cdist(a, b, p=0), (t(3, 4) > 0).float(), (t(5, 4) > 0).float()),
                    accept(lambda a, b: torch.cdist(a, b, p=float("inf")), t(1, 3, 2), t(2, 4, 2)),  # batch broadcast
                    accept(lambda a, b: A._cdist_forward.default(a, b, 3.0, None), t(3, 4), t(2, 4)),
                    reject(torch.cdist, t(2, 4, 3).double(), t(2, 5, 3).double(), match="float64")])
def rule_cdist(node):
    """Differences of every pair (an Unsqueeze of each side, SUB broadcast to [..., P, R, M]), then the p-norm over M
    with Reduce. Exact per pair; PyTorch itself switches p=2 to a matrix-product formula above 25 rows
    (compute_mode), whose rounding differs from the direct one computed here."""
    trt_types(node)
    max_rank(node)
    assert node.meta("x1").dtype in ("float32", "float16", "bfloat16"), f"x1 is {node.meta('x1').dtype}; cdist takes float types"
    assert node.meta("x1").rank + 1 <= 8, "the pairwise difference needs one dim more than the inputs, over TensorRT's 8"
    p_valid(node)


rule_cdist.emit(_emit_cdist)


@strategy("dist/pdist", op=["aten.pdist.default", "aten._pdist_forward.default"], kind="decompose",
          examples=[accept(F.pdist, t(5, 3)), accept(lambda a: F.pdist(a, p=1.5), t(4, 6)),
                    accept(lambda a: A._pdist_forward.default(a, float("inf")), t(3, 2)),
                    reject(F.pdist, t(5, 3).double(), match="float64")])
def rule_pdist(node):
    """The [N, N] distances as for cdist, then a Gather of the N(N-1)/2 upper-triangle entries by constant positions
    (N must be static)."""
    trt_types(node)
    float_input(node)
    rows = node.meta("self").shape[0]
    assert isinstance(rows, int), f"the row count {rows} is dynamic; the upper-triangle positions are fixed at build time"
    p_valid(node)


rule_pdist.emit(_emit_pdist)
