"""``split.sizes``: ``split`` called with a list of sizes (the overload ``torch.split(x, [2, 4])`` resolves to before
PyTorch's decomposition turns it into ``split_with_sizes``). The pieces are given, so they are sliced as
``shape/split`` slices ``split_with_sizes``, dynamic dims included."""

import torch

from opmap.rules.common import define, t
from opmap.rules.shape import _emit_split, constant_dims

A = torch.ops.aten
ns = globals()

define(ns, "shape/split-sizes", "aten.split.sizes", "decompose", layers="one Slice per piece, of the given sizes",
       example=(lambda a: [p * 2 for p in A.split.sizes(a, [2, 1, 3], 1)], t(2, 6)),
       checks=[constant_dims("split_size")], emit=_emit_split)
