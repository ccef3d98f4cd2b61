"""Random sampling and FractionalMaxPool2d (whose windows come from random samples)."""

import torch
import torch.nn.functional as F

from opmap.engine.rules import accept, reject, strategy
from opmap.rules.common import define, float_input, t

ns = globals()

define(ns, "random/fill", ["aten.rand.default", "aten.randn.default", "aten.rand_like.default", "aten.randn_like.default"],
       "direct", layers="Fill RANDOM_UNIFORM / RANDOM_NORMAL (same distribution, a different random stream than PyTorch)",
       example=(lambda a: torch.rand(2, 3) + a, t(2, 3)), bad=(lambda a: torch.rand(2, 3, dtype=torch.float64) + a, t(2, 3)),
       contract="same distribution as PyTorch, different values: compare statistics, not elements")

fmp = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s)  # noqa: E731
fmp_indices = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s, return_indices=True)  # noqa: E731


def _fmp_static(node):
    meta = node.meta("self")
    assert meta is not None and meta.is_static, f"input {meta} has dynamic dims; the window table is computed at build time"
    assert all(isinstance(k, int) for k in node.arg("kernel_size")), "kernel_size is not constant"


def _indices_unused(node, graph):
    for user in graph.consumers(node):
        if user.op == "operator.getitem" and user.arg("arg1") == 1:
            assert not user.users and not graph.is_output(user), (
                f"the indices output is used by {', '.join(user.users) or 'the graph output'}; this strategy computes values only"
            )


@strategy("fmp/exact-samples", op="aten.fractional_max_pool2d.default", kind="decompose",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_exact_samples(node, graph):
    """Window starts from the samples as PyTorch computes them (floor((i+u)·α) − floor(u·α), last window at in−k),
    Gather of the kernel×kernel window elements, Reduce MAX. Exact for the same samples."""
    float_input(node)
    _fmp_static(node)
    assert node.arg("random_samples") is not None, "no random_samples input to compute the windows from"
    _indices_unused(node, graph)


@strategy("fmp/maxpool-approx", op="aten.fractional_max_pool2d.default", kind="approximate",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_maxpool_approx(node, graph):
    """A deterministic MaxPool with stride floor(in/out) and the kernel that reaches the same output size.
    Its error against the random windows must be measured over many seeds before the planner may pick it."""
    float_input(node)
    _fmp_static(node)
    _indices_unused(node, graph)
    meta = node.meta("self")
    for size, out in zip(meta.shape[-2:], node.arg("output_size")):
        assert out <= size, f"output size {out} exceeds the input size {size}"
