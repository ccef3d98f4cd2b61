"""Matrix products: IMatrixMultiplyLayer (plus ElementWise for bias), IEinsumLayer."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, float_input, t

ns = globals()

define(ns, "mm/linear", "aten.linear.default", "decompose",
       layers="MatrixMultiply with the transposed weight constant, ElementWise SUM for the bias",
       example=(F.linear, t(2, 4), t(3, 4), t(3)), checks=[float_input])
define(ns, "mm/addmm", ["aten.addmm.default", "aten.baddbmm.default"], "decompose",
       layers="MatrixMultiply then ElementWise SUM (beta/alpha folded as PROD)",
       example=(lambda b, x, w: torch.addmm(b, x, w), t(3), t(2, 4), t(4, 3)), checks=[float_input])
define(ns, "mm/matmul", ["aten.mm.default", "aten.bmm.default", "aten.matmul.default"], "direct",
       layers="MatrixMultiply (batch dims broadcast)", example=(torch.matmul, t(2, 3, 4), t(4, 5)), checks=[float_input])
define(ns, "mm/einsum", "aten.einsum.default", "direct", layers="Einsum (TensorRT's subset: no ellipsis, each label ≤ 2 inputs)",
       example=(lambda a, b: torch.einsum("ij,jk->ik", a, b), t(2, 3), t(3, 4)),
       checks=[lambda node, **_: _einsum_subset(node)])


def _einsum_subset(node):
    eq = node.arg("equation") or ""
    assert "..." not in eq, f"einsum {eq!r} uses an ellipsis, which TensorRT's Einsum does not support"
    assert len(node.arg("tensors") or []) <= 2, "TensorRT's Einsum takes at most two inputs"
