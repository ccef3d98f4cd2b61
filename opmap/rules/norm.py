"""Normalization: INormalizationLayer (layer, group, instance norm), Scale for inference batch norm."""

import torch
import torch.nn.functional as F

from opmap.rules.common import define, float_input, static_arg, t

ns = globals()


def inference_batch_norm(node, **_):
    training = node.arg("training", False)
    assert not training, "batch_norm in training mode uses batch statistics; export the model with model.eval()"


def normalized_shape_static(node, **_):
    shape = node.arg("normalized_shape") or []
    assert all(isinstance(d, int) for d in shape), f"normalized_shape {shape} is not static"


define(ns, "norm/layer-norm", ["aten.layer_norm.default", "aten.native_layer_norm.default"], "direct",
       layers="Normalization over the trailing axes, weight and bias as constants",
       example=(lambda a, w, b: F.layer_norm(a, (4,), w, b), t(2, 3, 4), t(4), t(4)),
       checks=[float_input, normalized_shape_static])
define(ns, "norm/layer-norm-decomposed", ["aten.layer_norm.default", "aten.native_layer_norm.default"], "decompose",
       layers="Reduce AVG, SUB, PROD, Reduce AVG, SUM eps, Unary SQRT, DIV, scale and shift (exact)",
       example=(lambda a: F.layer_norm(a, (4,)), t(2, 3, 4)), checks=[float_input, normalized_shape_static])
define(ns, "norm/rms-norm", ["aten.rms_norm.default"], "decompose",
       layers="PROD, Reduce AVG, SUM eps, Unary SQRT, DIV, PROD weight", example=(lambda a: F.rms_norm(a, (4,)), t(2, 3, 4)),
       checks=[float_input])
define(ns, "norm/group-norm", ["aten.group_norm.default", "aten.native_group_norm.default"], "direct",
       layers="Normalization with num_groups", example=(lambda a: F.group_norm(a, 2), t(1, 4, 3, 3)),
       checks=[float_input, static_arg("weight", "bias")])
define(ns, "norm/batch-norm", ["aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
                               "aten.native_batch_norm.default"], "decompose",
       layers="inference batch norm folded into one per-channel Scale (shift, scale) from the running statistics",
       example=(lambda a, m, v: F.batch_norm(a, m, v), t(1, 3, 4, 4), t(3), t(3).abs() + 1),
       bad=(lambda a, m, v: F.batch_norm(a, m, v, training=True), t(2, 3, 4, 4), t(3), t(3).abs() + 1), match="training mode",
       checks=[float_input, inference_batch_norm])
