"""``max_pool3d_with_indices`` where only the pooled values are read: PoolingNd MAX, as ``pool/max`` maps the 3-D
pooling without indices. The indices (flat positions of each window's maximum) are a training aid (max_unpool);
the rule refuses when the graph reads them."""

import torch
import torch.nn.functional as F

from opmap.engine.rules import accept, reject, strategy
from opmap.rules.common import float_input, t, trt_types
from opmap.rules.conv import _emit_pool, indices_unused, no_ceil_mode_with_dilation


def _emit_values(ctx, node):
    return [_emit_pool(ctx, node), None]


@strategy("pool/max3d-values", op="aten.max_pool3d_with_indices.default", kind="direct",
          examples=[accept(lambda a: F.max_pool3d(a, 2, return_indices=True)[0], t(1, 2, 4, 4, 4)),
                    accept(lambda a: F.max_pool3d(a, (3, 2, 2), stride=(2, 1, 2), padding=1, return_indices=True)[0], t(2, 2, 5, 4, 6)),
                    accept(lambda a: F.max_pool3d(a, 2, ceil_mode=True, return_indices=True)[0], t(1, 1, 5, 5, 3)),
                    reject(lambda a: F.max_pool3d(a, 2, return_indices=True)[1], t(1, 2, 4, 4, 4), match="indices"),
                    reject(lambda a: F.max_pool3d(a, 2, dilation=2, return_indices=True)[0], t(1, 2, 6, 6, 6), match="dilation")])
def rule_max_pool3d_values(node, graph):
    """PoolingNd MAX over the three spatial dims; the indices output must be unused."""
    trt_types(node)
    float_input(node)
    no_ceil_mode_with_dilation(node)
    indices_unused(node=node, graph=graph)


rule_max_pool3d_values.emit(_emit_values)
