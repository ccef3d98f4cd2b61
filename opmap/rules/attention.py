"""Attention as one unit (IAttention) or decomposed (MatrixMultiply, SoftMax, MatrixMultiply)."""

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


def float_query(node, **_):
    q = node.meta("query")
    assert q is not None and q.dtype in ("float32", "float16", "bfloat16"), f"query is {q.dtype if q else '?'}; attention takes float types"


def no_dropout(node, **_):
    assert node.arg("dropout_p", 0.0) == 0.0, "attention dropout is random; export in eval mode"


sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731

define(ns, "attn/fused", ["aten.scaled_dot_product_attention.default"], "direct",
       layers="Attention (IAttention, marked decomposable so fp32 builds where no dedicated kernel exists)",
       example=(sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
       bad=(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), t(2, 8, 16), t(2, 8, 16), t(2, 8, 16)), match="rank 3",
       checks=[float_query, fused_attention_supported])
define(ns, "attn/decomposed", ["aten.scaled_dot_product_attention.default"], "decompose",
       layers="MatrixMultiply Q·Kᵀ, scale, causal/additive mask via Select, SoftMax, MatrixMultiply with V",
       example=(sdpa, t(1, 2, 8, 16), t(1, 2, 8, 16), t(1, 2, 8, 16)),
       checks=[float_query, no_dropout])

