"""opmap: map PyTorch (ATen) graphs onto TensorRT, one judged and audited decision per node.

The Python API (README, "Python API")::

    import opmap
    plan = opmap.plan(model, (x,))            # an nn.Module with example inputs, an ExportedProgram or a model file
    engine = opmap.build(model, (x,)); engine.save("model.engine")
    report = opmap.verify(engine)

The API for rule authors (README, "Writing rules" and "Writing rules that build")::

    from opmap import strategy, fixture, parametrize, skip, accept, reject, EmitContext

``import opmap`` stays light: the API's modules (torch, TensorRT, the catalog) load on first use.
"""

from opmap.version import __version__  # noqa: E402

from opmap.planning.strategy import Outcome, accept, fixture, parametrize, reject, skip, strategy  # noqa: E402
from opmap.errors import BuildError, CaptureError, CatalogError, OpmapError, RuleDefinitionError  # noqa: E402

# Public names loaded on first access (module -> names), so that importing opmap imports neither torch nor TensorRT.
_LAZY = {
    "opmap.api": ("plan", "build", "verify", "compare", "Plan", "NodeChoice", "Engine", "Binding", "Report", "PointReport"),
    "opmap.building.builder": ("EmitContext",),
}

__all__ = [
    "__version__",
    # the Python API
    "plan", "build", "verify", "compare", "Plan", "NodeChoice", "Engine", "Binding", "Report", "PointReport",
    # errors: one hierarchy; ``exit_code`` is what the CLI exits with
    "OpmapError", "CaptureError", "CatalogError", "RuleDefinitionError", "BuildError",
    # rule authors
    "strategy", "fixture", "parametrize", "skip", "accept", "reject", "Outcome", "EmitContext",
]


def __getattr__(name: str):
    for module, names in _LAZY.items():
        if name in names:
            import importlib

            value = getattr(importlib.import_module(module), name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'opmap' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
