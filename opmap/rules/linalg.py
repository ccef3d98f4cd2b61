"""Matrix products: IMatrixMultiplyLayer (plus ElementWise for bias), IEinsumLayer; dot, mv, cross products, and the
grouped matmul of mixture-of-experts layers.

Mixture-of-experts: the grouped matmul transformers exports for its expert layers.

transformers (5.x) routes MoE experts through its own custom op ``transformers::grouped_mm_fallback(input, weight,
offs)``: rows of ``input`` are sorted by expert, ``offs`` holds the cumulative row count per expert, and rows
``[offs[i-1], offs[i])`` are multiplied by ``weight[i]``; rows past the last offset stay zero. TensorRT has no grouped
matmul layer; the exact network below computes every expert for every row and keeps each row's own.
"""


import torch
import torch.nn.functional as F

from opmap.loading.graph import Ref
from opmap.planning.strategy import accept, strategy
from opmap.rules.common import cases, promoted_float_input, t, trt_checks
from opmap.rules.emitting import promoting


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


rule_linear = strategy(
    "mm/linear", op="aten.linear.default", kind="decompose",
    layers="MatrixMultiply with the transposed weight constant, ElementWise SUM for the bias",
    checks=trt_checks(promoted_float_input), emit=promoting(_emit_linear),
    examples=cases((F.linear, t(2, 4), t(3, 4), t(3))))

rule_addmm = strategy(
    "mm/addmm", op=["aten.addmm.default", "aten.baddbmm.default"], kind="decompose",
    layers="MatrixMultiply then ElementWise SUM (beta/alpha folded as PROD)", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_addmm),
    examples=cases((lambda b, x, w: torch.addmm(b, x, w), t(3), t(2, 4), t(4, 3)),
                   (lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2), t(2, 1, 5), t(2, 3, 4), t(2, 4, 5))))

rule_matmul = strategy(
    "mm/matmul", op=["aten.mm.default", "aten.bmm.default", "aten.matmul.default"], kind="direct",
    layers="MatrixMultiply (batch dims broadcast)", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_matmul),
    examples=cases((torch.matmul, t(2, 3, 4), t(4, 5)), (torch.mm, t(3, 4), t(4, 2)),
                   (torch.bmm, t(2, 3, 4), t(2, 4, 5))))

rule_einsum = strategy(
    "mm/einsum", op="aten.einsum.default", kind="direct",
    layers="Einsum (TensorRT's subset: no ellipsis, each label ≤ 2 inputs)",
    checks=trt_checks(lambda node, **_: _einsum_subset(node)),
    emit=lambda ctx, node: ctx.out(ctx.net.add_einsum([ctx.tensor(r) for r in node.arg("tensors")], node.arg("equation")), "einsum"),
    examples=cases((lambda a, b: torch.einsum("ij,jk->ik", a, b), t(2, 3), t(3, 4))))


def _einsum_subset(node):
    eq = node.arg("equation") or ""
    assert "..." not in eq, f"einsum {eq!r} uses an ellipsis, which TensorRT's Einsum does not support"
    dtypes = [m.dtype for m in node.tensor_args().values()]
    assert all(d in ("float32", "float16", "bfloat16") for d in dtypes), f"einsum inputs are {dtypes}; TensorRT's Einsum takes float types only"
    assert len(node.arg("tensors") or []) <= 2, "TensorRT's Einsum takes at most two inputs"


def _emit_dot_mv(ctx, node):
    """dot: Reduce SUM of the product; mv: the vector broadcast over the matrix rows, Reduce SUM along them."""
    dtype = ctx.output_dtype()
    a = ctx.cast(ctx.input("self"), dtype)
    b = ctx.cast(ctx.input("tensor" if node.op == "aten.dot.default" else "vec"), dtype)
    prod = ctx.elementwise(a, b, "PROD")
    rank = ctx.rank(prod)
    return ctx.out(ctx.net.add_reduce(prod, ctx.trt.ReduceOperation.SUM, 1 << (rank - 1), False), "sum")


rule_dot_mv = strategy(
    "linalg/dot-mv", op=["aten.dot.default", "aten.mv.default"], kind="decompose",
    layers="ElementWise PROD (the vector broadcast), Reduce SUM over the last dim", checks=trt_checks(),
    emit=_emit_dot_mv,
    examples=cases((torch.mv, t(4, 3), t(3))) + [accept(torch.dot, t(5), t(5))])


