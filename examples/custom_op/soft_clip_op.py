"""``mylib::soft_clip``: a custom op defined with ``torch.library``, which TensorRT cannot know.

``soft_clip(x, limit) = limit * tanh(x / limit)``: smooth saturation at ``±limit``. Import this module before
exporting a model that calls it, and before loading such a model (the rule file ``rule_soft_clip.py`` imports it, so
opmap knows the op once that rule is in the catalog)."""

import torch


@torch.library.custom_op("mylib::soft_clip", mutates_args=())
def soft_clip(x: torch.Tensor, limit: float) -> torch.Tensor:
    return limit * torch.tanh(x / limit)


@soft_clip.register_fake
def _(x, limit):
    return torch.empty_like(x)
