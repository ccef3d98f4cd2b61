"""Activations: IActivationLayer where TensorRT has the function, exact decompositions otherwise."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, emit_activation, float_input, not_bool

ns = globals()


def gelu_erf(node, **_):
    approx = node.arg("approximate", "none")
    assert approx == "none", f"gelu(approximate={approx!r}) is the tanh form, not the erf form"


def gelu_tanh(node, **_):
    approx = node.arg("approximate", "none")
    assert approx == "tanh", f"gelu(approximate={approx!r}) is the erf form; the tanh layer would change results"


def _emit_relu(ctx, node):
    x = ctx.input("self")
    if ctx.dtype(x) in ("float32", "float16", "bfloat16"):
        return ctx.activation(x, "RELU")
    return ctx.elementwise(x, ctx.const(0, ctx.dtype(x), shape=[1] * ctx.rank(x)), "MAX")  # an integer relu


def _emit_clamp(ctx, node):
    x = ctx.cast(ctx.input("self"), ctx.output_dtype())  # an integer input with float bounds computes in float
    lo = node.arg("min", node.arg("min_val"))
    hi = node.arg("max", node.arg("max_val"))
    if node.op == "aten.hardtanh.default":
        lo, hi = node.arg("min_val", -1.0), node.arg("max_val", 1.0)
    if lo is not None:
        x = ctx.elementwise(x, ctx.const(lo, ctx.dtype(x)), "MAX")
    if hi is not None:
        x = ctx.elementwise(x, ctx.const(hi, ctx.dtype(x)), "MIN")
    return x


def _emit_softplus(ctx, node):
    """beta·x above the threshold, log(1 + exp(beta·x)) / beta below: Activation SOFTPLUS then Select."""
    x = ctx.input("self")
    beta, threshold = float(node.arg("beta", 1.0)), float(node.arg("threshold", 20.0))
    soft = ctx.activation(x, "SOFTPLUS", 1.0 / beta, beta)
    scaled = ctx.elementwise(x, ctx.const(beta, ctx.dtype(x)), "PROD")
    above = ctx.elementwise(scaled, ctx.const(threshold, ctx.dtype(x)), "GREATER")
    return ctx.out(ctx.net.add_select(*ctx.broadcast(above, x, soft)), "threshold")


ACTIVATIONS = [
    ("act/relu", ["aten.relu.default", "aten.relu_.default"], "Activation RELU (ElementWise MAX with 0 on integers)", torch.relu,
     _emit_relu),
    ("act/sigmoid", "aten.sigmoid.default", "Activation SIGMOID", torch.sigmoid, emit_activation("SIGMOID")),
    ("act/tanh", "aten.tanh.default", "Activation TANH", torch.tanh, emit_activation("TANH")),
    ("act/leaky-relu", "aten.leaky_relu.default", "Activation LEAKY_RELU (alpha = negative_slope)", lambda a: F.leaky_relu(a, 0.1),
     emit_activation("LEAKY_RELU", alpha=lambda n: float(n.arg("negative_slope", 0.01)))),
    ("act/elu", "aten.elu.default", "Activation ELU", F.elu, emit_activation("ELU", alpha=lambda n: float(n.arg("alpha", 1.0)))),
    ("act/softplus", "aten.softplus.default", "Activation SOFTPLUS (beta folded in) and a Select above the threshold", F.softplus,
     _emit_softplus),
    ("act/hardsigmoid", "aten.hardsigmoid.default", "Activation HARD_SIGMOID (alpha 1/6, beta 1/2)", F.hardsigmoid,
     emit_activation("HARD_SIGMOID", alpha=lambda n: 1 / 6, beta=lambda n: 0.5)),
    ("act/clamp", ["aten.clamp.default", "aten.hardtanh.default", "aten.clamp_min.default", "aten.clamp_max.default"],
     "ElementWise MAX and MIN with the bounds", lambda a: a.clamp(-0.5, 0.5), _emit_clamp),
]
MORE = {"act/clamp": [lambda a: torch.clamp_min(a, 0.1), lambda a: torch.clamp_max(a, -0.2), F.hardtanh]}
INTEGER = {"act/relu": [torch.relu], "act/clamp": [lambda a: a.clamp(-1, 2), lambda a: a.clamp(0.5, 2.5)]}  # int in, int or float out
for id, ops, layers, fn, emit in ACTIVATIONS:
    ints = [(f, torch.arange(-3, 3, dtype=d).reshape(2, 3)) for f in INTEGER.get(id, ()) for d in (torch.int32, torch.int64)]
    define(ns, id, ops, "direct", layers=layers, example=(fn, torch.randn(2, 3)),
           examples=[(f, torch.randn(2, 3)) for f in MORE.get(id, ())] + ints,
           checks=[not_bool] if id in INTEGER else [float_input], emit=emit)


def _emit_silu(ctx, node):
    x = ctx.input("self")
    return ctx.elementwise(x, ctx.activation(x, "SIGMOID"), "PROD")


def _emit_hardswish(ctx, node):
    x = ctx.input("self")
    return ctx.elementwise(x, ctx.activation(x, "HARD_SIGMOID", 1 / 6, 0.5), "PROD")


def _emit_gelu_formula(ctx, node):
    x = ctx.input("self")
    dt = ctx.dtype(x)
    inner = ctx.unary(ctx.elementwise(x, ctx.const(0.7071067811865476, dt), "PROD"), "ERF")
    return ctx.elementwise(ctx.elementwise(x, ctx.const(0.5, dt), "PROD"), ctx.elementwise(inner, ctx.const(1.0, dt), "SUM"), "PROD")

define(ns, "act/silu", "aten.silu.default", "decompose", layers="Activation SIGMOID then ElementWise PROD",
       example=(F.silu, torch.randn(2, 3)), checks=[float_input], emit=_emit_silu)
define(ns, "act/hardswish", "aten.hardswish.default", "decompose", layers="Activation HARD_SIGMOID then ElementWise PROD",
       example=(F.hardswish, torch.randn(2, 3)), checks=[float_input], emit=_emit_hardswish)
define(ns, "act/gelu-erf", "aten.gelu.default", "direct", layers="Activation GELU_ERF",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf], emit=emit_activation("GELU_ERF"))
define(ns, "act/gelu-tanh", "aten.gelu.default", "direct", layers="Activation GELU_TANH",
       example=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), bad=(F.gelu, torch.randn(2, 3)), match="erf form",
       checks=[float_input, gelu_tanh], emit=emit_activation("GELU_TANH"))
define(ns, "act/gelu-erf-formula", "aten.gelu.default", "decompose",
       layers="0.5·x·(1 + erf(x/√2)) from Unary ERF and ElementWise layers (exact)",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf], emit=_emit_gelu_formula)
define(ns, "act/gelu-erf-as-tanh", "aten.gelu.default", "approximate",
       layers="Activation GELU_TANH in place of the erf form (max abs error ~1e-3 near |x|≈2)",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf], emit=emit_activation("GELU_TANH"))
