"""Small models used by the tests. Importable (``tests.helpers``) so pickled modules can be loaded back."""

import torch
from torch import nn


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Selector(nn.Module):
    """nonzero + boolean-mask indexing + a reduction of a masked selection."""

    def forward(self, x):
        mask = x > 0
        return torch.nonzero(mask), x[mask], x[mask].sum()
