"""Random ops: rand/randn as TensorRT Fill layers (same distribution, other values), and random ops no network can
reproduce (randperm), refused with what the user can do instead."""

import torch

from opmap.planning.strategy import reject, strategy
from opmap.rules.common import cases, t, trt_checks


def _emit_random(ctx, node):
    dims = list(node.out.shape)
    dtype = ctx.output_dtype()
    normal = "randn" in node.op
    op = ctx.trt.FillOperation.RANDOM_NORMAL if normal else ctx.trt.FillOperation.RANDOM_UNIFORM
    from opmap.building.builder import trt_dtype

    layer = ctx.net.add_fill(tuple(dims), op, trt_dtype(ctx.trt, "float32"))
    layer.alpha, layer.beta = (0.0, 1.0)  # uniform: [min, max); normal: mean, std
    return ctx.cast(ctx.out(layer, "random"), dtype)


rule_fill = strategy(
    "random/fill", op=["aten.rand.default", "aten.randn.default", "aten.rand_like.default", "aten.randn_like.default"],
    kind="direct",
    layers="Fill RANDOM_UNIFORM / RANDOM_NORMAL (same distribution, a different random stream than PyTorch)",
    checks=trt_checks(lambda node, **_: _static_out(node)), emit=_emit_random,
    examples=cases((lambda a: torch.rand(2, 3) + a, t(2, 3)), (lambda a: torch.randn(4, 3) * a, t(4, 3)),
                   (lambda a: torch.rand_like(a) + a, t(4, 3)), (lambda a: torch.randn_like(a) + a, t(4, 3)),
                   bad=(lambda a: torch.rand(2, 3, dtype=torch.float64) + a, t(2, 3))),
    contract="same distribution as PyTorch, different values: compare statistics, not elements")


def _static_out(node):
    assert node.out is not None and node.out.is_static, f"output {node.out} has dynamic dims; the Fill shape is set at build time"


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
