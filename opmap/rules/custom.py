"""Custom ops (``torch.library``): what a user must provide for an op TensorRT cannot know.

A custom op can only run inside a TensorRT engine as a plugin layer. The ``custom/plugin`` strategy names what is
missing: plugin layers on the backend, and an IPluginV3 library registered for the op
(``opmap.plugins.register_plugin("ns::op", "libmyop.so")``). The other way out is the user's own rule with a
``decompose`` strategy for the op, expressed in layers TensorRT has (see the README's "Writing rules").
"""

import torch

from opmap.planning.strategy import accept, reject, skip, strategy
from opmap.plugins import plugin_available

NOT_CUSTOM = ("aten.", "prims.", "operator.", "builtins.", "torch.sym", "higher_order.", "_operator.")

_OP = None


def _example_op():
    """A torch.library op defined on first use, for this rule's own examples."""
    global _OP
    if _OP is None:
        @torch.library.custom_op("opmap_examples::scale", mutates_args=())
        def scale(x: torch.Tensor) -> torch.Tensor:
            return x * 3

        @scale.register_fake
        def _(x):
            return torch.empty_like(x)

        _OP = scale
    return _OP


def custom_call(x):
    return _example_op()(x) + 1


@strategy("custom/plugin", op="*", kind="plugin",
          examples=[reject(custom_call, torch.randn(2, 3), backend="tensorrt_rtx", match="cannot add plugin layers"),
                    reject(custom_call, torch.randn(2, 3), backend="tensorrt", match="register_plugin")],
          no_accept="opmap ships no plugin library; a custom op applies once its IPluginV3 library is registered")
def rule_custom_plugin(node, backend):
    """A custom op as a plugin layer: needs plugin layers on the backend and a registered IPluginV3 library for it."""
    if node.op.startswith(NOT_CUSTOM):
        skip(f"{node.op} is not a custom op")
    name = node.op.rsplit(".", 1)[0].replace(".", "::", 1)
    assert backend.plugins is not False, (
        f"{backend.name} cannot add plugin layers; map {node.op} with your own rule (a decompose strategy in layers "
        f"TensorRT has), or build for full TensorRT with a plugin"
    )
    assert plugin_available(name), (
        f"no IPluginV3 library is registered for {name}: build one and call "
        f"opmap.plugins.register_plugin({name!r}, 'lib{name.split('::')[-1]}.so'), or add a rule that decomposes {node.op}"
    )
