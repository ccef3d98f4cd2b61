"""opmap: map PyTorch (ATen) graphs onto TensorRT, one judged and audited decision per node.

The public API for rule authors is re-exported here::

    from opmap import strategy, fixture, parametrize, skip, accept, reject
"""

__version__ = "0.1.0"

from opmap.engine.rules import Outcome, accept, fixture, parametrize, reject, skip, strategy  # noqa: E402

__all__ = ["__version__", "strategy", "fixture", "parametrize", "skip", "accept", "reject", "Outcome"]
