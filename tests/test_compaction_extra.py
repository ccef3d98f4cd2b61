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
