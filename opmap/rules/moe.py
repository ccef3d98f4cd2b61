"""Mixture-of-experts: the grouped matmul transformers exports for its expert layers.

transformers (5.x) routes MoE experts through its own custom op ``transformers::grouped_mm_fallback(input, weight,
offs)``: rows of ``input`` are sorted by expert, ``offs`` holds the cumulative row count per expert, and rows
``[offs[i-1], offs[i])`` are multiplied by ``weight[i]``; rows past the last offset stay zero. TensorRT has no grouped
matmul layer; the exact network below computes every expert for every row and keeps each row's own.
"""

import torch

from opmap.planning.strategy import strategy
from opmap.rules.common import cases, promoted_float_input, t, trt_checks
from opmap.rules.emitting import promoting
from opmap.rules.linalg import _matmul


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


rule_grouped_mm = strategy("moe/grouped-mm", op=OP, kind="decompose",
                           layers="Elementwise LESS + Reduce SUM (each row's expert), MatrixMultiply of every row by every expert, "
                                  "Select the row's own, Reduce SUM over experts",
                           checks=trt_checks(promoted_float_input), emit=promoting(_emit_grouped_mm),
                           examples=cases((_example, t(8, 6), t(4, 6, 5))),
                           contract="exact; computes every expert for every row (E times the FLOPs of transformers' loop over experts)",
                           doc="transformers' grouped matmul for mixture-of-experts layers (Mixtral, Qwen2-MoE)")
