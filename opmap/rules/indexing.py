"""Embedding, gather and integer indexing, scatter: IGatherLayer, IScatterLayer."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, static_arg, t

ns = globals()


def integer_indices(node, graph, **_):
    """aten.index with integer index tensors maps to Gather; a bool mask is the non-zero family's job."""
    for i, ref in enumerate(node.arg("indices") or []):
        if ref is None:
            continue
        meta = graph.meta_of(ref)
        assert meta is not None and meta.dtype in ("int32", "int64"), (
            f"index {i} is a {meta.dtype if meta else 'non-tensor'} tensor; boolean masks need a non-zero strategy"
        )


def single_index_tensor(node, **_):
    given = [i for i in (node.arg("indices") or []) if i is not None]
    assert len(given) == 1, f"{len(given)} index tensors; one Gather handles one indexed dim (advanced indexing needs GatherND)"


def no_reduce(node, **_):
    reduce = node.arg("reduce")
    assert reduce in (None, "none"), f"scatter with reduce={reduce!r}: TensorRT's Scatter overwrites, it cannot accumulate"


define(ns, "gather/embedding", "aten.embedding.default", "direct", layers="Gather on axis 0 of the weight constant",
       example=(F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4)), bad=(F.embedding, torch.tensor([[1, 3, 0]]), t(8, 4).double()),
       checks=[static_arg("weight")])
define(ns, "gather/index-select", "aten.index_select.default", "direct", layers="Gather on one axis",
       example=(lambda a, i: a.index_select(1, i), t(3, 5), torch.tensor([4, 0])))
define(ns, "gather/gather", "aten.gather.default", "direct", layers="Gather in ELEMENT mode",
       example=(lambda a, i: a.gather(1, i), t(3, 5), torch.tensor([[0, 1], [2, 3], [4, 4]])))
define(ns, "gather/index-int", "aten.index.Tensor", "direct", layers="Gather on the indexed axis (one integer index tensor)",
       example=(lambda a, i: a[:, i], t(3, 5), torch.tensor([4, 0, 1])),
       bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks", checks=[integer_indices, single_index_tensor])
define(ns, "gather/index-nd", "aten.index.Tensor", "direct",
       layers="GatherND over stacked (broadcast) integer indices",
       example=(lambda a, i, j: a[i, j], t(3, 5), torch.tensor([0, 2]), torch.tensor([1, 4])),
       bad=(lambda a, m: a[m], t(3, 5), t(3, 5, dtype=torch.bool)), match="boolean masks", checks=[integer_indices])
define(ns, "scatter/scatter", ["aten.scatter.src", "aten.scatter.value", "aten.scatter.reduce", "aten.scatter.value_reduce"], "direct", layers="Scatter in ELEMENT mode",
       example=(lambda a, i, s: a.scatter(1, i, s), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
       bad=(lambda a, i, s: a.scatter(1, i, s, reduce="add"), t(3, 5), torch.tensor([[0], [2], [4]]), t(3, 1)),
       match="cannot accumulate", checks=[no_reduce])
define(ns, "scatter/index-put", ["aten.index_put.default", "aten.index_put_.default"], "direct",
       layers="Scatter in ND mode (overwrite)",
       example=(lambda a, i, v: a.index_put((i,), v), t(5, 3), torch.tensor([0, 3]), t(2, 3)),
       bad=(lambda a, i, v: a.index_put((i,), v, accumulate=True), t(5, 3), torch.tensor([0, 3]), t(2, 3)), match="accumulate",
       checks=[lambda node, **_: _no_accumulate(node)])


def _no_accumulate(node):
    acc = node.arg("accumulate", False)
    assert not acc, "index_put with accumulate=True: Scatter overwrites duplicates instead of summing them"
