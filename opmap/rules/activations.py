"""Activations (relu, sigmoid, tanh, gelu, silu, hardswish, clamp/hardtanh, prelu...): IActivationLayer where TensorRT
has the function, exact decompositions otherwise."""


import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, strategy
from opmap.rules.common import cases, not_bool, promoted_float_input, t, trt_checks
from opmap.rules.emitting import broadcast_select, emit_activation, promoting


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


def _activation(id, ops, layers, fn, emit):
    ints = [(f, torch.arange(-3, 3, dtype=d).reshape(2, 3)) for f in INTEGER.get(id, ()) for d in (torch.int32, torch.int64)]
    if id in INTEGER:
        return strategy(id, op=ops, kind="direct", layers=layers, checks=trt_checks(not_bool), emit=emit,
                        examples=cases((fn, torch.randn(2, 3)), *[(f, torch.randn(2, 3)) for f in MORE.get(id, ())], *ints))
    return strategy(id, op=ops, kind="direct", layers=layers, checks=trt_checks(promoted_float_input), emit=promoting(emit),
                    examples=cases((fn, torch.randn(2, 3)), *[(f, torch.randn(2, 3)) for f in MORE.get(id, ())], *ints))


rule_activations = [_activation(*row) for row in ACTIVATIONS]


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


rule_silu = strategy(
    "act/silu", op="aten.silu.default", kind="decompose",
    layers="Activation SIGMOID then ElementWise PROD", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_silu),
    examples=cases((F.silu, torch.randn(2, 3))))

rule_hardswish = strategy(
    "act/hardswish", op="aten.hardswish.default", kind="decompose",
    layers="Activation HARD_SIGMOID then ElementWise PROD", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_hardswish),
    examples=cases((F.hardswish, torch.randn(2, 3))))

rule_gelu_erf = strategy(
    "act/gelu-erf", op="aten.gelu.default", kind="direct",
    layers="Activation GELU_ERF", checks=trt_checks(promoted_float_input, gelu_erf),
    emit=promoting(emit_activation("GELU_ERF")),
    examples=cases((F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)),
                   match="tanh form"))

rule_gelu_tanh = strategy(
    "act/gelu-tanh", op="aten.gelu.default", kind="direct",
    layers="Activation GELU_TANH", checks=trt_checks(promoted_float_input, gelu_tanh),
    emit=promoting(emit_activation("GELU_TANH")),
    examples=cases((lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), bad=(F.gelu, torch.randn(2, 3)),
                   match="erf form"))

rule_gelu_erf_formula = strategy(
    "act/gelu-erf-formula", op="aten.gelu.default", kind="decompose",
    layers="0.5·x·(1 + erf(x/√2)) from Unary ERF and ElementWise layers (exact)",
    checks=trt_checks(promoted_float_input, gelu_erf), emit=promoting(_emit_gelu_formula),
    examples=cases((F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)),
                   match="tanh form"))

rule_gelu_erf_as_tanh = strategy(
    "act/gelu-erf-as-tanh", op="aten.gelu.default", kind="approximate",
    layers="Activation GELU_TANH in place of the erf form (max abs error ~1e-3 near |x|≈2)",
    checks=trt_checks(promoted_float_input, gelu_erf), emit=promoting(emit_activation("GELU_TANH")),
    examples=cases((F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)),
                   match="tanh form"))


def _emit_clamp_any(ctx, node):
    """Bounds that are tensors (broadcast, promoted) or scalars: ElementWise MAX, then MIN (PyTorch's order)."""
    out = ctx.output_dtype()
    dtype = "int32" if out == "bool" else out  # MAX/MIN take numbers: bools as 0/1
    x = ctx.cast(ctx.input("self"), dtype)
    for name, op in (("min", "MAX"), ("max", "MIN")):
        if node.arg(name) is not None:
            x = ctx.elementwise(x, ctx.cast(ctx.operand(name, x), dtype), op)
    return ctx.cast(x, out)


rule_clamp_tensor = strategy(
    "act/clamp-tensor", op=["aten.clamp.Tensor", "aten.clip.Tensor", "aten.clip.default"], kind="direct",
    layers="ElementWise MAX with the lower bound, MIN with the upper (tensors broadcast)", checks=trt_checks(),
    emit=_emit_clamp_any,
    examples=cases((lambda a, lo: a.clamp(lo, lo + 1), t(2, 3), t(3)))
    + [accept(lambda a, hi: torch.clip(a, max=hi), t(2, 3), t(2, 1)), accept(lambda a: torch.clip(a, -0.5, 0.5), t(2, 3))])


def _emit_prelu_kernel(ctx, node):
    x = ctx.input("self")
    w = ctx.cast(ctx.input("weight"), ctx.dtype(x))
    positive = ctx.elementwise(x, ctx.const(0.0, ctx.dtype(x)), "GREATER")
    return broadcast_select(ctx, positive, x, ctx.elementwise(x, w, "PROD"))


rule_prelu_kernel = strategy(
    "act/prelu-kernel", op="aten._prelu_kernel.default", kind="decompose",
    layers="Select(x > 0, x, weight * x) with the weight broadcast", checks=trt_checks(promoted_float_input),
    emit=promoting(_emit_prelu_kernel),
    examples=cases((lambda a, w: torch.ops.aten._prelu_kernel.default(a, w), t(2, 3, 4), t(3, 1))))
