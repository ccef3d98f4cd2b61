"""A user rule for the custom op ``mylib::soft_clip``: judged, then emitted as layers TensorRT has.

TensorRT cannot know the op (a plugin would be the other way, and TensorRT-RTX has no plugin layers), but its maths
is three layers: ``limit * tanh(x / limit)``. Add it with ``opmap rules add examples/custom_op/rule_soft_clip.py``."""

import sys
from pathlib import Path

import torch

from opmap import accept, reject, strategy

# The op must be registered wherever this rule is loaded (its examples call it, and a .pt2 that calls it cannot be
# loaded without it). A rule file is code by design: it imports the op's module, which lives beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from soft_clip_op import soft_clip  # noqa: E402


def _call(limit):
    return lambda x: soft_clip(x, limit)


@strategy("mine/soft-clip", op="mylib.soft_clip.default", kind="decompose",
          examples=[accept(_call(2.0), torch.randn(4, 16)),
                    accept(_call(0.5), torch.randn(2, 3, 8, dtype=torch.float16)),
                    reject(_call(0.0), torch.randn(4, 16), match="limit must be positive"),
                    reject(_call(1.0), torch.randn(4, 16, dtype=torch.float64), match="float64")])
def rule_soft_clip(node):
    """mylib::soft_clip as Elementwise DIV, Activation TANH, Elementwise PROD: exact."""
    limit = node.arg("limit")
    assert limit > 0, "limit must be positive (soft_clip divides by it)"
    dtype = node.meta("x").dtype
    assert dtype in ("float32", "float16", "bfloat16"), f"TensorRT has no {dtype} arithmetic for tanh"


@rule_soft_clip.emit
def emit_soft_clip(ctx, node):
    x = ctx.input("x")                                        # the argument by its schema name, as an ITensor
    limit = ctx.const(node.arg("limit"), ctx.dtype(x))        # a 0-d constant in x's dtype; elementwise broadcasts
    inner = ctx.elementwise(x, limit, "DIV")
    return ctx.elementwise(ctx.activation(inner, "TANH"), limit, "PROD")