def _emit_cross(ctx, node):
    """c = (a1 b2 - a2 b1, a2 b0 - a0 b2, a0 b1 - a1 b0) along ``dim``: one Slice per component, concatenated."""
    dtype = ctx.output_dtype()
    a, b = ctx.broadcast(ctx.cast(ctx.input("self"), dtype), ctx.cast(ctx.input("other"), dtype))
    rank = ctx.rank(a)
    dim = node.arg("dim", -1) % rank

    def part(x, i):
        dims = ctx.dims_of(x)
        return ctx.slice(x, [i if k == dim else 0 for k in range(rank)], [1 if k == dim else d for k, d in enumerate(dims)], [1] * rank)

    def term(i, j):
        return ctx.elementwise(ctx.elementwise(part(a, i), part(b, j), "PROD"), ctx.elementwise(part(a, j), part(b, i), "PROD"), "SUB")

    layer = ctx.net.add_concatenation([term(1, 2), term(2, 0), term(0, 1)])
    layer.axis = dim
    return ctx.out(layer, "cross")


def same_rank_operands(node, **_):
    """The component slices are taken from each operand: broadcasting across ranks is not decomposed."""
    a, b = node.meta("self"), node.meta("other")
    assert a.rank == b.rank, f"operands of ranks {a.rank} and {b.rank}; unsqueeze the smaller one in the model"


rule_cross = strategy(
    "linalg/cross", op="aten.linalg_cross.default", kind="decompose",
    layers="three Slices per operand, ElementWise PROD/SUB, Concatenation along dim",
    checks=trt_checks(same_rank_operands), emit=_emit_cross,
    examples=cases((lambda a, b: torch.linalg.cross(a, b), t(2, 3), t(1, 3))))

OP = "transformers.grouped_mm_fallback.default"


def _grouped_mm(x, w, offs):
    import transformers.integrations.moe  # noqa: F401  (registers transformers::grouped_mm_fallback)

    return torch.ops.transformers.grouped_mm_fallback(x, w, offs)


def _example(x, w):
    """Four experts, expert 1 empty, the last row past every offset (zero)."""
    return _grouped_mm(x, w, torch.tensor([2, 2, 5, 7]))


def _emit_grouped_mm(ctx, node):
    """Expert of row s = #{i : offs[i] <= s}; MatrixMultiply of every row by every expert ([E, S, out], the batch dim
    broadcast), then Select each row's expert (an index past the last one selects none: zero) and Reduce SUM over E."""
    x, w, offs = ctx.input("input"), ctx.input("weight"), ctx.cast(ctx.input("offs"), "int64")
    w = ctx.cast(w, ctx.dtype(x))
    rows_n, experts_n = node.meta("input").shape[0], node.meta("weight").shape[0]
    next_rows = ctx.reshape(ctx.arange(rows_n, start=1, dtype="int64"), [-1, 1])  # s + 1 for each row s: [S, 1]
    started = ctx.elementwise(ctx.reshape(offs, [1, -1]), next_rows, "LESS")  # offs[i] < s + 1: offs[i] <= s
    expert = ctx.reduce(ctx.cast(started, "int32"), "SUM", [1])  # [S]
    every = _matmul(ctx, x, w)  # [S, in] broadcast against [E, in, out]: [E, S, out]
    ids = ctx.reshape(ctx.arange(experts_n, dtype="int32"), [-1, 1])  # [E, 1]
    own = ctx.reshape(ctx.elementwise(ids, ctx.reshape(expert, [1, -1]), "EQUAL"), [experts_n, -1, 1])  # [E, S, 1]
    kept = ctx.where(own, every, ctx.const([0.0], ctx.dtype(every)))
    return ctx.reduce(kept, "SUM", [0])


rule_grouped_mm = strategy(
    "moe/grouped-mm", op=OP, kind="decompose",
    layers="Elementwise LESS + Reduce SUM (each row's expert), MatrixMultiply of every row by every expert, "
           "Select the row's own, Reduce SUM over experts",
    checks=trt_checks(promoted_float_input), emit=promoting(_emit_grouped_mm),
    examples=cases((_example, t(8, 6), t(4, 6, 5))),
    contract="exact; computes every expert for every row (E times the FLOPs of transformers' loop over experts)",
    doc="transformers' grouped matmul for mixture-of-experts layers (Mixtral, Qwen2-MoE)")
