"""``split.sizes``: ``split`` called with a list of sizes (the overload ``torch.split(x, [2, 4])`` resolves to before
PyTorch's decomposition turns it into ``split_with_sizes``). The pieces are given, so they are sliced as
``shape/split`` slices ``split_with_sizes``, dynamic dims included."""

import torch

from opmap.planning.strategy import strategy
from opmap.rules.common import cases, t, trt_checks
from opmap.rules.shape import _emit_split, constant_dims

A = torch.ops.aten

rule_split_sizes = strategy("shape/split-sizes", op="aten.split.sizes", kind="decompose",
                            layers="one Slice per piece, of the given sizes",
                            checks=trt_checks(constant_dims("split_size")), emit=_emit_split,
                            examples=cases((lambda a: [p * 2 for p in A.split.sizes(a, [2, 1, 3], 1)], t(2, 6))))
