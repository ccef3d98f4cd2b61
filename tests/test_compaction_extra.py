"""unique_consecutive and unique(dim=) over argument combinations and edge inputs: built on tensorrt_rtx, run by the
reference interpreter, every output (padded values, inverse, counts, the valid count) compared with PyTorch."""

import pytest
import torch

from tests.test_sampling import _built

INPUTS = [torch.tensor([3]), torch.full((6,), 7), torch.arange(6), torch.tensor([[2, 2, 5], [5, 5, 2]]),
          torch.tensor([1.5, 1.5, -0.0, 0.0, 2.5, 2.5, 2.5]), torch.tensor([True, True, False, True])]


@pytest.mark.parametrize("x", INPUTS, ids=["one", "all-equal", "all-distinct", "2-d", "float-zeros", "bool"])
@pytest.mark.parametrize("inverse, counts", [(False, False), (True, False), (False, True), (True, True)])
def test_unique_consecutive_combinations(x, inverse, counts):
    _built("unique/consecutive-compact", lambda a: torch.unique_consecutive(a, return_inverse=inverse, return_counts=counts), x)


@pytest.mark.parametrize("x, dim", [(torch.tensor([[1, 1], [1, 1], [1, 1]]), 0), (torch.tensor([[3, 1, 2]]), 1),
                                    (torch.tensor([[[1, 2], [1, 2]], [[0, 9], [1, 2]]]), 2),
                                    (torch.tensor([[0.5, -1.0], [0.5, -2.0], [-3.0, 4.0], [0.5, -1.0]]), 0)])
def test_unique_dim_combinations(x, dim):
    _built("unique/dim-pairwise", lambda a: torch.unique(a, dim=dim, return_inverse=True, return_counts=True), x)


def test_selection_bound_takes_the_data_dependent_axis():
    """unique(dim=1)'s data-dependent size is its dim 1 (dim 0 is static): the bound is the input's size along dim 1,
    a bound declared on that size symbol applies, and nonzero's rows stay axis 0."""
    from opmap.loading.capture import capture_callable
    from opmap.planning.fixtures import Bounds, Settings
    from opmap.rules.nonzero import selected_axis, selection_bound

    graph = capture_callable(lambda a: (torch.unique(a, dim=1), torch.nonzero(a)), torch.tensor([[3, 1, 3, 2, 1]] * 2)).graph
    unique = next(n for n in graph if n.op == "aten.unique_dim.default")
    nonzero = next(n for n in graph if n.op == "aten.nonzero.default")
    assert selected_axis(unique) == 1 and isinstance(unique.out.shape[1], str) and unique.out.shape[0] == 2
    bounds = Bounds(graph)
    assert selection_bound(unique, bounds) == 5, "at most the input's 5 columns (not dim 0's static 2)"
    assert selection_bound(unique, bounds, Settings(declared_bounds=((unique.out.shape[1], 3),))) == 3
    assert selected_axis(nonzero) == 0 and selection_bound(nonzero, bounds) == 10
    _built("unique/dim-pairwise", lambda a: torch.unique(a, dim=1, return_counts=True), torch.tensor([[3, 1, 3, 2, 1]] * 2))
