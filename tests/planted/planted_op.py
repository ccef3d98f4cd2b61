"""``opmap_test::offset(x, bias) = x + bias``: a custom op only the planted rule beside it maps (tests/test_locate.py)."""

import torch


@torch.library.custom_op("opmap_test::offset", mutates_args=())
def offset(x: torch.Tensor, bias: float) -> torch.Tensor:
    return x + bias


@offset.register_fake
def _(x, bias):
    return torch.empty_like(x)
