"""Attention rows hidden entirely are 0 in PyTorch; with is_causal *and* a mask, the two together can hide a row
neither hides alone. The fused layer's correction reads the mask alone, so its rule refuses that call and the
decomposition (which reads the masked scores) takes it. Real export, real build, reference interpreter."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import opmap


class CausalAndMask(torch.nn.Module):
    def forward(self, q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=True)


def test_causal_and_mask_hiding_a_row_together(tmp_path):
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    m = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    m[..., 0, 0] = False  # row 0 sees only key 0 under the causal mask; the mask hides it: the whole row is hidden
    expected = CausalAndMask()(q, k, v, m)
    assert torch.equal(expected[0, :, 0], torch.zeros(2, 8))
    db = f"sqlite:///{tmp_path}/c.db"
    plan = opmap.plan(CausalAndMask(), (q, k, v, m), db=db, record=False)
    (node,) = plan.nodes
    assert node.strategy == "attn/decomposed", node
    engine = opmap.build(CausalAndMask(), (q, k, v, m), db=db)
    report = opmap.verify(engine, inputs={"q": q, "k": k, "v": v, "m": m})
    assert report.ok, report
