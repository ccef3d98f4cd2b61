"""Reductions, softmax, cumsum, argmax/argmin, topk and sort."""

import torch

from opmap.rules.common import define, float_input, t

ns = globals()


def no_padded_axis(node, bounds, **_):
    """Reducing over a size known only at run time needs that size; a padded layout would count padding."""
    meta = node.meta("self")
    dims = node.arg("dim")
    axes = range(meta.rank) if dims in (None, []) else ([dims] if isinstance(dims, int) else dims)
    for d in axes:
        size = meta.shape[d % max(meta.rank, 1)] if meta.rank else 1
        assert not bounds.data_dependent(size), (
            f"reduces over dim {d} of data-dependent size {size}; plan its producer with a masked rewrite instead"
        )


def static_k(node, **_):
    k = node.arg("k")
    assert isinstance(k, int), f"k={k!r} is not a constant; TensorRT TopK needs k at build time"
    assert k <= 3840, f"k={k} exceeds TensorRT TopK's limit of 3840"


def rank_two_or_more(node, backend, **_):
    meta = node.meta("self")
    assert meta.rank >= 2 or backend.builds("topk_1d").ok is not False, (
        f"{backend.name} TopK needs an input of rank >= 2 (probe: {backend.builds('topk_1d').message})"
    )


REDUCE = [
    ("reduce/sum", ["aten.sum.default", "aten.sum.dim_IntList"], "Reduce SUM", lambda a: a.sum(-1, keepdim=True)),
    ("reduce/mean", ["aten.mean.default", "aten.mean.dim"], "Reduce AVG", lambda a: a.mean((0, 1))),
    ("reduce/amax", ["aten.amax.default", "aten.max.default"], "Reduce MAX", lambda a: a.amax(-1)),
    ("reduce/amin", ["aten.amin.default", "aten.min.default"], "Reduce MIN", lambda a: a.amin(0)),
    ("reduce/prod", ["aten.prod.default", "aten.prod.dim_int"], "Reduce PROD", lambda a: a.prod(1)),
]
for id, ops, layers, fn in REDUCE:
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(3, 4)), checks=[no_padded_axis])

define(ns, "reduce/any", ["aten.any.default", "aten.any.dim", "aten.any.dims"], "decompose",
       layers="Cast bool to int32, Reduce MAX, compare with 0 (Reduce has no boolean OR)",
       example=(lambda m: m.any(-1), t(3, 4, dtype=torch.bool)), bad=(lambda m: m.double().any(-1), t(3, 4, dtype=torch.bool)),
       checks=[no_padded_axis])
define(ns, "reduce/all", ["aten.all.default", "aten.all.dim", "aten.all.dims"], "decompose",
       layers="Cast bool to int32, Reduce MIN, compare with 0",
       example=(lambda m: m.all(-1), t(3, 4, dtype=torch.bool)), bad=(lambda m: m.double().all(-1), t(3, 4, dtype=torch.bool)),
       checks=[no_padded_axis])
define(ns, "reduce/var-mean", ["aten.var.correction", "aten.var_mean.correction", "aten.std.correction", "aten.var.dim", "aten.std.dim", "aten.var_mean.dim"], "decompose",
       layers="Reduce AVG, ElementWise SUB/PROD, Reduce AVG (Bessel correction folded in)",
       example=(lambda a: a.var(-1), t(3, 4)), checks=[float_input, no_padded_axis])
define(ns, "reduce/softmax", ["aten.softmax.int", "aten._softmax.default"], "direct", layers="SoftMax on one axis",
       example=(lambda a: a.softmax(-1), t(2, 5)), checks=[float_input, no_padded_axis])
define(ns, "reduce/log-softmax", ["aten.log_softmax.int", "aten._log_softmax.default"], "decompose",
       layers="SoftMax then Unary LOG", example=(lambda a: a.log_softmax(-1), t(2, 5)), checks=[float_input, no_padded_axis])
define(ns, "reduce/argmax", ["aten.argmax.default", "aten.argmin.default"], "direct",
       layers="TopK MAX/MIN with k=1, index output (cast to int64)",
       example=(lambda a: a.argmax(-1), t(3, 4)), checks=[rank_two_or_more])
define(ns, "reduce/topk", "aten.topk.default", "direct", layers="TopK (k constant, k <= 3840)",
       example=(lambda a: a.topk(2, -1), t(3, 6)), bad=(lambda a: a.topk(2, -1), t(6)), match="rank >= 2",
       checks=[static_k, rank_two_or_more])
define(ns, "reduce/sort-topk", "aten.sort.default", "decompose", layers="TopK with k = the full axis length (<= 3840)",
       example=(lambda a: a.sort(-1), t(3, 6)), bad=(lambda a: a.double().sort(-1), t(3, 6)))
define(ns, "scan/cumsum-layer", "aten.cumsum.default", "direct", layers="Cumulative SUM (inclusive, forward)",
       example=(lambda a: a.cumsum(-1), t(3, 5)), checks=[no_padded_axis])
define(ns, "scan/cumsum-loop", "aten.cumsum.default", "decompose",
       layers="ILoop over the axis with a recurrence accumulating the running sum",
       example=(lambda a: a.cumsum(1), t(3, 5)), checks=[no_padded_axis])
