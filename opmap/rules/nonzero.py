"""The non-zero family: ``nonzero``, boolean-mask indexing, ``masked_select``, ``nonzero_static``.

Their output size is known only at run time. Four ways to map them:
  * direct: INonZeroLayer (data-dependent output; the runtime needs an output allocator);
  * decompose / static bound: pad to the upper bound torch.export proved, plus a count;
  * decompose / masked rewrite: when every consumer reduces, compute ``where(mask, x, neutral)``;
  * plugin: an IPluginV3 with a size tensor (full TensorRT only).
Which ones a backend can build is established by probe builds, not by a list.
"""

import torch

from opmap.engine.rules import accept, reject, strategy
from opmap.plugins import plugin_available
from opmap.rules.common import max_rank, t, trt_types

NONZERO = ["aten.nonzero.default", "aten.argwhere.default"]
MASK_SELECT = ["aten.index.Tensor", "aten.masked_select.default"]
REDUCTIONS = {
    "aten.sum.default", "aten.sum.dim_IntList", "aten.mean.default", "aten.mean.dim", "aten.amax.default", "aten.amin.default",
    "aten.max.default", "aten.min.default", "aten.any.default", "aten.all.default", "aten.count_nonzero.default",
    "aten.count_nonzero.dim_IntList", "aten.sym_size.int",
}
NONZERO_CONTRACT = "output padded to the static bound N with -1 rows; an extra int64 output holds the valid count"
MASK_CONTRACT = "output padded to the static bound N with zeros; an extra int64 output holds the valid count"

mask_index = lambda x, m: x[m]  # noqa: E731
all_true = torch.ones(3, 4, dtype=torch.bool)


def _bool_mask(node, graph):
    """The boolean mask argument of a mask-selecting node (asserts there is exactly one)."""
    if node.op == "aten.masked_select.default":
        ref = node.arg("mask")
    else:
        refs = [r for r in node.arg("indices") or [] if r is not None]
        bools = [r for r in refs if (graph.meta_of(r) or None) is not None and graph.meta_of(r).dtype == "bool"]
        assert bools, "no boolean mask among the indices (integer indexing is a Gather)"
        assert len(refs) == 1, f"{len(refs)} index tensors; the mask strategies take a single boolean mask"
        ref = bools[0]
    return ref


def _static_bound(node, bounds, settings):
    rows = node.out.shape[0] if node.out is not None and node.out.rank else None
    bound = bounds.upper(rows) if rows is not None else None
    assert bound is not None, f"the output size {rows} has no static upper bound in the exported graph"
    assert bound <= settings.max_bound, f"the static bound {bound} exceeds max_bound {settings.max_bound}"
    return bound


@strategy("nonzero/direct", op=NONZERO, kind="direct", tags=("data-dependent",),
          examples=[accept(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt"),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="no runners")])
def rule_nonzero_direct(node, backend):
    """INonZeroLayer: the output has a data-dependent size; the runtime must provide an output allocator."""
    trt_types(node)
    probe = backend.builds("non_zero")
    assert probe.ok is not False, probe.message


@strategy("nonzero/static-bound", op=NONZERO, kind="decompose", tags=("data-dependent",), contract=NONZERO_CONTRACT,
          examples=[accept(torch.nonzero, t(3, 4, dtype=torch.bool)), accept(torch.nonzero, all_true),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), match="max_bound", max_bound=4)])
def rule_nonzero_static_bound(node, bounds, settings):
    """Exclusive Cumulative of the mask gives each true element its slot; Select sends false ones to a dump slot;
    ScatterND into N+1 rows filled with -1; Slice the first N; Reduce SUM counts. Exact, but the contract changes."""
    trt_types(node)
    max_rank(node)
    _static_bound(node, bounds, settings)


@strategy("nonzero/plugin", op=NONZERO + MASK_SELECT, kind="plugin", tags=("data-dependent",),
          examples=[reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="plugin layers"),
                    reject(torch.nonzero, t(3, 4, dtype=torch.bool), backend="tensorrt", match="no NonZero IPluginV3")],
          no_accept="opmap ships no NonZero plugin library yet; until one is registered the rule can only reject")
def rule_nonzero_plugin(node, backend):
    """An IPluginV3 whose output size comes from a size tensor (full TensorRT only)."""
    assert backend.plugins is not False, f"{backend.name} cannot add plugin layers (its network API has no add_plugin_v3)"
    assert plugin_available("opmap::NonZero"), "no NonZero IPluginV3 library is registered (opmap ships none yet)"


@strategy("mask/nonzero-gather", op=MASK_SELECT, kind="decompose", tags=("data-dependent",),
          examples=[accept(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), backend="tensorrt"),
                    reject(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), backend="tensorrt_rtx", match="no runners")])
def rule_mask_nonzero_gather(node, graph, backend):
    """NonZero of the mask, then GatherND: a data-dependent output, as PyTorch returns it."""
    trt_types(node)
    _bool_mask(node, graph)
    probe = backend.builds("non_zero")
    assert probe.ok is not False, probe.message


@strategy("mask/static-bound", op=MASK_SELECT, kind="decompose", tags=("data-dependent",), contract=MASK_CONTRACT,
          examples=[accept(mask_index, t(3, 4), t(3, 4, dtype=torch.bool)),
                    reject(lambda x, i: x[i], t(3, 4), torch.tensor([0, 2]), match="no boolean mask")])
def rule_mask_static_bound(node, graph, bounds, settings):
    """Slots from an exclusive Cumulative of the mask, ScatterND of the selected rows into N+1 rows, Slice N, count."""
    trt_types(node)
    _bool_mask(node, graph)
    _static_bound(node, bounds, settings)


@strategy("mask/masked-reduce", op=MASK_SELECT + NONZERO, kind="decompose", tags=("data-dependent",),
          examples=[accept(lambda x, m: x[m].sum(), t(3, 4), t(3, 4, dtype=torch.bool)),
                    reject(mask_index, t(3, 4), t(3, 4, dtype=torch.bool), match="graph output")])
def rule_mask_masked_reduce(node, graph, consumers):
    """Every consumer reduces the selection away: compute where(mask, x, neutral) and reduce that instead.
    Exact, and no data-dependent shape survives."""
    trt_types(node)
    if node.op in MASK_SELECT:
        _bool_mask(node, graph)
    assert not graph.is_output(node), "the selection itself is a graph output, so its data-dependent shape must survive"
    assert consumers, "the selection has no consumers"
    for user in consumers:
        assert user.op in REDUCTIONS, f"consumer {user.name} ({user.op}) is not a reduction"
