"""Attention as one unit (IAttention) or decomposed (MatrixMultiply, SoftMax, MatrixMultiply)."""

import math

import torch
import torch.nn.functional as F

from opmap.planning.strategy import strategy
from opmap.rules.common import cases, t, trt_checks



def fused_attention_supported(node, backend, settings, **_):
    """IAttention builds only where a dedicated kernel exists (not in fp32 on TensorRT-RTX unless decomposable)."""
    assert backend.has_layer("add_attention") is not False, f"{backend.name} has no INetworkDefinition.add_attention"
    assert node.arg("dropout_p", 0.0) == 0.0, "attention dropout is random; export in eval mode"
    q = node.meta("query")
    assert q is not None and q.rank == 4, f"query has rank {q.rank if q else '?'}; IAttention takes [batch, heads, seq, dim]"
    assert not node.arg("enable_gqa", False) or q.shape[1] == node.meta("key").shape[1], "grouped-query attention needs its K/V heads repeated first"
    mask = node.meta("attn_mask")
    assert mask is None or mask.rank == 4, f"attn_mask has rank {mask.rank}; IAttention takes a 4-D mask"
    k, v = node.meta("key"), node.meta("value")
    assert k.shape == v.shape, f"key {k.shape} and value {v.shape} differ in shape; IAttention takes one shape for both (a build refuses others)"
    heads = (q.shape[1], node.meta("key").shape[1])
    assert all(isinstance(h, int) for h in heads), (
        f"head counts {heads} are dynamic; IAttention decides MHA, MQA or GQA when the engine is built")


def mask_without_causal(node, **_):
    """A query row every key is hidden from is 0 in PyTorch's attention; the fused layer's output is corrected for such
    rows as the mask alone shows them. With ``is_causal`` too, the causal part and the mask together may hide a row
    neither hides alone (row 0 with key 0 masked), which that correction cannot see."""
    assert not (node.arg("is_causal", False) and node.arg("attn_mask") is not None), (
        "is_causal together with an attn_mask: the two may hide a whole row together, which the fused layer's "
        "masked-row correction (read from the mask alone) cannot see; attn/decomposed reads both")


def static_gqa_heads(node, **_):
    """Grouped-query attention repeats K/V heads by q_heads // kv_heads, a factor the network fixes at build time."""
    if node.arg("enable_gqa", False):
        q, k = node.meta("query"), node.meta("key")
        assert q.rank >= 3 and k.rank >= 3, f"grouped-query attention on rank {q.rank}: there is no head axis (dim -3) to repeat"
        heads = (q.shape[-3], k.shape[-3])
        assert all(isinstance(h, int) for h in heads), f"grouped-query head counts {heads} are dynamic; the repeat factor must be static"


def same_batch_dims(node, **_):
    """Q, K and V have one rank and the same leading (batch) dims — K/V heads may be fewer under enable_gqa: the
    decomposition multiplies them batch by batch and emits no broadcasting of batch dims."""
    _batch_dims(node, shared_kv=False)


def same_or_shared_kv_batch_dims(node, **_):
    """As :func:`same_batch_dims`, and K and V may both have 1 at a batch dim where Q has more (multi-query attention
    written as a broadcast, as Falcon's is): the products broadcast it, as PyTorch's attention does."""
    _batch_dims(node, shared_kv=True)


def _batch_dims(node, shared_kv: bool) -> None:
    q, k, v = node.meta("query"), node.meta("key"), node.meta("value")
    assert q.rank >= 2 and q.rank == k.rank == v.rank, f"query, key and value have ranks {q.rank}, {k.rank}, {v.rank}; the decomposition takes one rank >= 2"
    gqa = 3 if node.arg("enable_gqa", False) else None
    for axis in range(q.rank - 2):
        dims = (q.shape[axis], k.shape[axis], v.shape[axis])
        if q.rank - axis == gqa:
            assert k.shape[axis] == v.shape[axis], f"key and value head counts differ: {dims[1]} and {dims[2]}"
            continue
        if shared_kv and dims[1] == dims[2] == 1:
            continue
        assert dims[0] == dims[1] == dims[2], f"batch dim {axis} differs between query, key and value {dims}; broadcasting them is not emitted"


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


def _kv_heads(ctx, node, name):
    """Grouped-query attention: repeat K/V heads (dim -3) to the query's head count (PyTorch's enable_gqa), any rank;
    one K/V head (multi-query) is not repeated: the products broadcast it."""
    t = ctx.input(name)
    q_heads, kv_heads = node.meta("query").shape[-3], node.meta(name).shape[-3]
    if q_heads == kv_heads or kv_heads == 1:
        return t
    *lead, _, s, h = node.meta(name).shape
    rep = q_heads // kv_heads
    n = len(lead) + 4
    t = ctx.reshape(t, [*lead, kv_heads, 1, s, h])
    repeated = ctx.slice(t, [0] * n, [*lead, kv_heads, rep, s, h], [1] * (n - 3) + [0, 1, 1])
    return ctx.reshape(repeated, [*lead, q_heads, s, h])


