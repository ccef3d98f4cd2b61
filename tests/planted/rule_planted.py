"""A planted wrong emitter (tests/test_locate.py): opmap_test::offset is x + bias, and this strategy adds the bias
twice. Its rule applies and it builds; only a comparison with PyTorch can tell."""

import sys
from pathlib import Path

import torch

from opmap import accept, strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planted_op import offset  # noqa: E402


@strategy("planted/offset-twice", op="opmap_test.offset.default", kind="direct",
          examples=[accept(lambda x: offset(x, 0.5), torch.randn(4, 8))])
def rule_offset_twice(node):
    """opmap_test::offset as Elementwise SUM with twice the bias: wrong on purpose."""
    assert node.meta("x").dtype == "float32", "float32 only"


@rule_offset_twice.emit
def emit_offset_twice(ctx, node):
    x = ctx.input("x")
    return ctx.elementwise(x, ctx.const(2 * node.arg("bias"), "float32"), "SUM")
