"""Random ops whose samples no network can reproduce, refused with what the user can do instead."""

import torch

from opmap.planning.strategy import reject, strategy
from opmap.rules.common import t


@strategy("random/randperm", op=["aten.randperm.default", "aten.randperm.generator"], kind="plugin",
          examples=[reject(lambda a: a[torch.randperm(5)], t(5, 2), match="argsort")],
          no_accept="a network cannot reproduce PyTorch's permutation for a seed; the rule can only refuse")
def rule_randperm(node):
    """``randperm``: a uniformly random permutation of 0..n-1, drawn by PyTorch's own shuffle."""
    assert False, (
        f"{node.op} draws PyTorch's permutation for its generator state, which no TensorRT network reproduces: a network "
        "can draw a uniformly random permutation (a random-uniform Fill of n keys, then TopK; uniform in distribution, "
        "up to ties among float32 keys, at most 3840 elements on TensorRT's TopK), but not the same one, so it cannot be "
        "verified against PyTorch. If any random order will do, write torch.rand(n).argsort() in the model: opmap maps "
        "it (random/fill, whose contract is PyTorch's distribution with other values, then argsort)")
