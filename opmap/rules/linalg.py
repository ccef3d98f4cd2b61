"""Matrix products: IMatrixMultiplyLayer (plus ElementWise for bias), IEinsumLayer."""

import torch
import torch.nn.functional as F

from opmap.loading.graph import Ref
from opmap.rules.common import define, float_input, t

ns = globals()

def _matmul(ctx, a, b, transpose_b=False):
    a, b = ctx.broadcast(a, b)
    op = ctx.trt.MatrixOperation
    return ctx.out(ctx.net.add_matrix_multiply(a, op.NONE, b, op.TRANSPOSE if transpose_b else op.NONE), "matmul")


def _emit_linear(ctx, node):
    x = ctx.input("input")
    y = _matmul(ctx, x, ctx.cast(ctx.input("weight"), ctx.dtype(x)), transpose_b=True)
    if isinstance(node.arg("bias"), Ref):
        y = ctx.elementwise(y, ctx.input("bias"), "SUM")
    if ctx.rank(x) == 1:  # a 1-D input is one row: PyTorch's result drops it again
        from opmap.rules.common import out_dims

        y = ctx.reshape(y, out_dims(node))
    return y


def _emit_addmm(ctx, node):
    a, b = (ctx.input("mat1"), ctx.input("mat2")) if node.op == "aten.addmm.default" else (ctx.input("batch1"), ctx.input("batch2"))
    y = _matmul(ctx, a, b)
    alpha, beta = node.arg("alpha", 1), node.arg("beta", 1)
    if alpha != 1:
        y = ctx.elementwise(y, ctx.const(alpha, ctx.dtype(y)), "PROD")
    bias = ctx.input("self")
    if beta != 1:
        bias = ctx.elementwise(bias, ctx.const(beta, ctx.dtype(y)), "PROD")
    return ctx.elementwise(y, bias, "SUM") if beta != 0 else y


def _emit_matmul(ctx, node):
    """PyTorch's matmul: a 1-D operand is a row (left) or a column (right) of a matrix product, the added dim removed
    afterwards; batch dims broadcast. (TensorRT's VECTOR operand needs the other to have exactly one more dim.)"""
    from opmap.rules.common import out_dims

    first, second = ("self", "mat2") if node.op in ("aten.mm.default", "aten.bmm.default") else ("self", "other")
    a, b = ctx.input(first), ctx.input(second)
    ra, rb = ctx.rank(a), ctx.rank(b)
    if ra == 1:
        a = ctx.reshape(a, [1, node.meta(first).shape[0]])
    if rb == 1:
        b = ctx.reshape(b, [node.meta(second).shape[0], 1])
    y = _matmul(ctx, a, b)
    return ctx.reshape(y, out_dims(node)) if 1 in (ra, rb) else y


define(ns, "mm/linear", "aten.linear.default", "decompose",
       layers="MatrixMultiply with the transposed weight constant, ElementWise SUM for the bias",
       example=(F.linear, t(2, 4), t(3, 4), t(3)), checks=[float_input], emit=_emit_linear)
define(ns, "mm/addmm", ["aten.addmm.default", "aten.baddbmm.default"], "decompose",
       layers="MatrixMultiply then ElementWise SUM (beta/alpha folded as PROD)",
       example=(lambda b, x, w: torch.addmm(b, x, w), t(3), t(2, 4), t(4, 3)),
       examples=[(lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2), t(2, 1, 5), t(2, 3, 4), t(2, 4, 5))],
       checks=[float_input], emit=_emit_addmm)
define(ns, "mm/matmul", ["aten.mm.default", "aten.bmm.default", "aten.matmul.default"], "direct",
       layers="MatrixMultiply (batch dims broadcast)", example=(torch.matmul, t(2, 3, 4), t(4, 5)),
       examples=[(torch.mm, t(3, 4), t(4, 2)), (torch.bmm, t(2, 3, 4), t(2, 4, 5))], checks=[float_input],
       emit=_emit_matmul)
define(ns, "mm/einsum", "aten.einsum.default", "direct", layers="Einsum (TensorRT's subset: no ellipsis, each label ≤ 2 inputs)",
       example=(lambda a, b: torch.einsum("ij,jk->ik", a, b), t(2, 3), t(3, 4)),
       checks=[lambda node, **_: _einsum_subset(node)],
       emit=lambda ctx, node: ctx.out(ctx.net.add_einsum([ctx.tensor(r) for r in node.arg("tensors")], node.arg("equation")), "einsum"))


def _einsum_subset(node):
    eq = node.arg("equation") or ""
    assert "..." not in eq, f"einsum {eq!r} uses an ellipsis, which TensorRT's Einsum does not support"
    dtypes = [m.dtype for m in node.tensor_args().values()]
    assert all(d in ("float32", "float16", "bfloat16") for d in dtypes), f"einsum inputs are {dtypes}; TensorRT's Einsum takes float types only"
    assert len(node.arg("tensors") or []) <= 2, "TensorRT's Einsum takes at most two inputs"
