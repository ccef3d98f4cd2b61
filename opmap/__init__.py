"""opmap: map PyTorch (ATen) graphs onto TensorRT, one judged and audited decision per node."""

__version__ = "0.1.0"
