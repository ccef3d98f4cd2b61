"""embedding_bag through a bag-membership table: built networks beyond the rule's own examples, and verify's input
drawing (offsets ascending from 0, indices inside the table)."""

import torch
import torch.nn.functional as F

from opmap.loading.capture import capture_callable
from opmap.checking.examples import all_dynamic, capture_example, dynamic_conformance
from opmap.loading.graph import Ref
from opmap.planning.strategy import accept
from opmap.checking.verify import draw_inputs
from tests.test_sampling import RULESET, _built


def test_embedding_bag_of_2d_indices_builds_and_matches():
    """A 2-D input: PyTorch flattens it and makes the offsets with arange."""
    _built("bag/membership", lambda w, i: F.embedding_bag(i, w, mode="max"), torch.randn(10, 4), torch.tensor([[1, 2, 7], [4, 5, 0]]))
    _built("bag/membership", lambda w, i: F.embedding_bag(i, w, mode="mean"), torch.randn(10, 4), torch.tensor([[1, 2, 7], [4, 5, 0]]))


def test_embedding_bag_of_2d_indices_with_a_dynamic_bag_length():
    """Every dim dynamic: the offsets are ``arange(0, numel, bag length)``, a step the graph computes (a SymInt), which
    create/arange feeds to Fill LINSPACE as a tensor; verified at the profile's min, an interior point and its max."""
    example = accept(lambda w, i: F.embedding_bag(i, w, mode="sum"), torch.randn(10, 4), torch.tensor([[1, 2, 7], [4, 5, 0]]))
    result = dynamic_conformance(RULESET.strategies["bag/membership"], example, RULESET)
    arange = next(n for n in capture_example(example, all_dynamic(example)).graph if n.op.startswith("aten.arange"))
    assert isinstance(arange.arg("step"), Ref), "the step is a graph value"
    assert result.reports and set(result.reports) == {"min", "opt", "max"}, (result.verdict, result.unmapped, result.skipped)
    assert all(r.ok for r in result.reports.values()), {k: [o.to_dict() for o in r.outputs] for k, r in result.reports.items()}


def test_verify_draws_valid_offsets_and_indices():
    fn = lambda w, i, o: F.embedding_bag(i, w, o, mode="sum", include_last_offset=True)  # noqa: E731
    graph = capture_callable(fn, torch.randn(6, 3), torch.tensor([1, 2, 4, 5, 4]), torch.tensor([0, 2, 5])).graph
    for seed in range(20):
        values, how = draw_inputs(graph, seed=seed)
        w, i, o = values.values()  # in argument order
        offsets, indices = o, i
        assert offsets[0] == 0 and offsets[-1] == 5 and bool((offsets[1:] >= offsets[:-1]).all()), offsets
        assert int(indices.max()) < 6 and "rows of" in list(how.values())[1], how
        torch.testing.assert_close(fn(w, indices, offsets).shape, torch.Size([2, 3]))
