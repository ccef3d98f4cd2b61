"""Layout and shape ops: IShuffleLayer, ISliceLayer, IConcatenationLayer, IGatherLayer with constant indices."""

import torch

from opmap.rules.common import define, int_arg, t

ns = globals()


def constant_dims(*names):
    def dims_are_constants(node, **_):
        for name in names:
            value = node.arg(name)
            values = value if isinstance(value, list) else [value]
            for v in values:
                assert v is None or isinstance(v, int), f"{name} contains {v!r}, not a constant int"

    return dims_are_constants


SHUFFLE = [
    ("shape/view", ["aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.flatten.using_ints"],
     "Shuffle reshape (dynamic sizes from shape tensors)", lambda a: a.reshape(2, -1)),
    ("shape/permute", ["aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.numpy_T.default"],
     "Shuffle first_transpose", lambda a: a.permute(1, 0)),
    ("shape/unsqueeze", ["aten.unsqueeze.default"], "Shuffle reshape (or IUnsqueezeLayer)", lambda a: a.unsqueeze(1)),
    ("shape/squeeze", ["aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default"], "Shuffle reshape (or ISqueezeLayer)",
     lambda a: a.unsqueeze(0).squeeze(0)),
    ("shape/expand", ["aten.expand.default", "aten.expand_as.default"], "Slice with stride 0 on broadcast dims", lambda a: a[:, :1].expand(4, 6)),
    ("shape/repeat", ["aten.repeat.default"], "Slice in WRAP mode over the tiled size", lambda a: a.repeat(2, 1)),
]
for id, ops, layers, fn in SHUFFLE:
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(4, 6)))

define(ns, "shape/identity", ["aten.alias.default", "aten.contiguous.default", "aten.clone.default", "aten.detach.default",
                              "aten.lift_fresh_copy.default", "aten.to.device"],
       "direct", layers="no layer: the tensor passes through (TensorRT has no memory format or device per tensor)",
       example=(lambda a: a.contiguous().clone(), t(2, 3)))
define(ns, "shape/slice", ["aten.slice.Tensor"], "direct", layers="Slice (start, size, stride; negative ends resolved)",
       example=(lambda a: a[:, 1:-1:2], t(4, 8)), checks=[int_arg("step")])
define(ns, "shape/select", ["aten.select.int"], "direct", layers="Gather with a constant scalar index (drops the dim)",
       example=(lambda a: a[:, 2], t(4, 8)), checks=[int_arg("index")])
define(ns, "shape/narrow", ["aten.narrow.default"], "direct", layers="Slice", example=(lambda a: a.narrow(1, 2, 3), t(4, 8)))
define(ns, "shape/cat", ["aten.cat.default", "aten.concat.default"], "direct", layers="Concatenation on one axis",
       example=(lambda a, b: torch.cat([a, b], -1), t(2, 3), t(2, 5)))
define(ns, "shape/stack", ["aten.stack.default"], "decompose", layers="Unsqueeze each input, then Concatenation",
       example=(lambda a, b: torch.stack([a, b], 1), t(2, 3), t(2, 3)))
define(ns, "shape/split", ["aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int"],
       "decompose", layers="one Slice per piece", example=(lambda a: a.split(2, -1), t(2, 6)),
       checks=[constant_dims("split_size", "split_sizes", "chunks")])
define(ns, "shape/flip", ["aten.flip.default"], "direct", layers="Slice with stride -1 on the flipped dims",
       example=(lambda a: a.flip(-1), t(2, 6)))
define(ns, "shape/pad", ["aten.constant_pad_nd.default", "aten.pad.default"], "direct",
       layers="Slice in FILL mode (negative start) with the pad value",
       example=(lambda a: torch.nn.functional.pad(a, (1, 2)), t(2, 6)))
define(ns, "shape/triu", ["aten.triu.default", "aten.tril.default"], "decompose",
       layers="two iota Fills, ElementWise compare, Select against zeros", example=(lambda a: a.triu(1), t(4, 4)))
define(ns, "shape/diff", ["aten.diff.default"], "decompose", layers="two Slices offset by one, ElementWise SUB",
       example=(lambda a: torch.diff(a, dim=-1), t(3, 6)))
