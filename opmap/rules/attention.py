"""Attention as one unit (IAttention) or decomposed (MatrixMultiply, SoftMax, MatrixMultiply)."""

import math

import torch
import torch.nn.functional as F

from opmap.rules.common import define, t

ns = globals()


def fused_attention_supported(node, backend, settings, **_):
    """IAttention builds only where a dedicated kernel exists (not in fp32 on TensorRT-RTX unless decomposable)."""
    assert backend.has_layer("add_attention") is not False, f"{backend.name} has no INetworkDefinition.add_attention"
    assert node.arg("dropout_p", 0.0) == 0.0, "attention dropout is random; export in eval mode"
    q = node.meta("query")
    assert q is not None and q.rank == 4, f"query has rank {q.rank if q else '?'}; IAttention takes [batch, heads, seq, dim]"
    assert not node.arg("enable_gqa", False) or q.shape[1] == node.meta("key").shape[1], "grouped-query attention needs its K/V heads repeated first"
    heads = (q.shape[1], node.meta("key").shape[1])
    assert all(isinstance(h, int) for h in heads), (
        f"head counts {heads} are dynamic; IAttention decides MHA, MQA or GQA when the engine is built")


def static_gqa_heads(node, **_):
    """Grouped-query attention repeats K/V heads by q_heads // kv_heads, a factor the network fixes at build time."""
    if node.arg("enable_gqa", False):
        heads = (node.meta("query").shape[1], node.meta("key").shape[1])
        assert all(isinstance(h, int) for h in heads), f"grouped-query head counts {heads} are dynamic; the repeat factor must be static"


def float_query(node, **_):
    q = node.meta("query")
    assert q is not None and q.dtype in ("float32", "float16", "bfloat16"), f"query is {q.dtype if q else '?'}; attention takes float types"


def no_dropout(node, **_):
    assert node.arg("dropout_p", 0.0) == 0.0, "attention dropout is random; export in eval mode"


def _scale(ctx, node, dtype):
    """The softmax scale: the given one, else 1/sqrt(head dim) — from a shape tensor when the head dim is symbolic."""
    scale, dim = node.arg("scale"), node.meta("query").shape[-1]
    if scale is not None or isinstance(dim, int):
        return ctx.const(float(scale) if scale is not None else 1.0 / math.sqrt(dim), dtype)
    root = ctx.unary(ctx.cast(ctx.size(dim), "float32"), "SQRT")
    return ctx.cast(ctx.elementwise(ctx.const([1.0], "float32"), root, "DIV"), dtype)


def _kv_heads(ctx, node, t):
    """Grouped-query attention: repeat K/V heads to the query's head count (PyTorch's enable_gqa)."""
    q_heads, kv_heads = node.meta("query").shape[1], node.meta("key").shape[1]
    if q_heads == kv_heads:
        return t
    b, _, s, h = node.meta("key").shape
    rep = q_heads // kv_heads
    t = ctx.reshape(t, [b, kv_heads, 1, s, h])
    repeated = ctx.slice(t, [0] * 5, [b, kv_heads, rep, s, h], [1, 1, 0, 1, 1])
    return ctx.reshape(repeated, [b, q_heads, s, h])


def _causal_keep(ctx, L, S):
    """[1, 1, L, S] bool: query i sees key j <= i (PyTorch's is_causal, top-left aligned), for static or symbolic L, S."""
    if isinstance(L, int) and isinstance(S, int):
        return ctx.const(torch.ones(L, S, dtype=torch.bool).tril().reshape(1, 1, L, S), "bool")
    rows = ctx.reshape(ctx.arange(L), [1, 1, L, 1])
    cols = ctx.reshape(ctx.arange(S), [1, 1, 1, S])
    return ctx.unary(ctx.elementwise(rows, cols, "LESS"), "NOT")


def _emit_decomposed(ctx, node):
    q, k, v = ctx.input("query"), _kv_heads(ctx, node, ctx.input("key")), _kv_heads(ctx, node, ctx.input("value"))
    dt = ctx.dtype(q)
    op = ctx.trt.MatrixOperation
    q = ctx.elementwise(q, _scale(ctx, node, dt), "PROD")
    scores = ctx.out(ctx.net.add_matrix_multiply(q, op.NONE, k, op.TRANSPOSE), "qk")
    L, S = node.meta("query").shape[-2], node.meta("key").shape[-2]
    neg_inf = ctx.const(float("-inf"), dt, shape=[1, 1, 1, 1])
    if node.arg("is_causal", False):
        keep = _causal_keep(ctx, L, S)
        scores = ctx.out(ctx.net.add_select(*ctx.broadcast(keep, scores, neg_inf)), "causal")
    mask = node.arg("attn_mask")
    if mask is not None:
        m = ctx.tensor(mask)
        if ctx.dtype(m) == "bool":
            scores = ctx.out(ctx.net.add_select(*ctx.broadcast(m, scores, neg_inf)), "mask")
        else:
            scores = ctx.elementwise(scores, m, "SUM")
    sm = ctx.net.add_softmax(scores)
    sm.axes = 1 << 3
    probs = ctx.out(sm, "softmax")
    return ctx.out(ctx.net.add_matrix_multiply(probs, op.NONE, v, op.NONE), "pv")


def _emit_fused(ctx, node):
    q, k, v = ctx.input("query"), ctx.input("key"), ctx.input("value")
    q = ctx.elementwise(q, _scale(ctx, node, ctx.dtype(q)), "PROD")  # IAttention does not scale Q·Kᵀ
    attn = ctx.net.add_attention(q, k, v, ctx.trt.AttentionNormalizationOp.SOFTMAX, bool(node.arg("is_causal", False)))
    attn.decomposable = True  # fp32 has no dedicated kernel on RTX; decomposable lets it build
    mask = node.arg("attn_mask")
    if mask is not None:
        attn.mask = ctx.tensor(mask)
    attn.name = f"{node.name}/{ctx.strategy.id}/attention"
    out = attn.get_output(0)
    ctx.nb.attention[attn.name] = attn
    ctx.nb.layer_map[attn.name] = {"node": node.name, "strategy": ctx.strategy.id}
    return out


sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731

define(ns, "attn/fused", ["aten.scaled_dot_product_attention.default"], "direct",
       layers="Attention (IAttention, marked decomposable so fp32 builds where no dedicated kernel exists)",
       example=(sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
       bad=(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), t(2, 8, 16), t(2, 8, 16), t(2, 8, 16)), match="rank 3",
       checks=[float_query, fused_attention_supported], emit=_emit_fused)
define(ns, "attn/decomposed", ["aten.scaled_dot_product_attention.default"], "decompose",
       layers="MatrixMultiply Q·Kᵀ, scale, causal/additive mask via Select, SoftMax, MatrixMultiply with V",
       example=(sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
       checks=[float_query, no_dropout, static_gqa_heads], emit=_emit_decomposed)

