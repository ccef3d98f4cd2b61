"""Activations: IActivationLayer where TensorRT has the function, exact decompositions otherwise."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, float_input

ns = globals()


def gelu_erf(node, **_):
    approx = node.arg("approximate", "none")
    assert approx == "none", f"gelu(approximate={approx!r}) is the tanh form, not the erf form"


def gelu_tanh(node, **_):
    approx = node.arg("approximate", "none")
    assert approx == "tanh", f"gelu(approximate={approx!r}) is the erf form; the tanh layer would change results"


ACTIVATIONS = [
    ("act/relu", ["aten.relu.default", "aten.relu_.default"], "Activation RELU", torch.relu),
    ("act/sigmoid", "aten.sigmoid.default", "Activation SIGMOID", torch.sigmoid),
    ("act/tanh", "aten.tanh.default", "Activation TANH", torch.tanh),
    ("act/leaky-relu", "aten.leaky_relu.default", "Activation LEAKY_RELU (alpha = negative_slope)", lambda a: F.leaky_relu(a, 0.1)),
    ("act/elu", "aten.elu.default", "Activation ELU", F.elu),
    ("act/softplus", "aten.softplus.default", "Activation SOFTPLUS (beta and threshold folded in)", F.softplus),
    ("act/hardsigmoid", "aten.hardsigmoid.default", "Activation HARD_SIGMOID (alpha 1/6, beta 1/2)", F.hardsigmoid),
    ("act/clamp", ["aten.clamp.default", "aten.hardtanh.default", "aten.clamp_min.default", "aten.clamp_max.default"],
     "Activation CLIP, or ElementWise MAX/MIN for one-sided clamps", lambda a: a.clamp(-0.5, 0.5)),
]
for id, ops, layers, fn in ACTIVATIONS:
    define(ns, id, ops, "direct", layers=layers, example=(fn, torch.randn(2, 3)), checks=[float_input])

define(ns, "act/silu", "aten.silu.default", "decompose", layers="Activation SIGMOID then ElementWise PROD",
       example=(F.silu, torch.randn(2, 3)), checks=[float_input])
define(ns, "act/hardswish", "aten.hardswish.default", "decompose", layers="Activation HARD_SIGMOID then ElementWise PROD",
       example=(F.hardswish, torch.randn(2, 3)), checks=[float_input])
define(ns, "act/gelu-erf", "aten.gelu.default", "direct", layers="Activation GELU_ERF",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf])
define(ns, "act/gelu-tanh", "aten.gelu.default", "direct", layers="Activation GELU_TANH",
       example=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), bad=(F.gelu, torch.randn(2, 3)), match="erf form",
       checks=[float_input, gelu_tanh])
define(ns, "act/gelu-erf-formula", "aten.gelu.default", "decompose",
       layers="0.5·x·(1 + erf(x/√2)) from Unary ERF and ElementWise layers (exact)",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf])
define(ns, "act/gelu-erf-as-tanh", "aten.gelu.default", "approximate",
       layers="Activation GELU_TANH in place of the erf form (max abs error ~1e-3 near |x|≈2)",
       example=(F.gelu, torch.randn(2, 3)), bad=(lambda a: F.gelu(a, approximate="tanh"), torch.randn(2, 3)), match="tanh form",
       checks=[float_input, gelu_erf])