def _causal_keep(ctx, L, S, rank):
    """[1, ..., 1, L, S] bool of ``rank`` dims: query i sees key j <= i (PyTorch's is_causal, top-left aligned), for
    static or symbolic L, S."""
    ones = [1] * (rank - 2)
    if isinstance(L, int) and isinstance(S, int):
        return ctx.const(torch.ones(L, S, dtype=torch.bool).tril().reshape(*ones, L, S), "bool")
    rows = ctx.reshape(ctx.arange(L), [*ones, L, 1])
    cols = ctx.reshape(ctx.arange(S), [*ones, 1, S])
    return ctx.unary(ctx.elementwise(rows, cols, "LESS"), "NOT")


def _emit_decomposed(ctx, node):
    q, k, v = ctx.input("query"), _kv_heads(ctx, node, "key"), _kv_heads(ctx, node, "value")
    dt = ctx.dtype(q)
    op = ctx.trt.MatrixOperation
    q = ctx.elementwise(q, _scale(ctx, node, dt), "PROD")
    scores = ctx.out(ctx.net.add_matrix_multiply(q, op.NONE, k, op.TRANSPOSE), "qk")
    L, S = node.meta("query").shape[-2], node.meta("key").shape[-2]
    rank = ctx.rank(scores)
    neg_inf = ctx.const(float("-inf"), dt, shape=[1] * rank)
    if node.arg("is_causal", False):
        keep = _causal_keep(ctx, L, S, rank)
        scores = ctx.out(ctx.net.add_select(*ctx.broadcast(keep, scores, neg_inf)), "causal")
    mask = node.arg("attn_mask")
    if mask is not None:
        m = ctx.tensor(mask)
        if ctx.dtype(m) == "bool":
            scores = ctx.out(ctx.net.add_select(*ctx.broadcast(m, scores, neg_inf)), "mask")
        else:
            scores = ctx.elementwise(scores, m, "SUM")
    sm = ctx.net.add_softmax(scores)
    sm.axes = 1 << (rank - 1)  # the key axis, whatever the rank (5-D block-local attention too)
    probs = ctx.out(sm, "softmax")
    out = ctx.out(ctx.net.add_matrix_multiply(probs, op.NONE, v, op.NONE), "pv")
    if mask is not None:  # a row masked entirely: softmax of all -inf is NaN, PyTorch's attention gives 0 there
        dead = _dead_rows(ctx, m, scores, neg_inf, causal=node.arg("is_causal", False))
        out = ctx.where(dead, ctx.const(0.0, dt, shape=[1] * rank), out)
    return out


def _dead_rows(ctx, m, scores, neg_inf, causal: bool):
    """Per query row (keepdim on the key axis): every key hidden. Without ``is_causal`` the mask alone says it (its
    heads and queries as they broadcast, often fewer than the scores'); with it, the masked scores do (the causal
    part and the mask together may hide a row). Replacing the rows of the output (head dim wide) rather than of the
    probabilities (key axis wide) reads and writes less."""
    if causal:
        hidden = ctx.cast(ctx.elementwise(scores, neg_inf, "EQUAL"), "int32")
        return ctx.elementwise(ctx.reduce(hidden, "MIN", [-1], keepdim=True), ctx.const(1, "int32"), "EQUAL")
    if ctx.dtype(m) == "bool":
        return ctx.elementwise(ctx.reduce(ctx.cast(m, "int32"), "MAX", [-1], keepdim=True), ctx.const(0, "int32"), "EQUAL")
    hidden = ctx.cast(ctx.elementwise(m, ctx.const(float("-inf"), ctx.dtype(m), shape=[1] * ctx.rank(m)), "EQUAL"), "int32")
    return ctx.elementwise(ctx.reduce(hidden, "MIN", [-1], keepdim=True), ctx.const(1, "int32"), "EQUAL")


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
    if mask is not None:  # a query row the mask hides entirely is 0 in PyTorch's attention (a softmax of all -inf is NaN)
        dead = _dead_rows(ctx, ctx.tensor(mask), None, None, causal=False)
        out = ctx.where(dead, ctx.const(0.0, ctx.dtype(out), shape=[1] * 4), out)
    return out


sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731

rule_fused = strategy(
    "attn/fused", op=["aten.scaled_dot_product_attention.default"], kind="direct",
    layers="Attention (IAttention, marked decomposable so fp32 builds where no dedicated kernel exists)",
    checks=trt_checks(float_query, fused_attention_supported, mask_without_causal, same_batch_dims), emit=_emit_fused,
    examples=cases((sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
                   bad=(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), t(2, 8, 16), t(2, 8, 16), t(2, 8, 16)),
                   match="rank 3"))

rule_decomposed = strategy(
    "attn/decomposed", op=["aten.scaled_dot_product_attention.default"], kind="decompose",
    layers="MatrixMultiply Q·Kᵀ, scale, causal/additive mask via Select, SoftMax, MatrixMultiply with V",
    checks=trt_checks(float_query, no_dropout, static_gqa_heads, same_or_shared_kv_batch_dims), emit=_emit_decomposed,
    examples=cases((sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
                   (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), t(2, 4, 8, 16), t(2, 1, 8, 16), t(2, 1, 8, 16),
                    t(2, 4, 8, 8)),  # multi-query as a broadcast (Falcon), an additive mask
                   (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), t(1, 4, 8, 16), t(1, 1, 8, 16),
                    t(1, 1, 8, 16)),
                   bad=(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), t(2, 4, 8, 16), t(2, 1, 8, 16), t(2, 4, 8, 16)),
                   match="differs"))

